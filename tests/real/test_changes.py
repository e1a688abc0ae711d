"""An unchanged board is not scanned; a write to it is noticed: real `watchers run`, real
board, the counts read from the daemon's own metrics (`ok` passes read the board,
`unchanged` ones only compared its version)."""

from __future__ import annotations

import os
import shutil
import signal
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import rows
from tests.real.test_daemon import run_daemon, status, wait_for  # noqa: F401 (fixture)
from tests.real.test_reflex import NEVER, auto_heal_only, live
from watchers.changes import ChangeFeed

WATCHERS = ("auto-heal", "distress", "budget", "dispatcher")
QUICK = "0.2"  # seconds between passes: many passes in little time


def ticks(url: str) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == "watchers_ticks_total":
                out[(s.labels["watcher"], s.labels["outcome"])] = s.value
    return out


def metrics_url(d) -> str:
    [url] = [line["url"] for line in d.lines() if line.get("event") == "http listening"]
    return str(url)


def test_an_unchanged_board_is_not_scanned_and_a_write_is_noticed(board, dispatcher, run_daemon):
    """Passes every 0.2 s: once the board settles, passes only compare its version (the
    full-pass count stands still over dozens of passes); a write to the board makes
    every watcher read it again."""
    d = run_daemon(
        "--board",
        str(board),
        WATCHERS_AUTO_HEAL__INTERVAL_SECONDS=QUICK,
        WATCHERS_DISTRESS__INTERVAL_SECONDS=QUICK,
        WATCHERS_DISTRESS__JITTER_SECONDS="0",
        WATCHERS_BUDGET__INTERVAL_SECONDS=QUICK,
        WATCHERS_BUDGET__JITTER_SECONDS="0",
        WATCHERS_DISPATCHER__INTERVAL_SECONDS=QUICK,
        WATCHERS_DISPATCHER__JITTER_SECONDS="0",
    )
    url = metrics_url(d)

    def unchanged_at_least(n: float, base: dict[tuple[str, str], float]) -> bool:
        t = ticks(url)
        return all(t[(w, "unchanged")] >= base.get((w, "unchanged"), 0) + n for w in WATCHERS)

    assert wait_for(lambda: unchanged_at_least(3, {}), 30), d.log.read_text()
    settled = ticks(url)
    assert wait_for(lambda: unchanged_at_least(10, settled), 30)
    later = ticks(url)
    for w in WATCHERS:
        assert later[(w, "ok")] == settled[(w, "ok")], (w, settled, later)  # no scans
        assert later[(w, "error")] == 0

    dispatcher.create_task("new work", "alice")  # a write, as Hermes makes them

    assert wait_for(lambda: all(ticks(url)[(w, "ok")] > later[(w, "ok")] for w in WATCHERS), 30)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0


def test_a_worker_claimed_after_the_first_pass_is_watched_and_its_death_healed(
    board, dispatcher, run_daemon
):
    """Interval 600 s: a claim made after the first pass is noticed through the change
    feed (a pass reads it and watches the worker), so its death is healed in seconds."""
    d = auto_heal_only(run_daemon, board)
    assert wait_for(lambda: d.logged("first round done"), 20), d.log.read_text()
    url = metrics_url(d)
    before = ticks(url)[("auto-heal", "ok")]

    task = live(dispatcher, "claimed later")
    assert wait_for(lambda: ticks(url)[("auto-heal", "ok")] > before, 20)  # the claim was read
    dispatcher.kill_worker(task)

    assert wait_for(lambda: status(board, task) == "ready", 20), d.log.read_text()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0


def _feed(board, **kw):
    seen: list = []
    feed = ChangeFeed(seen.append, **kw)
    feed.start([board])
    return feed, seen


def test_the_change_feed_reports_a_hermes_write_and_a_replaced_board(board, dispatcher):
    """inotify: a commit is reported; so is a board file moved into place."""
    feed, seen = _feed(board)
    try:
        assert feed.polled == []  # watched, not polled
        dispatcher.create_task("a write", "alice")
        assert wait_for(lambda: board in seen, 10)
        count = len(seen)
        copy = board.with_name("copy.db")
        shutil.copy(board, copy)
        os.replace(copy, board)
        assert wait_for(lambda: len(seen) > count, 10)
    finally:
        feed.stop()


