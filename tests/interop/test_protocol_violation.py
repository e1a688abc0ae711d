"""A worker that exits 0 without a terminal call: handled as Hermes handles it."""

from __future__ import annotations

import pytest
from hermes_cli import kanban_db as kb

pytestmark = pytest.mark.interop


def test_clean_exits_get_hermess_bounded_retry_and_hermes_counts_our_runs(hermes_board, watchers):
    """Two clean exits go back to ready uncounted; the third trips the breaker; Hermes's own
    streak logic reads the runs we closed."""
    task_id = hermes_board.create("answers but never completes")
    for attempt in (1, 2, 3):
        assert hermes_board.dispatch() == [task_id]
        hermes_board.let_exit(task_id)  # exit 0, left a zombie: Hermes's reaper has not seen it
        [action] = watchers.once(hermes_board.path)
        assert (action["task_id"], action["reason"], action["applied"]) == (
            task_id,
            "worker_zombie",
            True,
        )
        task = hermes_board.task(task_id)
        with hermes_board.connect() as conn:
            assert kb._protocol_violation_streak(conn, task_id) == attempt
        [*_, event] = hermes_board.events(task_id, "protocol_violation")
        assert event.payload["by"] == "watchers" and event.payload["protocol_violation"] is True
        if attempt < 3:
            assert (task.status, task.consecutive_failures) == ("ready", 0)
    assert (task.status, task.consecutive_failures) == ("blocked", 1)
    [gave_up] = hermes_board.events(task_id, "gave_up")
    assert gave_up.payload["protocol_violations"] == 3
    assert gave_up.payload["limit_source"] == "protocol_violation"
