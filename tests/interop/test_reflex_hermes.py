"""Hermes's own writes wake the daemon: a claim Hermes's dispatcher makes after the
daemon's first pass is read within seconds (auto-heal every 600 s), so when that worker
dies its task is healed at once. Real `watchers run`, real Hermes 0.19."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.interop.interop_harness import HermesBoard
from tests.real.test_changes import metrics_url, ticks
from tests.real.test_daemon import run_daemon, wait_for  # noqa: F401 (fixture)
from tests.real.test_reflex import auto_heal_only


def pidfds(pid: int) -> int:
    """The process's open pidfds (one per worker it watches)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd) == "anon_inode:[pidfd]"
    return count


@pytest.mark.interop
def test_a_claim_hermes_makes_later_is_noticed_and_its_dead_worker_healed(
    hermes_board: HermesBoard, run_daemon
) -> None:
    d = auto_heal_only(run_daemon, hermes_board.path)
    assert wait_for(lambda: d.logged("first round done"), 20), d.log.read_text()
    url = metrics_url(d)
    before = ticks(url)[("auto-heal", "ok")]
    assert pidfds(d.proc.pid) == 0

    task = hermes_board.create("dispatched later")
    assert hermes_board.dispatch() == [task]  # Hermes claims it and spawns its worker
    # a pass read the claim and watches the worker (its pidfd), long before any interval
    assert wait_for(lambda: pidfds(d.proc.pid) == 1, 20), d.log.read_text()
    assert ticks(url)[("auto-heal", "ok")] > before
    hermes_board.kill(task, reap=True)

    assert wait_for(lambda: hermes_board.task(task).status == "ready", 20), d.log.read_text()
    [run] = [r for r in hermes_board.runs(task) if r.outcome is not None]
    assert run.outcome == "crashed" and "reaped by watchers" in (run.error or "")
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0
