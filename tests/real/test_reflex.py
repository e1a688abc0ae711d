"""A worker's exit wakes auto-heal at once: real `watchers run`, real workers, intervals
long enough that only the reflex (or a deadline) can explain a heal."""

from __future__ import annotations

import signal

from tests.conftest import rows
from tests.real.test_daemon import run_daemon, status, wait_for  # noqa: F401 (fixture)

NEVER = "600"  # seconds: no periodic pass happens during a test


def live(dispatcher, title: str = "works") -> str:
    task = dispatcher.create_task(title, "alice")
    dispatcher.claim(task)
    dispatcher.start_worker(task)
    return task


def auto_heal_only(run_daemon, board, **env: str):
    """`watchers run` on `board`: auto-heal alone, its interval 600 s."""
    return run_daemon(
        "--board",
        str(board),
        WATCHERS_AUTO_HEAL__INTERVAL_SECONDS=NEVER,
        WATCHERS_DISTRESS__ENABLED="false",
        WATCHERS_BUDGET__ENABLED="false",
        WATCHERS_DISPATCHER__ENABLED="false",
        **env,
    )


def test_a_death_wakes_auto_heal_long_before_its_interval(board, dispatcher, run_daemon):
    """Interval 600 s: the worker is verified by the first pass, killed, and healed within
    seconds (the bound below only fails the test; it is not a latency target)."""
    task = live(dispatcher)
    d = auto_heal_only(run_daemon, board)
    assert wait_for(lambda: _verified(d), 20), d.log.read_text()

    dispatcher.kill_worker(task)

    assert wait_for(lambda: status(board, task) == "ready", 20), d.log.read_text()
    assert wait_for(lambda: d.logged("action"), 20)  # committed first, then logged
    [reap] = [line for line in d.lines() if line.get("event") == "action"]
    assert (reap["task"], reap["action"]) == (task, "reap")
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0


def test_deaths_that_arrive_together_are_judged_together_and_trip_the_guard(
    board, dispatcher, run_daemon
):
    """Four of four workers killed at once: one pass sees all of them, and the guard holds
    every reap exactly as a periodic tick would."""
    tasks = [live(dispatcher, f"w{i}") for i in range(4)]
    d = auto_heal_only(run_daemon, board, WATCHERS_AUTO_HEAL__GUARD_MIN_TASKS="3")
    assert wait_for(lambda: _verified(d), 20), d.log.read_text()

    for task in tasks:
        dispatcher.kill_worker(task)

    assert wait_for(lambda: d.logged("guard tripped: holding actions"), 20), d.log.read_text()
    [trip] = [line for line in d.lines() if line.get("event") == "guard tripped: holding actions"]
    assert trip["held"] == 4
    assert {status(board, t) for t in tasks} == {"running"}
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0


def test_a_death_inside_the_start_grace_is_healed_when_the_grace_ends(
    board, dispatcher, run_daemon
):
    """Grace 3 s, interval 600 s: the worker dies at once; the grace's end is a deadline."""
    task = live(dispatcher)
    dispatcher.kill_worker(task)
    d = auto_heal_only(run_daemon, board, WATCHERS_AUTO_HEAL__START_GRACE_SECONDS="3")

    assert wait_for(lambda: status(board, task) == "ready", 30), d.log.read_text()
    assert rows(board, "SELECT consecutive_failures FROM tasks WHERE id = ?", (task,)) == [(1,)]
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0


def _verified(d) -> bool:
    """Every job finished its first pass: the live workers are verified and watched."""
    return d.logged("first round done")
