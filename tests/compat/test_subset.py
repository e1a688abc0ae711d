"""The compatibility subset, on a board made by each Hermes release: reap, crash-loop
reset, reassignment, card, budget card, status, and the review lane where the release
has one. Hermes's own API reads every result back, and its dispatcher runs the work again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hermes_cli import kanban_db as kb

from tests.compat import newer_hermes
from tests.compat.conftest import RELEASE, CompatBoard
from tests.interop.conftest import BudgetCli, DistressCli
from tests.interop.interop_harness import (
    PROFILE,
    HermesBoard,
    WatchersCli,
    anthropic,
    provider_model,
    write_profile,
)
from tests.interop.test_budget_time import summary

RATE_LIMIT = "HTTP 429 Too Many Requests: rate limit exceeded, retry after 20s"
HAS_REVIEW_LANE = hasattr(kb, "claim_review_task")


def card_of(board: CompatBoard, task_id: str, blocker: str) -> kb.Task:
    """The one open `[BLOCKED] <id> <blocker>` card, as Hermes lists it."""
    with board.connect() as conn:
        cards = [
            t
            for t in kb.list_tasks(conn)
            if t.title == f"[BLOCKED] {task_id} {blocker}" and t.status != "archived"
        ]
    [card] = cards
    return card


def blocked_by_the_worker(board: HermesBoard, task_id: str, reason: str) -> None:
    """The worker reports the blocker itself, through Hermes's block_task."""
    with board.connect() as conn:
        assert kb.block_task(conn, task_id, reason=reason)
    assert board.task(task_id).status == "blocked"


@pytest.mark.interop
def test_a_dead_worker_is_reaped_and_hermes_runs_the_task_again(
    compat_board: CompatBoard, watchers: WatchersCli
) -> None:
    """Its attempt is closed as crashed, one failure counted; Hermes claims it once more."""
    board = compat_board
    task_id = board.create("dies once")
    assert board.dispatch() == [task_id]
    pid = board.kill(task_id, reap=True)

    records = watchers.once(board.path)

    assert summary(records) == [(task_id, "reap", "worker_gone", True)]
    task = board.task(task_id)
    assert (task.status, task.consecutive_failures, task.worker_pid) == ("ready", 1, None)
    assert task.current_run_id is None and task.claim_lock is None
    [run] = board.runs(task_id)
    assert (run.outcome, run.ended_at is not None) == ("crashed", True)
    assert run.error is not None and run.error.startswith(f"pid {pid} not alive")
    assert [e.kind for e in board.events(task_id, "crashed")] == ["crashed"]
    assert board.dispatch() == [task_id]


@pytest.mark.interop
def test_an_infrastructure_crash_loop_is_reset_and_hermes_runs_it_again(
    compat_board: CompatBoard, watchers: WatchersCli
) -> None:
    """A SIGKILLed worker at the task's retry limit is blocked; its reset puts it back."""
    board = compat_board
    task_id = board.create("killed by the machine", max_retries=1)
    assert board.dispatch() == [task_id]
    board.kill(task_id, reap=False)  # a zombie: its signal is still readable

    reaped = watchers.once(board.path)
    assert summary(reaped) == [(task_id, "reap", "worker_zombie", True)]
    assert board.task(task_id).status == "blocked"
    assert [e.kind for e in board.events(task_id, "gave_up")] == ["gave_up"]

    reset = watchers.once(board.path, reset_backoff_base_seconds=0)

    assert summary(reset) == [(task_id, "reset", "infra_crash_loop", True)]
    task = board.task(task_id)
    assert (task.status, task.consecutive_failures) == ("ready", 0)
    [unblocked] = board.events(task_id, "unblocked")
    assert unblocked.payload is not None and unblocked.payload["reset"] == 1
    board.close()  # the zombie is reaped before Hermes looks at the board again
    assert board.dispatch() == [task_id]


@pytest.mark.interop
def test_rate_limited_work_moves_to_a_profile_on_another_provider(
    compat_board: CompatBoard, hermes_home: Path, distress: DistressCli
) -> None:
    """A worker's 429 on anthropic moves the task to the openai profile; Hermes runs it there."""
    write_profile(hermes_home, PROFILE, anthropic())
    write_profile(hermes_home, "gpt", provider_model("openai"))
    cli = distress(f'[profiles.{PROFILE}]\nfallbacks = ["gpt"]\n')
    board = compat_board
    task_id = board.create("throttled")
    blocked_by_the_worker(board, task_id, RATE_LIMIT)

    records = cli.once(board.path)

    assert summary(records) == [(task_id, "reassign", "rate_limited", True)]
    task = board.task(task_id)
    assert (task.assignee, task.status, task.consecutive_failures) == ("gpt", "ready", 0)
    [assigned] = board.events(task_id, "assigned")
    assert assigned.payload is not None
    assert (assigned.payload["from_provider"], assigned.payload["to_provider"]) == (
        "anthropic",
        "openai",
    )
    assert board.dispatch() == [task_id]
    assert board.runs(task_id)[-1].profile == "gpt"


