"""The reflex's own logic, with a fake exit source (the real one: tests/real/test_reflex.py)."""

from __future__ import annotations

import queue
from pathlib import Path

from watchers.reflex import IDLE_SECONDS, RETRY_SECONDS, Reflex

BOUND = 10.0  # a failure timeout only


class FakeExits:
    """Hands out the scopes a test puts in, one batch per call."""

    def __init__(self) -> None:
        self.batches: queue.Queue[set[str]] = queue.Queue()
        self.waits: queue.Queue[float] = queue.Queue()  # every timeout asked for
        self.interrupted = False

    def exited_scopes(self, timeout: float) -> set[str]:
        self.waits.put(timeout)
        try:
            return self.batches.get(timeout=timeout)
        except queue.Empty:
            return set()

    def interrupt(self) -> None:
        self.interrupted = True
        self.batches.put(set())


def test_exits_on_a_board_wake_its_auto_heal_once_whoever_watched_them():
    """auto-heal's and distress's watches of one board: one wake for that board."""
    exits, woken = FakeExits(), queue.Queue()
    reflex = Reflex(exits, lambda board: woken.put(board) or True, coalesce=0.2)
    exits.batches.put({"auto-heal:/boards/a.db", "distress:/boards/a.db"})
    exits.batches.put({"auto-heal:/boards/b.db"})  # inside the window: judged together
    reflex.start()
    try:
        first = {woken.get(timeout=BOUND), woken.get(timeout=BOUND)}
        reflex.pass_started(Path("/boards/a.db"), float("inf"))
        reflex.pass_started(Path("/boards/b.db"), float("inf"))
    finally:
        reflex.stop()
    assert first == {Path("/boards/a.db"), Path("/boards/b.db")}
    assert reflex.wakes == 2


def test_a_wake_is_repeated_until_a_pass_starts_after_it():
    """The job was busy when woken: the reflex wakes it again until a pass began."""
    exits, woken = FakeExits(), queue.Queue()
    reflex = Reflex(exits, lambda board: woken.put(board) or True, coalesce=0.0)
    exits.batches.put({"auto-heal:/boards/a.db"})
    reflex.start()
    try:
        assert woken.get(timeout=BOUND) == Path("/boards/a.db")
        assert woken.get(timeout=BOUND) == Path("/boards/a.db")  # nobody said a pass started
        reflex.pass_started(Path("/boards/a.db"), float("inf"))
    finally:
        reflex.stop()


def test_a_board_without_a_job_is_dropped():
    """A wake that finds no job (a reload removed the board) is not repeated."""
    exits, calls = FakeExits(), queue.Queue()
    reflex = Reflex(exits, lambda board: calls.put(board) and False, coalesce=0.0)
    exits.batches.put({"auto-heal:/gone.db", "status"})  # a scope with no board is ignored
    reflex.start()
    try:
        assert calls.get(timeout=BOUND) == Path("/gone.db")
    finally:
        reflex.stop()
    assert calls.empty() and reflex.wakes == 0


def test_with_no_wake_unanswered_the_reflex_sleeps_until_an_exit_or_its_stop():
    """No periodic wake-ups on an idle daemon: the thread waits IDLE_SECONDS, not the
    retry period, and `stop` interrupts the wait instead of waiting it out."""
    exits, woken = FakeExits(), queue.Queue()
    reflex = Reflex(exits, lambda board: woken.put(board) or True, coalesce=0.0)
    reflex.start()
    try:
        assert exits.waits.get(timeout=BOUND) == IDLE_SECONDS
        exits.batches.put({"auto-heal:/boards/a.db"})
        assert woken.get(timeout=BOUND) == Path("/boards/a.db")
        asked = [exits.waits.get(timeout=BOUND) for _ in range(2)]
        assert RETRY_SECONDS in asked  # a wake unanswered: retried at the retry period
        reflex.pass_started(Path("/boards/a.db"), float("inf"))
    finally:
        reflex.stop()
    assert exits.interrupted and reflex._thread is None
