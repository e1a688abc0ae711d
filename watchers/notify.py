"""systemd's notify protocol (`Type=notify`), in the standard library.

Each message (`READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=…`) is one datagram on
the AF_UNIX socket named by `$NOTIFY_SOCKET` (a leading `@` names the abstract
namespace). Without `$NOTIFY_SOCKET` everything here is a no-op.

The watchdog pings every `$WATCHDOG_USEC/2` only while the daemon's health (the same
check as `/healthz`: the scheduler runs and every job succeeded recently) is ok, so a
hung tick stops the pings and systemd restarts the daemon; when the pings stop, a
`STATUS=` line says why.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from watchers.http import Health

log = structlog.get_logger("watchers.notify")

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
READY_POLL_SECONDS = 0.1  # how often READY=1 waits for the first round when there is no watchdog
STATUS_MAX_CHARS = 400


def socket_address(value: str) -> str | bytes | None:
    """The address to send to: a path, or (leading `@`) an abstract-namespace name."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # systemd only ever hands out these two forms (vsock is not ours)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (`$WATCHDOG_USEC/2`), or None when no watchdog is asked of us."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get(WATCHDOG_USEC_ENV, ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get(WATCHDOG_PID_ENV)
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (e.g. a parent)
    return usec / 2 / 1_000_000


def describe(health: Health) -> str:
    """One short line saying why the daemon is unhealthy."""
    body = health.body
    if body.get("reason"):
        return str(body["reason"])
    stale: list[dict[str, Any]] = body.get("stale", [])
    parts = [
        f"{s.get('watcher')} on {s.get('board')}: no successful tick for "
        f"{s.get('seconds_since')}s (limit {s.get('limit_seconds')}s)"
        for s in stale
    ]
    return ("stale: " + "; ".join(parts)) if parts else str(body.get("status", "unhealthy"))


class Notifier:
    """Sends notify messages; a no-op when `$NOTIFY_SOCKET` is unset."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = socket_address(env.get(NOTIFY_SOCKET_ENV, ""))
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, message: str) -> bool:
        """Send one message as one datagram. Never raises: the daemon outranks systemd."""
        if self.address is None:
            return False
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.setblocking(True)
                    self._sock.settimeout(1.0)
                self._sock.sendto(message.encode("utf-8", "replace"), self.address)
            except OSError as exc:
                log.warning("sd_notify failed", message=message.split("=", 1)[0], error=str(exc))
                return False
        return True

    def status(self, text: str) -> bool:
        line = " ".join(text.split())[:STATUS_MAX_CHARS]
        return self.send(f"STATUS={line}")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class SystemdNotify:
    """READY=1 once the first round ran, health-gated WATCHDOG=1, STOPPING=1 at shutdown.

    One daemon thread; `start()` after the scheduler started, `stopping()` when shutdown
    begins.
    """

    def __init__(
        self,
        health: Callable[[], Health],
        first_round: threading.Event,
        describe_ready: Callable[[], str] = lambda: "watching",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.notifier = Notifier(env)
        self.interval = watchdog_interval(env)
        self._health = health
        self._first_round = first_round
        self._describe_ready = describe_ready
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.notifier.enabled:
            return
        self.notifier.status("starting: waiting for the first round of ticks")
        self._thread = threading.Thread(target=self._loop, name="sd-notify", daemon=True)
        self._thread.start()

    def stopping(self) -> None:
        """STOPPING=1 (and stop pinging): shutdown has begun. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        if not self.notifier.enabled:
            return
        self.notifier.send("STOPPING=1")
        self.notifier.status("stopping: letting running ticks finish")
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.notifier.close()

    def _loop(self) -> None:
        ready = False
        healthy = True
        period = self.interval if self.interval is not None else READY_POLL_SECONDS
        while not self._stop.is_set():
            if not ready and self._first_round.is_set():
                ready = True
                self.notifier.send("READY=1")
                self.notifier.status(self._describe_ready())
            if self.interval is not None:
                try:
                    health = self._health()
                except Exception as exc:
                    health = Health(False, {"reason": f"health check failed: {exc}"})
                if health.ok:
                    self.notifier.send("WATCHDOG=1")
                    if not healthy:
                        healthy = True
                        log.info("healthy again; watchdog pings resumed")
                        self.notifier.status("healthy again; " + self._describe_ready())
                elif healthy:
                    healthy = False
                    why = describe(health)
                    log.error("unhealthy; watchdog pings stopped", reason=why)
                    self.notifier.status(f"unhealthy, watchdog pings stopped: {why}")
            elif ready:
                return  # READY=1 sent and no watchdog to feed: nothing left to do
            self._stop.wait(period)
