"""The change feed's timing, on a fake clock: a write is reported after a short window,
then at most once a second per board while writes continue."""

from __future__ import annotations

from pathlib import Path

from watchers.changes import FIRST_WINDOW_SECONDS, MIN_GAP_SECONDS, ChangeFeed


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def feed(*boards: Path) -> tuple[ChangeFeed, Clock, list[Path]]:
    clock, seen = Clock(), []
    f = ChangeFeed(seen.append, use_inotify=False, clock=clock)
    f.watch(boards)
    return f, clock, seen


def test_a_write_is_reported_after_the_window_and_once():
    a = Path("/nonexistent/a/kanban.db")
    f, clock, seen = feed(a)
    f.changed(a)
    f.changed(a)  # the same commit's next write
    f._step(False)
    assert seen == []
    clock.t += FIRST_WINDOW_SECONDS
    f._step(False)
    assert seen == [a]
    f._step(False)
    assert seen == [a]


def test_writes_that_go_on_are_reported_at_most_once_a_second_per_board():
    a, b = Path("/nonexistent/a/kanban.db"), Path("/nonexistent/b/kanban.db")
    f, clock, seen = feed(a, b)
    f.changed(a)
    clock.t += FIRST_WINDOW_SECONDS
    f._step(False)
    clock.t += 0.1
    f.changed(a)
    f.changed(b)  # another board is not held back by a's gap
    clock.t += FIRST_WINDOW_SECONDS
    f._step(False)
    assert seen == [a, b]
    clock.t = 1000.0 + FIRST_WINDOW_SECONDS + MIN_GAP_SECONDS - 0.01
    f._step(False)
    assert seen == [a, b]
    clock.t += 0.01
    f._step(False)
    assert seen == [a, b, a]


def test_a_board_no_longer_watched_is_not_reported():
    a = Path("/nonexistent/a/kanban.db")
    f, clock, seen = feed(a)
    f.changed(a)
    f.watch([])
    clock.t += 5
    f._step(False)
    f.changed(a)
    f._step(False)
    assert seen == []
