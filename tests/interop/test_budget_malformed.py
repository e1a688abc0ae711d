"""A budget line the watcher cannot read is reported once and ignored; the others apply."""

from __future__ import annotations

import pytest

from tests.interop.conftest import BudgetCli
from tests.interop.interop_harness import HermesBoard
from tests.interop.test_budget_time import age_attempt, budget_card, heartbeat, summary


@pytest.mark.interop
def test_a_malformed_budget_line_is_reported_once_and_ignored(
    hermes_board: HermesBoard, budget: BudgetCli
) -> None:
    """`Time budget: soon`: one event and comment; time falls to the global, iterations apply."""
    board, cli = hermes_board, budget(time_budget_seconds=1000)
    task_id = board.create("vague", body="Time budget: soon\nIteration budget: 2\n")

    [note] = cli.once(board.path)

    assert summary([note]) == [(task_id, "note", "malformed_budget", True)]
    [event] = board.events(task_id, "budget_malformed")
    assert event.payload is not None
    assert event.payload["by"] == "watchers"
    assert "'Time budget: soon'" in event.payload["line"]
    [comment] = board.comments(task_id)
    assert comment.author == "watchers"
    assert "Time budget: soon" in comment.body
    assert cli.once(board.path) == []

    assert board.dispatch() == [task_id]
    age_attempt(board, task_id, 850)
    [warn] = cli.once(board.path)
    assert summary([warn]) == [(task_id, "warn", "time_budget_warning", True)]
    assert (warn["evidence"]["limit"], warn["evidence"]["source"]) == (1000, "global")

    heartbeat(board, task_id, 2)
    [record] = cli.once(board.path)
    assert summary([record]) == [(task_id, "card", "iteration_budget", True)]
    assert (record["evidence"]["limit"], record["evidence"]["source"]) == (2, "body")
    budget_card(board, task_id)

    assert cli.once(board.path) == []
    assert len(board.events(task_id, "budget_malformed")) == 1
    assert [c.body.count("Time budget: soon") for c in board.comments(task_id)] == [1, 0, 0]