def test_without_inotify_boards_are_polled_and_a_write_still_reported(board, dispatcher):
    feed, seen = _feed(board, use_inotify=False)
    try:
        assert feed.polled == [board]
        dispatcher.create_task("a write", "alice")
        assert wait_for(lambda: board in seen, 10)
    finally:
        feed.stop()


def reasons(d) -> list[str]:
    """The reasons of the daemon's logged actions, in order."""
    return [str(line.get("reason")) for line in d.lines() if line.get("event") == "action"]


def cards_for(board, task: str) -> list[str]:
    return [
        title
        for (title,) in rows(board, "SELECT title FROM tasks WHERE title LIKE '[BLOCKED] %'")
        if task in title
    ]


def test_a_time_budgets_lines_are_deadlines_the_budget_pass_wakes_for(
    board, dispatcher, run_daemon
):
    """Budget interval 600 s: the first pass finds a 20 s budget untouched; the 80 % line
    and the budget's end wake the watcher on time (a warning, then a card)."""
    task = dispatcher.create_task("long", "alice", body="Time budget: 20s")
    dispatcher.claim(task)
    dispatcher.start_worker(task)
    d = run_daemon(
        "--board",
        str(board),
        WATCHERS_AUTO_HEAL__ENABLED="false",
        WATCHERS_DISTRESS__ENABLED="false",
        WATCHERS_DISPATCHER__ENABLED="false",
        WATCHERS_BUDGET__INTERVAL_SECONDS=NEVER,
    )
    assert wait_for(lambda: d.logged("first round done"), 20), d.log.read_text()
    assert cards_for(board, task) == []

    assert wait_for(lambda: cards_for(board, task) != [], 60), d.log.read_text()
    # committed first, then logged: wait for the log line too
    assert wait_for(lambda: reasons(d) == ["time_budget_warning", "time_budget"], 20), reasons(d)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0


def test_a_silent_worker_becomes_stuck_on_time_without_a_periodic_pass(
    board, dispatcher, run_daemon
):
    """Distress interval 600 s, stuck after 8 s: the silence's end is a deadline."""
    task = live(dispatcher, "silent")
    d = run_daemon(
        "--board",
        str(board),
        WATCHERS_AUTO_HEAL__ENABLED="false",
        WATCHERS_BUDGET__ENABLED="false",
        WATCHERS_DISPATCHER__ENABLED="false",
        WATCHERS_DISTRESS__INTERVAL_SECONDS=NEVER,
        WATCHERS_DISTRESS__STUCK_AFTER_SECONDS="8",
    )
    assert wait_for(lambda: d.logged("first round done"), 20), d.log.read_text()

    assert wait_for(lambda: cards_for(board, task) != [], 60), d.log.read_text()
    assert wait_for(lambda: reasons(d) == ["stuck"], 20), reasons(d)
    [action] = [line for line in d.lines() if line.get("event") == "action"]
    assert action["task"] == task
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0


def test_a_stall_is_told_on_time_without_a_periodic_pass(board, dispatcher, run_daemon):
    """Dispatcher interval 600 s, stall after 8 s: the first pass finds the task waiting
    too briefly; the wait's end is a deadline, so the stall is reported then, once."""
    waiting = dispatcher.create_task("nobody claims me", "alice")
    d = run_daemon(
        "--board",
        str(board),
        WATCHERS_AUTO_HEAL__ENABLED="false",
        WATCHERS_DISTRESS__ENABLED="false",
        WATCHERS_BUDGET__ENABLED="false",
        WATCHERS_DISPATCHER__INTERVAL_SECONDS=NEVER,
        WATCHERS_DISPATCHER__STALL_SECONDS="8",
    )
    assert wait_for(lambda: d.logged("first round done"), 20), d.log.read_text()
    assert not d.logged("dispatcher stalled"), d.log.read_text()  # waited too briefly then
    assert wait_for(lambda: d.logged("dispatcher stalled"), 30), d.log.read_text()
    [line] = [x for x in d.lines() if x.get("event") == "dispatcher stalled"]
    assert (line["level"], line["board"], line["oldest_ready_task"]) == (
        "error",
        "default",
        waiting,
    )
    assert 8 < line["oldest_ready_age_seconds"] <= 12
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0
