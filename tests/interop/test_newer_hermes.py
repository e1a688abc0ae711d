"""What newer Hermes (0.20/0.21) changes, on a board Hermes 0.19.0 made and the newer
schema migrated (see tests/compat/newer_hermes.py): state changes in new event kinds,
pinned providers, cards with the newer columns, and failures named only on the task row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.compat import newer_hermes
from tests.compat.test_subset import blocked_by_the_worker
from tests.interop.conftest import BudgetCli, DistressCli
from tests.interop.interop_harness import (
    FAILING_WORKER,
    PROFILE,
    HermesBoard,
    WatchersCli,
    anthropic,
    provider_model,
    write_profile,
)
from tests.interop.test_budget_time import summary

RATE_LIMIT = "HTTP 429 Too Many Requests: rate limit exceeded"


@pytest.fixture
def newer_board(hermes_board: HermesBoard) -> HermesBoard:
    """Hermes 0.19.0's board, migrated to the newer schema."""
    newer_hermes.migrate(hermes_board.path)
    return hermes_board


@pytest.fixture
def two_providers(hermes_home: Path, distress: DistressCli) -> WatchersCli:
    """`coder` on anthropic with `gpt` (openai) as its fallback; the distress CLI."""
    write_profile(hermes_home, PROFILE, anthropic())
    write_profile(hermes_home, "gpt", provider_model("openai"))
    return distress(f'[profiles.{PROFILE}]\nfallbacks = ["gpt"]\n')


def set_row(board: HermesBoard, task_id: str, **columns: object) -> None:
    """Write task columns the way a path outside Hermes's API left them."""
    names = ", ".join(f"{c} = ?" for c in columns)
    conn = sqlite3.connect(board.path)
    try:
        conn.execute(f"UPDATE tasks SET {names} WHERE id = ?", (*columns.values(), task_id))
        conn.commit()
    finally:
        conn.close()


@pytest.mark.interop
def test_a_give_up_followed_by_a_newer_state_change_is_not_reset(
    newer_board: HermesBoard, watchers: WatchersCli
) -> None:
    """After a `status` event (a newer kind), the give-up no longer describes the task."""
    board = newer_board
    task_id = board.create("killed, then moved by a person", max_retries=1)
    assert board.dispatch() == [task_id]
    board.kill(task_id, reap=False)
    assert summary(watchers.once(board.path)) == [(task_id, "reap", "worker_zombie", True)]
    newer_hermes.event(board.path, task_id, "status", {"status": "blocked", "by": "alice"})
    newer_hermes.event(board.path, task_id, "some_future_kind", {"x": 1})

    assert watchers.once(board.path, reset_backoff_base_seconds=0) == []
    assert board.task(task_id).status == "blocked"
    assert board.events(task_id, "unblocked") == []


@pytest.mark.interop
def test_a_signal_followed_by_a_lane_change_is_not_acted_on(
    newer_board: HermesBoard, two_providers: WatchersCli
) -> None:
    """A 429, then the task sent back by a reviewer (`changes_requested`): no reassignment."""
    board = newer_board
    task_id = board.create("throttled, then reviewed")
    blocked_by_the_worker(board, task_id, RATE_LIMIT)
    newer_hermes.event(board.path, task_id, "changes_requested", {"by": "reviewer"})
    set_row(board, task_id, status="ready")

    assert two_providers.once(board.path) == []
    assert board.task(task_id).assignee == PROFILE


@pytest.mark.interop
def test_a_pinned_task_gets_a_card_that_names_its_overrides(
    newer_board: HermesBoard, two_providers: WatchersCli
) -> None:
    """provider_override + model_override pin anthropic: gpt would not change the provider."""
    board = newer_board
    task_id = board.create("pinned to anthropic")
    newer_hermes.pin(board.path, task_id, "anthropic", "claude-opus-4")
    blocked_by_the_worker(board, task_id, RATE_LIMIT)

    [record] = two_providers.once(board.path)

    assert summary([record]) == [(task_id, "card", "rate_limited", True)]
    assert [(r["profile"], r["provider"], r["why"]) for r in record["evidence"]["route"]] == [
        ("gpt", "anthropic", "same provider")
    ]
    [card] = board.tasks_titled(f"[BLOCKED] {task_id} rate_limited")
    assert card.body is not None
    [needs] = [line for line in card.body.splitlines() if line.startswith("- Needs: ")]
    assert "pinned to provider anthropic by its provider_override" in needs
    assert "model_override claude-opus-4" in needs
    assert "Change or clear provider_override and model_override" in needs
    assert board.task(task_id).assignee == PROFILE


