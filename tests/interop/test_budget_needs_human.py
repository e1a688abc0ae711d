"""Tasks that keep coming back (auto-heal resets, Hermes re-blocks) get a human-review card."""

from __future__ import annotations

import pytest
from hermes_cli import kanban_db as kb

from tests.interop.conftest import BudgetCli
from tests.interop.interop_harness import HermesBoard, WatchersCli
from tests.interop.test_budget_time import budget_card, summary
from tests.interop.test_crash_loops import crash_loop

AUTO_HEAL = {"reset_backoff_base_seconds": 0, "max_resets": 2}
"""Auto-heal resets as soon as Hermes gives up; two resets make a task need a person."""


def reset_twice(board: HermesBoard, watchers: WatchersCli) -> str:
    """An infrastructure crash loop that Hermes blocks and auto-heal resets, twice."""
    task_id = board.create("killed by the machine", body="- fetch\n- build\n")
    for _ in range(AUTO_HEAL["max_resets"]):
        crash_loop(board, {task_id: "sigkill"})
        records = watchers.once(board.path, **AUTO_HEAL)
        assert summary(records) == [(task_id, "reset", "infra_crash_loop", True)]
    assert board.task(task_id).status == "ready"
    assert len(board.events(task_id, "unblocked")) == AUTO_HEAL["max_resets"]
    return task_id


@pytest.mark.interop
@pytest.mark.parametrize(
    ("settings", "assignee"),
    [({}, "orchestrator"), ({"review_profile": "reviewer"}, "reviewer")],
    ids=["orchestrator", "review-profile"],
)
def test_a_task_reset_max_resets_times_needs_a_human(
    hermes_board: HermesBoard,
    watchers: WatchersCli,
    budget: BudgetCli,
    settings: dict[str, str],
    assignee: str,
) -> None:
    """One needs_human card for the review profile; the source waits for it; then nothing."""
    board, cli = hermes_board, budget(**settings)
    task_id = reset_twice(board, watchers)

    [record] = cli.once(board.path, **AUTO_HEAL)

    assert summary([record]) == [(task_id, "card", "needs_human", True)]
    evidence = record["evidence"]
    assert (evidence["resets"], evidence["max_resets"]) == (2, 2)
    assert "repeated_failure" in [o["reason"] for o in evidence["all"]]  # four SIGKILLs
    card = budget_card(board, task_id)
    assert card.assignee == assignee
    assert card.body is not None
    needs = next(line for line in card.body.splitlines() if line.startswith("- Needs: "))
    assert needs.startswith("- Needs: human review: ")
    assert "[1] fetch; [2] build" in needs
    [comment] = [c for c in board.comments(task_id) if card.id in c.body]
    assert f"for {assignee}: human review" in comment.body
    assert board.task(task_id).status == "todo"
    assert task_id not in board.dispatch()  # Hermes holds the source back
    state = board.state(task_id)

    assert cli.once(board.path, **AUTO_HEAL) == []
    assert watchers.once(board.path, **AUTO_HEAL) == []
    assert board.state(task_id) == state


@pytest.mark.interop
def test_a_task_hermes_sent_to_triage_for_re_blocking_needs_a_human(
    hermes_board: HermesBoard, budget: BudgetCli
) -> None:
    """Blocked, unblocked, blocked again by Hermes's API: its loop breaker's limit, one card."""
    board, cli = hermes_board, budget()
    task_id = board.create("needs a credential")
    for _ in range(kb.BLOCK_RECURRENCE_LIMIT):
        assert board.dispatch() == [task_id]
        with board.connect() as conn:
            assert kb.block_task(conn, task_id, reason="no API key")
            if board.task(task_id).status == "blocked":
                assert kb.unblock_task(conn, task_id)
    task = board.task(task_id)
    assert (task.status, task.block_recurrences) == ("triage", kb.BLOCK_RECURRENCE_LIMIT)

    [record] = cli.once(board.path)

    assert summary([record]) == [(task_id, "card", "needs_human", True)]
    evidence = record["evidence"]
    assert (evidence["block_recurrences"], evidence["limit"]) == (2, 2)
    card = budget_card(board, task_id)
    assert card.assignee == "orchestrator"
    assert card.body is not None
    assert "- Needs: human review: " in card.body
    assert board.task(task_id).status == "triage"
    state = board.state(task_id)

    assert cli.once(board.path) == []
    assert board.state(task_id) == state
