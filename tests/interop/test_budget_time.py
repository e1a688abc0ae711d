"""The budget watcher warns about, then cards, a live worker running past its time budget."""

from __future__ import annotations

from typing import Any

import pytest
from hermes_cli import kanban_db as kb

from tests.interop.conftest import BudgetCli
from tests.interop.interop_harness import HermesBoard
from tests.interop.test_distress_cards import assert_contract_body, card_title

BLOCKER = "iteration_budget"


def age_attempt(board: HermesBoard, task_id: str, seconds: int) -> None:
    """Move the open run's start `seconds` back. Time cannot be faked across processes, so
    the attempt is aged in the board instead (the budget watcher reads the run's started_at)."""
    run_id = board.task(task_id).current_run_id
    assert run_id is not None
    with board.connect() as conn, kb.write_txn(conn):
        cur = conn.execute(
            "UPDATE task_runs SET started_at = started_at - ? WHERE id = ? AND ended_at IS NULL",
            (seconds, run_id),
        )
        assert cur.rowcount == 1


def heartbeat(board: HermesBoard, task_id: str, times: int) -> None:
    """Hermes's heartbeat_worker, `times` times, as a live worker calls it."""
    with board.connect() as conn:
        for _ in range(times):
            assert kb.heartbeat_worker(conn, task_id)


def summary(records: list[dict[str, Any]]) -> list[tuple[str, str, str, bool]]:
    """(task, action, reason, applied) of each record of a `watchers once --json`."""
    return [(r["task_id"], r["action"], r["reason"], r["applied"]) for r in records]


def budget_card(board: HermesBoard, task_id: str) -> kb.Task:
    """The one `[BLOCKED] <id> iteration_budget` card, checked against the contract."""
    [card] = board.tasks_titled(card_title(task_id, BLOCKER))
    assert (card.status, card.created_by) == ("ready", "watchers")
    assert card.priority > 0
    assert card.body is not None
    assert_contract_body(card.body)
    assert f"- Blocked task: {task_id} — " in card.body
    assert f"- Blocker type: {BLOCKER}\n" in card.body
    assert board.parents(task_id) == [card.id]
    return card


@pytest.mark.interop
def test_a_long_running_live_worker_is_warned_once_then_carded(
    hermes_board: HermesBoard, budget: BudgetCli
) -> None:
    """At 85 % one warning, at 100 % one card as its parent; the worker runs on, untouched."""
    board, cli = hermes_board, budget()
    task_id = board.create("port the parser", body="- the lexer\n- the grammar\n- Time budget: 10m")
    assert board.dispatch() == [task_id]
    before = board.task(task_id)
    age_attempt(board, task_id, 510)

    [warn] = cli.once(board.path)

    assert summary([warn]) == [(task_id, "warn", "time_budget_warning", True)]
    evidence = warn["evidence"]
    assert (evidence["budget"], evidence["limit"], evidence["source"]) == ("time", 600, "body")
    assert 510 <= evidence["consumed"] < 600
    assert evidence["run_id"] == before.current_run_id
    [event] = board.events(task_id, "budget_warning")
    assert event.run_id == before.current_run_id
    assert event.payload is not None
    assert (event.payload["by"], event.payload["budget"]) == ("watchers", "time")
    [comment] = board.comments(task_id)
    assert comment.author == "watchers"
    assert "time budget" in comment.body
    state = board.state(task_id)

    assert cli.once(board.path) == []
    assert board.state(task_id) == state

    age_attempt(board, task_id, 100)
    [card_record] = cli.once(board.path)

    assert summary([card_record]) == [(task_id, "card", "time_budget", True)]
    card = budget_card(board, task_id)
    assert card.assignee == "orchestrator"
    assert card.body is not None
    for line in ("- budget: time", "- source: body", "- limit: 600.0", "- attempts: 1"):
        assert f"\n{line}\n" in card.body
    assert card_record["evidence"]["consumed"] >= 600
    assert "[1] the lexer; [2] the grammar\n" in card.body  # the split skeleton, no budget line
    after = board.task(task_id)
    assert (after.status, after.worker_pid, after.current_run_id, after.claim_lock) == (
        "running",
        before.worker_pid,
        before.current_run_id,
        before.claim_lock,
    )
    assert board.worker(task_id).poll() is None  # never signalled
    assert board.record_crashes() == []
    assert len(board.events(task_id, "budget_warning")) == 1
    state, card_state = board.state(task_id), board.state(card.id)

    assert cli.once(board.path) == []
    assert (board.state(task_id), board.state(card.id)) == (state, card_state)
    assert len(board.tasks_titled(card_title(task_id, BLOCKER))) == 1


@pytest.mark.interop
def test_the_time_budget_comes_from_the_profile_before_the_global_default(
    hermes_board: HermesBoard, budget: BudgetCli
) -> None:
    """No Hermes column, no body line: `[profiles.coder]` decides, then `[budget]`."""
    board = hermes_board
    cli = budget(
        "[budget]\ntime_budget_seconds = 5000\n\n[profiles.coder]\ntime_budget_seconds = 1000\n"
    )
    task_id = board.create("no budget line")
    assert board.dispatch() == [task_id]
    age_attempt(board, task_id, 850)

    [warn] = cli.once(board.path)

    assert summary([warn]) == [(task_id, "warn", "time_budget_warning", True)]
    assert (warn["evidence"]["limit"], warn["evidence"]["source"]) == (1000, "profile:coder")
    assert board.worker(task_id).poll() is None
