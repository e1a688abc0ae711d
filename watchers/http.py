"""The metrics and health endpoints: one small, read-only HTTP server.

`/metrics` (Prometheus text format), `/healthz` (200 while the scheduler runs and every
job succeeded recently, else 503 with a JSON body naming what is stale) and `/readyz`
(200 once the first round of ticks ran). GET and HEAD only. Optional basic auth guards
`/metrics` (the probes stay open: they reveal watcher and board names only); optional
TLS. A wsgiref server with a thread per request runs in a daemon thread; stopping it
is bounded.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app

from watchers.errors import ConfigError
from watchers.settings import HttpSettings

log = structlog.get_logger("watchers.http")

REQUEST_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 2.0
REALM = "kanban-watchers"


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    body: dict[str, Any]


def _respond(
    start_response: StartResponse,
    status: str,
    body: bytes,
    content_type: str = "application/json",
    extra: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    start_response(
        status,
        [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra],
    )
    return [body]


def _json(start_response: StartResponse, status: str, data: dict[str, Any]) -> list[bytes]:
    return _respond(start_response, status, json.dumps(data).encode() + b"\n")


def _authorized(environ: WSGIEnvironment, user: str, password: str) -> bool:
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = f"{user}:{password}".encode()
    return hmac.compare_digest(given, expected)


def make_app(
    registry: CollectorRegistry,
    health: Callable[[], Health],
    ready: Callable[[], bool],
    auth: tuple[str, str] | None = None,
) -> WSGIApplication:
    """The WSGI dispatcher: /metrics, /healthz, /readyz; nothing else, nothing writable."""
    metrics = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "") or "/"
        if method not in ("GET", "HEAD"):
            return _respond(
                start_response,
                "405 Method Not Allowed",
                b'{"error": "read-only: GET or HEAD only"}\n',
                extra=[("Allow", "GET, HEAD")],
            )
        result: Iterable[bytes]
        if path == "/metrics":
            if auth is not None and not _authorized(environ, *auth):
                result = _respond(
                    start_response,
                    "401 Unauthorized",
                    b'{"error": "authentication required"}\n',
                    extra=[("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')],
                )
            else:
                result = metrics(environ, start_response)
        elif path == "/healthz":
            h = health()
            result = _json(start_response, "200 OK" if h.ok else "503 Service Unavailable", h.body)
        elif path == "/readyz":
            if ready():
                result = _json(start_response, "200 OK", {"status": "ready"})
            else:
                result = _json(
                    start_response,
                    "503 Service Unavailable",
                    {"status": "starting", "reason": "the first round of ticks has not run yet"},
                )
        else:
            result = _json(start_response, "404 Not Found", {"error": "not found"})
        if method == "HEAD":
            for _ in result:  # headers (with the length) are sent; the body is not
                pass
            return []
        return result

    return app


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_SECONDS  # a silent client cannot hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:
        # the request line and status only: never headers (Authorization)
        log.debug("http request", client=self.client_address[0], request=format % args)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            request.settimeout(REQUEST_TIMEOUT_SECONDS)
            try:
                # the handshake runs here, in the request's own thread, not in accept()
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.debug("tls handshake failed", client=client_address[0], error=str(exc))
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("http request failed", client=client_address[0], exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


def tls_context(settings: HttpSettings) -> ssl.SSLContext | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"http.tls_cert_file/http.tls_key_file: cannot be loaded: {exc}"
        ) from None
    return ctx


class HttpServer:
    """The endpoints on `settings.listen`, served from a daemon thread."""

    def __init__(self, settings: HttpSettings, app: WSGIApplication) -> None:
        self._settings = settings
        self._app = app
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (the real port when `listen` asked for port 0)."""
        if self._server is None:
            return self._settings.address
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def scheme(self) -> str:
        return "https" if self._settings.tls_cert_file is not None else "http"

    def start(self) -> None:
        tls = tls_context(self._settings)
        host, port = self._settings.address
        server_class = _Server6 if ":" in host else _Server
        server = make_server(host, port, self._app, server_class, _Handler)
        assert isinstance(server, _Server)
        server.tls = tls
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        self._thread.start()
        bound_host, bound_port = self.address
        log.info(
            "http listening",
            url=f"{self.scheme}://{bound_host}:{bound_port}/metrics",
            tls=tls is not None,
            basic_auth=self._settings.basic_auth_user is not None,
        )

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        stopper = threading.Thread(target=server.shutdown, name="http-stop", daemon=True)
        stopper.start()
        stopper.join(timeout)
        thread.join(timeout)
        server.server_close()
        self._server = self._thread = None
        log.info("http stopped")


def basic_auth(settings: HttpSettings) -> tuple[str, str] | None:
    """(user, password) when both are configured; the password only ever lives here."""
    if settings.basic_auth_user is None or settings.basic_auth_password is None:
        if settings.basic_auth_password is not None:
            log.warning("http: a metrics password is given but no basic_auth_user; auth is off")
        return None
    return settings.basic_auth_user, settings.basic_auth_password.get_secret_value()
