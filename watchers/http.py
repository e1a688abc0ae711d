"""The metrics and health endpoints: one small, read-only HTTP server.

`/metrics` (Prometheus text format), `/healthz` (200 while the scheduler runs and every
job succeeded recently, else 503 with a JSON body naming what is stale) and `/readyz`
(200 once the first round of ticks ran). GET and HEAD only. Optional basic auth guards
`/metrics` (the probes stay open: they reveal watcher and board names only); optional
TLS. The server itself (bounded in threads, time and memory) is in `httpserver`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app

from watchers.httpserver import HttpServer, tls_context
from watchers.settings import HttpSettings

__all__ = ["Health", "HttpServer", "basic_auth", "make_app", "tls_context"]

log = structlog.get_logger("watchers.http")

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


def basic_auth(settings: HttpSettings) -> tuple[str, str] | None:
    """(user, password) when both are configured; the password only ever lives here."""
    if settings.basic_auth_user is None or settings.basic_auth_password is None:
        if settings.basic_auth_password is not None:
            log.warning("http: a metrics password is given but no basic_auth_user; auth is off")
        return None
    return settings.basic_auth_user, settings.basic_auth_password.get_secret_value()
