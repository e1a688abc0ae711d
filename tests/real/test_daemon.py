"""`watchers run` as a real process: heals while running, reloads on SIGHUP, stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import rows
from watchers.store.schema import create_board


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll a condition until it holds or the deadline passes (the daemon runs on its own clock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class Running:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    def lines(self) -> list[dict]:
        out = []
        for raw in self.log.read_text().splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
        return out

    def logged(self, event: str) -> bool:
        return any(line.get("event") == event for line in self.lines())


@pytest.fixture
def run_daemon(tmp_path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(*args: str, **env: str) -> Running:
        log = tmp_path / f"daemon-{len(started)}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHERS_")}
        full_env.update(
            {
                "WATCHERS_AUTO_HEAL__INTERVAL_SECONDS": "0.3",
                "WATCHERS_AUTO_HEAL__JITTER_SECONDS": "0",
                "WATCHERS_AUTO_HEAL__START_GRACE_SECONDS": "0",
                "WATCHERS_HTTP__LISTEN": "127.0.0.1:0",  # any free port: daemons never collide
                **env,
            }
        )
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "watchers", "run", *args], stderr=fh, stdout=fh, env=full_env
            )
        running = Running(proc, log)
        started.append(running)
        assert wait_for(lambda: running.logged("started") or proc.poll() is not None), (
            log.read_text()
        )
        return running

    yield start
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
        r.proc.wait()


def dead(dispatcher) -> str:
    task = dispatcher.create_task("dies", "alice")
    dispatcher.claim(task)
    dispatcher.start_worker(task)
    dispatcher.kill_worker(task)
    return task


def status(board: Path, task: str) -> str:
    return rows(board, "SELECT status FROM tasks WHERE id = ?", (task,))[0][0]


def test_the_daemon_heals_a_worker_that_dies_while_it_runs_and_stops_on_sigterm(
    board, dispatcher, run_daemon
):
    """Kill a worker under a running daemon: its task is ready again; SIGTERM exits 0."""
    live = dispatcher.create_task("lives", "alice")
    dispatcher.claim(live)
    dispatcher.start_worker(live)
    d = run_daemon("--board", str(board))
    task = dead(dispatcher)
    assert wait_for(lambda: status(board, task) == "ready"), d.log.read_text()
    assert status(board, live) == "running"
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0
    [action] = [line for line in d.lines() if line.get("event") == "action"]
    assert (action["watcher"], action["task"], action["reason"]) == (
        "auto-heal",
        task,
        "worker_gone",
    )
    assert action["board"] == "default" and action["evidence"]["verdict"] == "gone"
    assert d.logged("stopped")


def test_sigint_stops_the_daemon_too(board, run_daemon):
    """Ctrl-C is a clean stop."""
    d = run_daemon("--board", str(board))
    d.proc.send_signal(signal.SIGINT)
    assert d.proc.wait(timeout=10) == 0


def test_sighup_reloads_and_an_invalid_config_keeps_the_old_one(
    tmp_path, board, dispatcher, run_daemon
):
    """A broken config on SIGHUP is logged and refused; the daemon keeps healing."""
    cfg = tmp_path / "w.toml"
    cfg.write_text("[auto_heal]\nmax_resets = 3\n")
    d = run_daemon("--board", str(board), "--config", str(cfg))
    cfg.write_text("[auto_heal]\nmax_resets = -1\n")
    d.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: d.logged("reload refused; keeping the running configuration")), (
        d.log.read_text()
    )
    task = dead(dispatcher)
    assert wait_for(lambda: status(board, task) == "ready"), d.log.read_text()
    cfg.write_text("[auto_heal]\nmax_resets = 4\n")
    d.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: d.logged("configuration reloaded")), d.log.read_text()
    assert d.proc.poll() is None
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0


def test_a_locked_board_does_not_stop_the_daemon_and_sigterm_still_exits_in_time(
    tmp_path, dispatcher, board, run_daemon
):
    """Ticks fail transiently while Hermes holds the lock; shutdown stays within 10 s."""
    locked = create_board(tmp_path / "locked" / "kanban.db")
    conn = sqlite3.connect(str(locked), isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    d = run_daemon(
        "--board", str(board), "--board", str(locked), WATCHERS_STORE__BUSY_TIMEOUT_SECONDS="1"
    )
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("PRAGMA user_version = 7")  # mid-write (an unchanged board is not read)
    try:
        assert wait_for(
            lambda: any("locked" in str(line.get("error", "")) for line in d.lines())
        ), d.log.read_text()
        task = dead(dispatcher)  # the other board is still healed
        assert wait_for(lambda: status(board, task) == "ready"), d.log.read_text()
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 10
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_run_refuses_a_missing_named_board_with_66(tmp_path):
    """A board named on the command line must exist."""
    r = subprocess.run(
        [sys.executable, "-m", "watchers", "run", "--board", str(tmp_path / "x.db")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 66 and "does not exist" in r.stderr
