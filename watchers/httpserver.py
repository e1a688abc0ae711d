"""The HTTP server under the endpoints: bounded in threads, time and memory.

One event loop (one thread) holds every connection while its request head arrives; only
a complete head is handed to a small, fixed pool of threads that runs the WSGI app. A
connection that trickles or idles costs a socket and a small buffer, never a thread;
each head must arrive whole within HEAD_TIMEOUT_SECONDS and fit HEAD_LIMIT_BYTES; at
most MAX_CONNECTIONS are held (the oldest still-incomplete one makes room for a new
one), so `/healthz` keeps answering beside a thousand idle or trickling connections.
One request per connection (`Connection: close`); GET and HEAD carry no body to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ssl
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote
from wsgiref.types import WSGIApplication

import structlog

from watchers.errors import ConfigError
from watchers.settings import HttpSettings

log = structlog.get_logger("watchers.http")

WORKERS = 4
"""Threads that run the app (scrapes and probes are quick; they queue beyond this)."""
MAX_CONNECTIONS = 1100
HEAD_TIMEOUT_SECONDS = 5.0
HEAD_LIMIT_BYTES = 16 * 1024
WRITE_TIMEOUT_SECONDS = 10.0
BACKLOG = 1024
STOP_TIMEOUT_SECONDS = 2.0

_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}


class HttpServer:
    """The endpoints on `settings.listen`, served from a daemon thread."""

    def __init__(self, settings: HttpSettings, app: WSGIApplication) -> None:
        self._settings = settings
        self._app = app
        self._tls: ssl.SSLContext | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None
        self._bound: tuple[str, int] | None = None
        self._started = threading.Event()
        self._failed: BaseException | None = None
        self._pending: dict[asyncio.StreamWriter, None] = {}  # heads still arriving, oldest first
        self._open = 0

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (the real port when `listen` asked for port 0)."""
        return self._bound or self._settings.address

    @property
    def scheme(self) -> str:
        return "https" if self._settings.tls_cert_file is not None else "http"

    def start(self) -> None:
        """Bind and serve; raises OSError (e.g. the port is taken) in the caller's thread,
        ConfigError when the TLS files cannot be loaded."""
        self._tls = tls_context(self._settings)
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._failed is not None:
            self._thread.join(STOP_TIMEOUT_SECONDS)
            self._thread = None
            raise self._failed
        host, port = self.address
        log.info(
            "http listening",
            url=f"{self.scheme}://{host}:{port}/metrics",
            tls=self._tls is not None,
            basic_auth=self._settings.basic_auth_user is not None,
        )

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is None or stop is None or thread is None:
            return

        def finish() -> None:
            if not stop.done():
                stop.set_result(None)

        with contextlib.suppress(RuntimeError):  # the loop may have ended already
            loop.call_soon_threadsafe(finish)
        thread.join(timeout)
        self._thread = self._loop = self._stop = None
        log.info("http stopped")

    # -- the loop ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # only reached when binding failed
            if not self._started.is_set():
                self._failed = exc
                self._started.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet)
        self._loop, self._stop = loop, loop.create_future()
        host, port = self._settings.address
        pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="http-app")
        try:
            server = await asyncio.start_server(
                self._serve,
                host,
                port,
                ssl=self._tls,
                ssl_handshake_timeout=HEAD_TIMEOUT_SECONDS if self._tls else None,
                backlog=BACKLOG,
                limit=HEAD_LIMIT_BYTES,
                reuse_address=True,
            )
        except BaseException:
            pool.shutdown(wait=False)
            raise
        self._pool = pool
        sockname = server.sockets[0].getsockname()
        self._bound = (str(sockname[0]), int(sockname[1]))
        self._started.set()
        try:
            await self._stop
        finally:
            server.close()
            for writer in list(self._pending):
                writer.transport.abort()
            pool.shutdown(wait=False, cancel_futures=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        self._pending[writer] = None
        if self._open > MAX_CONNECTIONS and self._pending:
            oldest = next(iter(self._pending))  # make room: the longest-waiting head goes
            self._pending.pop(oldest, None)
            oldest.transport.abort()
        try:
            try:
                head = await asyncio.wait_for(
                    reader.readuntil(b"\r\n\r\n"), timeout=HEAD_TIMEOUT_SECONDS
                )
            except (asyncio.LimitOverrunError, ValueError):
                await self._reply(writer, 431)
                return
            except TimeoutError:
                await self._reply(writer, 408)
                return
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                return
            finally:
                self._pending.pop(writer, None)
            environ = self._environ(head, writer)
            if environ is None:
                await self._reply(writer, 400)
                return
            loop = asyncio.get_running_loop()
            status, headers, body = await loop.run_in_executor(self._pool, self._call, environ)
            await self._write(writer, status, headers, body)
            log.debug(
                "http request",
                client=environ["REMOTE_ADDR"],
                request=f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}",
                status=status,
            )
        except (ConnectionError, OSError, TimeoutError, asyncio.CancelledError):
            pass
        finally:
            self._open -= 1
            self._pending.pop(writer, None)
            writer.close()

    def _environ(self, head: bytes, writer: asyncio.StreamWriter) -> dict[str, Any] | None:
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
        except (UnicodeDecodeError, ValueError):
            return None
        if not version.startswith("HTTP/1."):
            return None
        path, _, query = target.partition("?")
        peer = writer.get_extra_info("peername") or ("", 0)
        host, port = self.address
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": host,
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": version,
            "REMOTE_ADDR": str(peer[0]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": self.scheme,
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                return None
            key = name.strip().upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = value.strip()
            else:
                environ[f"HTTP_{key}"] = value.strip()
        return environ

    def _call(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        """Run the app in a pool thread: (status, headers, body)."""
        started: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            started[:] = [status, headers]
            return lambda data: None

        result: Iterable[bytes] = self._app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = started
        return status, list(headers), body

    async def _write(
        self,
        writer: asyncio.StreamWriter,
        status: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers), "Connection: close"]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await asyncio.wait_for(writer.drain(), timeout=WRITE_TIMEOUT_SECONDS)

    async def _reply(self, writer: asyncio.StreamWriter, code: int) -> None:
        body = b'{"error": "' + _REASONS[code].lower().encode() + b'"}\n'
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await self._write(writer, f"{code} {_REASONS[code]}", headers, body)


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


def _quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Failed handshakes and dropped clients are the clients' business: debug only."""
    log.debug("http connection error", error=str(context.get("exception") or context["message"]))
