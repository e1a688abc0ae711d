"""Failures Hermes records itself: one error three times, and a task over its attempt budget."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hermes_cli import kanban_db as kb

from tests.interop.conftest import BudgetCli
from tests.interop.interop_harness import (
    BLOCKING_WORKER,
    FAILING_WORKER,
    HermesBoard,
    WatchersCli,
)
from tests.interop.test_budget_time import BLOCKER, budget_card, summary
from tests.interop.test_distress_cards import card_title
from watchers.budget.fingerprint import fingerprint


def fail_once(board: HermesBoard, task_id: str) -> None:
    """Hermes dispatches the task, its worker exits 1, Hermes's crash pass records it."""
    assert board.dispatch() == [task_id]
    board.let_exit(task_id)
    assert board.record_crashes() == [task_id]


def three_identical_failures(board: HermesBoard, cli: WatchersCli, body: str = "") -> str:
    """A task whose worker exited 1 three times; max_retries 10 keeps Hermes's breaker off."""
    task_id = board.create("flaky build", max_retries=10, worker=FAILING_WORKER, body=body)
    fail_once(board, task_id)
    fail_once(board, task_id)
    assert cli.once(board.path) == []  # two is below repeat_threshold
    fail_once(board, task_id)
    assert board.task(task_id).status == "ready"
    return task_id


@pytest.mark.interop
def test_three_identical_failures_get_one_repeated_failure_card(
    hermes_board: HermesBoard, budget: BudgetCli
) -> None:
    """The card names the fingerprint of Hermes's error text and the count 3."""
    board, cli = hermes_board, budget()
    task_id = three_identical_failures(board, cli)
    errors = [r.error for r in board.runs(task_id)]
    assert all(e is not None and re.fullmatch(r"pid \d+ exited with code 1", e) for e in errors)
    assert len(set(errors)) == 3  # three pids, one fingerprint
    [expected] = {fingerprint(e or "") for e in errors}

    [record] = cli.once(board.path)

    assert summary([record]) == [(task_id, "card", "repeated_failure", True)]
    evidence = record["evidence"]
    assert (evidence["fingerprint"], evidence["count"], evidence["failures"]) == (expected, 3, 3)
    assert re.fullmatch(r"pid \d+ exited with code 1", evidence["error"])
    card = budget_card(board, task_id)
    assert card.assignee == "orchestrator"
    assert card.body is not None
    assert f"\n- fingerprint: {expected}\n- count: 3\n" in card.body
    assert "(repeated failure)" in card.body
    assert board.task(task_id).status == "todo"  # waits for the orchestrator
    state = board.state(task_id)

    assert cli.once(board.path) == []
    assert board.state(task_id) == state
    assert board.dispatch() == []


@pytest.mark.interop
def test_hermes_runs_the_card_and_promotes_the_source_back(
    hermes_home: Path, hermes_board: HermesBoard, budget: BudgetCli
) -> None:
    """The orchestrator claims and completes the card; Hermes re-promotes and re-runs the source."""
    board, cli = hermes_board, budget()
    task_id = three_identical_failures(board, cli)
    cli.once(board.path)
    [card] = board.tasks_titled(card_title(task_id, BLOCKER))
    (hermes_home / "profiles" / "orchestrator").mkdir()

    with board.connect() as conn:
        claimed = kb.claim_task(conn, card.id)
        assert claimed is not None
        assert (claimed.status, claimed.assignee) == ("running", "orchestrator")
        assert kb.complete_task(conn, card.id, summary="split into t_a and t_b")
    assert board.task(card.id).status == "done"
    assert board.task(task_id).status == "ready"
    assert board.events(task_id, "promoted")

    assert cli.once(board.path) == []  # the resolved card answered those failures
    board.scripts[task_id] = BLOCKING_WORKER
    assert board.dispatch() == [task_id]
    assert cli.once(board.path) == []
    assert len(board.tasks_titled(card_title(task_id, BLOCKER))) == 1


@pytest.mark.interop
def test_a_task_over_its_attempt_budget_gets_a_card(
    hermes_board: HermesBoard, budget: BudgetCli
) -> None:
    """`Attempt budget: 2` in the body, two failed attempts recorded by Hermes: one card."""
    board, cli = hermes_board, budget()
    task_id = board.create("migrate the schema", worker=FAILING_WORKER, body="Attempt budget: 2")
    fail_once(board, task_id)
    assert cli.once(board.path) == []
    fail_once(board, task_id)
    assert board.task(task_id).status == "blocked"  # Hermes's own breaker (2 failures)

    [record] = cli.once(board.path)

    assert summary([record]) == [(task_id, "card", "attempt_budget", True)]
    evidence = record["evidence"]
    assert (evidence["budget"], evidence["consumed"], evidence["limit"], evidence["source"]) == (
        "attempts",
        2,
        2,
        "body",
    )
    card = budget_card(board, task_id)
    assert card.assignee == "orchestrator"
    assert card.body is not None
    assert "- budget: attempts\n- consumed: 2\n- limit: 2.0\n- source: body\n" in card.body
    assert board.task(task_id).status == "blocked"
    state = board.state(task_id)

    assert cli.once(board.path) == []
    assert board.state(task_id) == state


@pytest.mark.interop
def test_a_resolved_card_does_not_mask_the_next_attempts_budget(
    hermes_board: HermesBoard, budget: BudgetCli
) -> None:
    """After the orchestrator answers a repeated-failure card, the new attempt is still
    measured: a warning at 80 % of its iteration budget, then a card (no faked time)."""
    board, cli = hermes_board, budget()
    task_id = three_identical_failures(board, cli, body="Iteration budget: 5")
    cli.once(board.path)
    [card] = board.tasks_titled(card_title(task_id, BLOCKER))
    with board.connect() as conn:
        assert kb.claim_task(conn, card.id) is not None
        assert kb.complete_task(conn, card.id, summary="fixed the environment")
    board.scripts[task_id] = BLOCKING_WORKER
    assert board.dispatch() == [task_id]
    with board.connect() as conn:
        for _ in range(4):
            assert kb.heartbeat_worker(conn, task_id)
    assert summary(cli.once(board.path)) == [(task_id, "warn", "iterations_budget_warning", True)]
    with board.connect() as conn:
        assert kb.heartbeat_worker(conn, task_id)
    assert summary(cli.once(board.path)) == [(task_id, "card", "iteration_budget", True)]
    assert cli.once(board.path) == []
