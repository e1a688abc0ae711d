"""The store's reads for the dispatcher check, on real board files: the newest claim,
ready rows (a malformed one reported, never fatal), each task's newest event."""

from __future__ import annotations

import sqlite3
import time

from watchers.dispatcher.observe import observe
from watchers.hermes.dispatching import DispatchRules
from watchers.store.board import BoardStore


def store(board) -> BoardStore:
    return BoardStore.open(board, busy_timeout=0.2)


def test_the_newest_claim_is_the_newest_run_that_came_from_a_claim(board, dispatcher):
    """An instant run (a ready task completed by hand, no claim) is not a claim."""
    now = int(time.time())
    task = dispatcher.create_task("claimed", "alice", now=now - 900)
    dispatcher.claim(task, now=now - 600)
    other = dispatcher.create_task("done by hand", "alice", now=now - 100)
    dispatcher.conn.execute(
        "INSERT INTO task_runs (task_id, status, started_at, ended_at, outcome) "
        "VALUES (?, 'done', ?, ?, 'completed')",
        (other, now - 50, now - 50),
    )
    s = store(board)
    try:
        assert s.last_claim_at() == now - 600
    finally:
        s.close()


def test_a_board_without_runs_has_no_claim(board):
    """A new board: None, not 0."""
    s = store(board)
    try:
        assert s.last_claim_at() is None
    finally:
        s.close()


def test_a_malformed_ready_row_is_reported_and_the_rest_is_read(board, dispatcher):
    """A created_at that is no number skips that task, named; the others count."""
    now = int(time.time())
    good = dispatcher.create_task("fine", "alice", now=now - 700)
    bad = dispatcher.create_task("mangled", "alice", now=now - 800)
    dispatcher.conn.execute("UPDATE tasks SET created_at = 'yesterday' WHERE id = ?", (bad,))
    s = store(board)
    try:
        state, skipped = observe(s, DispatchRules(profiles=None))
    finally:
        s.close()
    assert [(r.task_id, r.table) for r in skipped] == [(bad, "tasks")]
    assert "created_at" in skipped[0].problem
    assert (state.ready, state.dispatchable, state.oldest_task) == (1, 1, good)


def test_a_ready_task_waits_since_its_newest_event(board, dispatcher):
    """Created an hour ago, put back 2 minutes ago (a crash, say): it has waited 2 minutes."""
    now = int(time.time())
    old = dispatcher.create_task("put back", "alice", now=now - 3600)
    fresh = dispatcher.create_task("new", "alice", now=now - 300)
    conn = sqlite3.connect(board)
    with conn:
        conn.execute(
            "INSERT INTO task_events (task_id, kind, payload, created_at) "
            "VALUES (?, 'crashed', NULL, ?)",
            (old, now - 120),
        )
    conn.close()
    s = store(board)
    try:
        assert s.newest_event_at([old, fresh]) == {old: now - 120, fresh: now - 300}
        state, _ = observe(s, DispatchRules(profiles=None))
    finally:
        s.close()
    assert (state.oldest_task, state.oldest_since) == (fresh, now - 300)


def test_the_checks_own_read_stops_once_a_stall_is_certain_and_status_reads_everything(
    board, dispatcher
):
    """150 ready tasks waiting for hours, no claim: the check reads the first chunk (the
    oldest created), finds the stall, stops; the count comes from the status index. A
    task put back recently is not the oldest wait; status and metrics read all 150."""
    from watchers.dispatcher.observe import SCAN_CHUNK

    now = int(time.time())
    tasks = [dispatcher.create_task(f"t{i}", "alice", now=now - 7200 + i) for i in range(150)]
    conn = sqlite3.connect(board)
    with conn:  # the oldest one was put back a minute ago: it has waited a minute only
        conn.execute(
            "INSERT INTO task_events (task_id, kind, payload, created_at) "
            "VALUES (?, 'crashed', NULL, ?)",
            (tasks[0], now - 60),
        )
    conn.close()
    rules = DispatchRules(profiles=None)
    s = store(board)
    try:
        quick, _ = observe(s, rules, claimed_after=now - 600)
        full, _ = observe(s, rules)
    finally:
        s.close()
    assert (quick.complete, quick.ready, quick.dispatchable) == (False, 150, SCAN_CHUNK)
    assert (quick.oldest_task, quick.oldest_since) == (tasks[1], now - 7200 + 1)
    assert (full.complete, full.ready, full.dispatchable) == (True, 150, 150)
    assert (full.oldest_task, full.oldest_since) == (quick.oldest_task, quick.oldest_since)
