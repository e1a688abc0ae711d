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