@pytest.mark.interop
def test_with_no_safe_route_the_orchestrator_gets_a_card_and_claims_it(
    compat_board: CompatBoard, hermes_home: Path, distress: DistressCli
) -> None:
    """The card is the source's parent, assigned to the orchestrator, and Hermes runs it."""
    write_profile(hermes_home, PROFILE, anthropic())
    write_profile(hermes_home, "orchestrator", anthropic())
    cli = distress()
    board = compat_board
    task_id = board.create("throttled, nowhere to go")
    blocked_by_the_worker(board, task_id, RATE_LIMIT)

    records = cli.once(board.path)

    assert summary(records) == [(task_id, "card", "rate_limited", True)]
    card = card_of(board, task_id, "rate_limited")
    assert (card.assignee, card.status, card.created_by) == ("orchestrator", "ready", "watchers")
    assert board.parents(task_id) == [card.id]
    assert card.body is not None and f"- Blocked task: {task_id} — " in card.body
    assert [c.author for c in board.comments(task_id)] == ["watchers"]
    if board.newer:
        assert _column(board, card.id, "completion_contract") == newer_hermes.COMPLETION_CONTRACT
    assert board.dispatch() == [card.id]


@pytest.mark.interop
def test_a_worker_past_its_time_budget_gets_a_split_card(
    compat_board: CompatBoard, budget: BudgetCli
) -> None:
    """`Time budget: 1m` in the body, an attempt two minutes old: one iteration_budget card."""
    board = compat_board
    cli = budget()
    task_id = board.create("scope creep", body="Do the thing.\n\nTime budget: 1m\n")
    assert board.dispatch() == [task_id]
    _age_attempt(board, task_id, 120)

    records = cli.once(board.path)

    assert summary(records) == [(task_id, "card", "time_budget", True)]
    card = card_of(board, task_id, "iteration_budget")
    assert card.status == "ready" and board.parents(task_id) == [card.id]
    assert board.task(task_id).status == "running"  # the worker is never touched
    assert board.worker(task_id).poll() is None


@pytest.mark.interop
def test_status_shows_the_board_and_a_live_worker(
    compat_board: CompatBoard, watchers: WatchersCli
) -> None:
    """Counts by status and the running task's verdict, from the release's board."""
    board = compat_board
    running = board.create("running")
    board.create("waiting", assignee="nobody-yet")
    assert board.dispatch() == [running]

    [status] = watchers.status(board.path)

    assert status["tasks"]["running"] == 1 and status["tasks"]["ready"] == 1
    [worker] = status["running"]
    assert (worker["task_id"], worker["verdict"]) == (running, "alive")
    assert status["skipped"] == []


@pytest.mark.interop
@pytest.mark.skipif(not HAS_REVIEW_LANE, reason=f"Hermes {RELEASE} has no review lane")
def test_a_reviewers_dead_worker_goes_back_to_review_and_the_reviewer_runs_again(
    compat_board: CompatBoard, watchers: WatchersCli
) -> None:
    """Claimed from review by Hermes's dispatcher, reaped by watchers into review, claimed
    from review again: the implementer is never run a second time."""
    board = compat_board
    task_id = board.create("ready for review")
    newer_hermes.request_review(board.path, task_id)
    assert board.dispatch() == [task_id]
    [claimed] = board.events(task_id, "claimed")
    assert claimed.payload is not None and claimed.payload["source_status"] == "review"
    board.kill(task_id, reap=True)

    records = watchers.once(board.path)

    assert summary(records) == [(task_id, "reap", "worker_gone", True)]
    assert records[0]["evidence"]["lane"] == "review"
    task = board.task(task_id)
    assert (task.status, task.consecutive_failures, task.current_run_id) == ("review", 1, None)
    assert board.runs(task_id)[-1].outcome == "crashed"
    assert board.dispatch() == [task_id]
    again = board.events(task_id, "claimed")[-1]
    assert again.payload is not None and again.payload["source_status"] == "review"


def _age_attempt(board: CompatBoard, task_id: str, seconds: int) -> None:
    """Move the open run's start back (time cannot be faked across processes)."""
    run_id = board.task(task_id).current_run_id
    with board.connect() as conn:
        cur = conn.execute(
            "UPDATE task_runs SET started_at = started_at - ? WHERE id = ? AND ended_at IS NULL",
            (seconds, run_id),
        )
        conn.commit()
        assert cur.rowcount == 1


def _column(board: CompatBoard, task_id: str, column: str) -> Any:
    with board.connect() as conn:
        row = conn.execute(f"SELECT {column} FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return row[0]