@pytest.mark.interop
def test_a_recipe_made_task_is_healed_and_carded_with_foreign_keys_enforced(
    newer_board: HermesBoard, watchers: WatchersCli, two_providers: WatchersCli
) -> None:
    """Tasks under the newer schema's foreign key take every kind of write we make."""
    board = newer_board
    dies = board.create("dies")
    throttled = board.create("throttled")
    newer_hermes.made_by_recipe(board.path, [dies, throttled])
    assert sorted(board.dispatch()) == sorted([dies, throttled])
    board.kill(dies, reap=True)
    board.worker(throttled).stdin.close()  # type: ignore[union-attr]
    board.worker(throttled).wait()
    blocked_by_the_worker(board, throttled, RATE_LIMIT)

    healed = watchers.once(board.path)
    moved = two_providers.once(board.path)

    assert (dies, "reap", "worker_gone", True) in summary(healed)
    assert summary(moved) == [(throttled, "reassign", "rate_limited", True)]
    with board.connect() as conn:
        kept = conn.execute("SELECT COUNT(*) FROM recipe_instance_tasks").fetchone()[0]
    assert kept == 2


@pytest.mark.interop
@pytest.mark.parametrize(
    ("text", "signal", "to"),
    [
        ("anthropic.RateLimitError: Error code: 429 - rate_limit_error", "rate_limited", "gpt"),
        ("AuthenticationError: 401 invalid x-api-key", "credential_failure", "gpt"),
    ],
)
def test_a_failure_named_only_in_last_failure_error_is_a_signal(
    hermes_board: HermesBoard, two_providers: WatchersCli, text: str, signal: str, to: str
) -> None:
    """The run says only `exited with code 1`; the task row names the provider's refusal."""
    board = hermes_board
    task_id = board.create("failed upstream", max_retries=1, worker=FAILING_WORKER)
    assert board.dispatch() == [task_id]
    board.let_exit(task_id)
    assert board.record_crashes() == [task_id]
    [run] = board.runs(task_id)
    assert run.error is not None and "exited with code" in run.error
    set_row(board, task_id, last_failure_error=text)

    [record] = two_providers.once(board.path)

    assert summary([record]) == [(task_id, "reassign", signal, True)]
    assert text[:40] in record["evidence"]["error"]
    assert board.task(task_id).assignee == to


@pytest.mark.interop
def test_an_ordinary_failure_text_on_the_task_row_is_no_signal(
    hermes_board: HermesBoard, two_providers: WatchersCli
) -> None:
    """A crash whose row and run name nothing of a provider is auto-heal's, not distress's."""
    board = hermes_board
    task_id = board.create("segfaults", worker=FAILING_WORKER)
    assert board.dispatch() == [task_id]
    board.let_exit(task_id)
    assert board.record_crashes() == [task_id]
    set_row(board, task_id, last_failure_error="Segmentation fault (core dumped)")

    assert two_providers.once(board.path) == []


@pytest.mark.interop
@pytest.mark.parametrize("review", [False, True], ids=["same-lane", "lane-change"])
def test_a_lane_change_starts_a_new_attempt_budget_episode(
    newer_board: HermesBoard, watchers: WatchersCli, budget: BudgetCli, review: bool
) -> None:
    """`Attempt budget: 2`, two failed attempts: a card when both were the implementer's;
    none when review was requested in between (one attempt in each episode)."""
    board, cli = newer_board, budget()
    task_id = board.create("implement, then review", body="Attempt budget: 2")
    for attempt in range(2):
        if review and attempt == 1:
            newer_hermes.request_review(board.path, task_id)
        assert board.dispatch() == [task_id]
        board.kill(task_id, reap=True)
        reaped = watchers.once(board.path, failure_limit=5)
        assert summary(reaped) == [(task_id, "reap", "worker_gone", True)]
    assert board.task(task_id).status == ("review" if review else "ready")

    records = cli.once(board.path)

    assert summary(records) == ([] if review else [(task_id, "card", "attempt_budget", True)])
