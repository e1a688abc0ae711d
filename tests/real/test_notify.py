"""systemd's notify protocol on real unix datagram sockets: READY=1 after the first round,
WATCHDOG=1 only while healthy (a hung tick stops the pings), STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from watchers.http import Health
from watchers.notify import Notifier, SystemdNotify, describe, socket_address, watchdog_interval
from watchers.store.schema import create_board

WATCHDOG_USEC = 400_000  # pings every 0.2 s


class NotifySocket:
    """The systemd side: a bound AF_UNIX datagram socket; every read is bounded."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.seen: list[str] = []

    def read(self, deadline: float) -> str | None:
        """The next message, or None once the (monotonic) deadline passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        message = data.decode()
        self.seen.append(message)
        return message

    def until(self, match: Callable[[str], bool], timeout: float) -> list[str]:
        """Messages up to and including the first that matches; fails at the deadline."""
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while (message := self.read(deadline)) is not None:
            got.append(message)
            if match(message):
                return got
        raise AssertionError(f"no matching message within {timeout}s; got {got!r}")

    def during(self, seconds: float) -> list[str]:
        """Everything that arrives within the window."""
        deadline = time.monotonic() + seconds
        got: list[str] = []
        while (message := self.read(deadline)) is not None:
            got.append(message)
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_path() -> Iterator[str]:
    # sun_path holds 108 bytes: pytest's tmp_path can be longer, so a short temp dir
    with tempfile.TemporaryDirectory(prefix="wn-") as d:
        yield os.path.join(d, "notify.sock")


# -- the module on its own --------------------------------------------------------------


def test_messages_go_to_a_path_socket_one_datagram_each(notify_path):
    server = NotifySocket(notify_path)
    try:
        n = Notifier({"NOTIFY_SOCKET": notify_path})
        assert n.enabled
        assert n.send("READY=1") and n.status("watching\n2 boards")
        deadline = time.monotonic() + 5
        assert [server.read(deadline), server.read(deadline)] == [
            "READY=1",
            "STATUS=watching 2 boards",
        ]
        n.close()
    finally:
        server.close()


def test_a_leading_at_sign_names_the_abstract_namespace():
    name = f"watchers-test-{os.getpid()}-{time.monotonic_ns()}"
    assert socket_address("@" + name) == b"\0" + name.encode()
    server = NotifySocket(b"\0" + name.encode())
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.send("WATCHDOG=1")
        assert server.read(time.monotonic() + 5) == "WATCHDOG=1"
        n.close()
    finally:
        server.close()


def test_without_notify_socket_everything_is_a_no_op():
    n = Notifier({})
    assert not n.enabled and not n.send("READY=1")
    sd = SystemdNotify(lambda: Health(True, {}), threading.Event(), env={})
    sd.start()
    sd.stopping()


def test_a_missing_socket_never_raises(notify_path):
    assert not Notifier({"NOTIFY_SOCKET": notify_path}).send("READY=1")


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_this_process():
    assert watchdog_interval({"WATCHDOG_USEC": "400000"}) == pytest.approx(0.2)
    pid = {"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(pid) == pytest.approx(0.2)
    assert watchdog_interval({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "x"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({}) is None


def test_describe_names_what_is_stale():
    stale = Health(
        False,
        {
            "status": "stale",
            "stale": [
                {"watcher": "auto-heal", "board": "b", "seconds_since": 9.1, "limit_seconds": 3}
            ],
        },
    )
    assert describe(stale) == "stale: auto-heal on b: no successful tick for 9.1s (limit 3s)"
    down = Health(False, {"status": "unhealthy", "reason": "the scheduler is not running"})
    assert describe(down) == "the scheduler is not running"


def test_pings_follow_health_in_process(notify_path):
    """READY=1 waits for the first round; pings stop (with a STATUS) while unhealthy."""
    server = NotifySocket(notify_path)
    healthy = threading.Event()
    healthy.set()
    first_round = threading.Event()
    sd = SystemdNotify(
        lambda: Health(True, {}) if healthy.is_set() else Health(False, {"reason": "hung"}),
        first_round,
        lambda: "watching 1 board(s)",
        env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": str(WATCHDOG_USEC)},
    )
    try:
        sd.start()
        before = server.until(lambda m: m == "WATCHDOG=1", 5)
        assert "READY=1" not in before and before[0].startswith("STATUS=starting")
        first_round.set()
        server.until(lambda m: m == "READY=1", 5)
        server.until(lambda m: m == "STATUS=watching 1 board(s)", 5)
        healthy.clear()
        server.until(lambda m: m == "STATUS=unhealthy, watchdog pings stopped: hung", 5)
        assert "WATCHDOG=1" not in server.during(1.0)  # five ping periods
        healthy.set()
        server.until(lambda m: m == "WATCHDOG=1", 5)
        sd.stopping()
        server.until(lambda m: m == "STOPPING=1", 5)
    finally:
        sd.stopping()
        server.close()


# -- `watchers run` under a real notify socket ---------------------------------------------


def test_the_daemon_is_ready_pings_while_healthy_stops_on_a_hung_tick_and_says_stopping(
    tmp_path, board, notify_path
):
    # under kanban/boards/<slug>/: its own slug, so its health is its own (not "default")
    locked = create_board(tmp_path / "kanban" / "boards" / "locked" / "kanban.db")
    holder = sqlite3.connect(str(locked), isolation_level=None)
    holder.execute("PRAGMA journal_mode=DELETE")  # rollback journal: EXCLUSIVE blocks readers
    server = NotifySocket(notify_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHERS_")}
    env.update(
        {
            "NOTIFY_SOCKET": notify_path,
            "WATCHDOG_USEC": str(WATCHDOG_USEC),
            "WATCHERS_AUTO_HEAL__INTERVAL_SECONDS": "0.3",
            "WATCHERS_AUTO_HEAL__JITTER_SECONDS": "0",
            "WATCHERS_AUTO_HEAL__START_GRACE_SECONDS": "0",
            "WATCHERS_DISTRESS__ENABLED": "false",
            "WATCHERS_BUDGET__ENABLED": "false",
            "WATCHERS_DISPATCHER__ENABLED": "false",
            # far beyond 3 intervals: a tick on the locked board hangs, it does not fail
            "WATCHERS_STORE__BUSY_TIMEOUT_SECONDS": "30",
            "WATCHERS_HTTP__LISTEN": "127.0.0.1:0",
        }
    )
    log = tmp_path / "daemon.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "watchers",
                "run",
                "--board",
                str(board),
                "--board",
                str(locked),
            ],
            stdout=fh,
            stderr=fh,
            env=env,
        )
    locked_now = False
    try:
        server.until(lambda m: m == "READY=1", 30)
        pings = 0
        deadline = time.monotonic() + 10
        while pings < 5 and (message := server.read(deadline)) is not None:
            pings += message == "WATCHDOG=1"
        assert pings == 5, (server.seen, log.read_text())

        holder.execute("BEGIN EXCLUSIVE")  # Hermes (say) holds the board: the next tick hangs
        holder.execute("PRAGMA user_version = 7")  # mid-write (an unchanged board is not read)
        locked_now = True
        why = server.until(lambda m: m.startswith("STATUS=unhealthy"), 15)[-1]
        assert "auto-heal on locked" in why and "stale" in why, why
        quiet = server.during(2.0)  # ten ping periods
        assert "WATCHDOG=1" not in quiet, quiet
        assert proc.poll() is None

        holder.execute("ROLLBACK")
        locked_now = False
        proc.send_signal(signal.SIGTERM)
        server.until(lambda m: m == "STOPPING=1", 10)
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        if locked_now:
            holder.execute("ROLLBACK")
        holder.close()
        server.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert '"unhealthy; watchdog pings stopped"' in log.read_text()
