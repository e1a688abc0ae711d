"""Distress moves rate-limited or refused work to another profile, and Hermes runs it there."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hermes_cli import kanban_db as kb

from tests.interop.conftest import DistressCli
from tests.interop.interop_harness import (
    HermesBoard,
    anthropic,
    provider_model,
    write_profile,
)

CREDENTIAL_ERROR = "401 Unauthorized: invalid api key"


def refused_spawn(task: kb.Task, workspace_path: str, board: str | None = None) -> int:
    """A spawn_fn whose launch fails the way a revoked key does."""
    raise RuntimeError(CREDENTIAL_ERROR)


def route_of(record: dict[str, Any]) -> list[tuple[str, str | None, bool, str | None]]:
    """The fallbacks a decision considered: (profile, provider, eligible, why)."""
    return [
        (r["profile"], r["provider"], r["eligible"], r["why"]) for r in record["evidence"]["route"]
    ]


@pytest.mark.interop
def test_a_rate_limited_task_moves_to_a_profile_on_another_provider(
    hermes_home: Path,
    hermes_board: HermesBoard,
    distress: DistressCli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exit 75, recorded by Hermes, sends the task from anthropic's coder-a to openai's coder-b."""
    write_profile(hermes_home, "coder-a", anthropic())
    write_profile(hermes_home, "coder-b", provider_model("openai"))
    cli = distress('[profiles.coder-a]\nfallbacks = ["coder-b"]\n')
    board = hermes_board
    task_id = board.create("rate limited", assignee="coder-a")
    board.rate_limit([task_id])

    task = board.task(task_id)
    assert (task.status, task.assignee, task.consecutive_failures) == ("ready", "coder-a", 0)
    assert task.last_failure_error is not None  # Hermes's quota stamp for its respawn guard
    [run] = board.runs(task_id)
    assert (run.profile, run.outcome) == ("coder-a", "rate_limited")
    assert run.error is not None
    assert re.fullmatch(r"pid \d+ exited rate-limited \(quota wall\) .*", run.error)
    [limited] = board.events(task_id, "rate_limited")
    assert limited.payload is not None
    assert limited.payload["exit_code"] == kb.KANBAN_RATE_LIMIT_EXIT_CODE

    [record] = cli.once(board.path)

    assert (record["task_id"], record["action"], record["reason"], record["applied"]) == (
        task_id,
        "reassign",
        "rate_limited",
        True,
    )
    assert route_of(record) == [("coder-b", "openai", True, None)]
    task = board.task(task_id)
    assert (task.status, task.assignee) == ("ready", "coder-b")
    # as Hermes's assign_task: the new profile starts with a fresh failure budget
    assert (task.consecutive_failures, task.last_failure_error) == (0, None)
    assigned = board.events(task_id, "assigned")[-1]
    assert assigned.payload is not None
    assert {k: assigned.payload[k] for k in ("assignee", "by", "from", "to")} == {
        "assignee": "coder-b",
        "by": "watchers",
        "from": "coder-a",
        "to": "coder-b",
    }
    assert (assigned.payload["from_provider"], assigned.payload["to_provider"]) == (
        "anthropic",
        "openai",
    )
    [comment] = board.comments(task_id)
    assert comment.author == "watchers"
    assert "coder-b" in comment.body
    assert "openai" in comment.body

    # Hermes's own 300 s rate-limit guard is per task, not per profile: it still holds...
    assert board.dispatch() == []
    assert board.last_dispatch is not None
    assert board.last_dispatch.respawn_guarded == [(task_id, "rate_limit_cooldown")]
    # ...and once it is lifted Hermes runs the task on coder-b.
    monkeypatch.setenv("HERMES_KANBAN_RATE_LIMIT_COOLDOWN_SECONDS", "0")
    assert board.dispatch() == [task_id]
    task = board.task(task_id)
    assert (task.status, task.assignee) == ("running", "coder-b")
    assert board.runs(task_id)[-1].profile == "coder-b"


@pytest.mark.interop
def test_fallbacks_on_the_same_or_an_unknown_provider_are_skipped(
    hermes_home: Path, hermes_board: HermesBoard, distress: DistressCli
) -> None:
    """Same provider, a bare-string model and `provider: auto` are passed over for google."""
    write_profile(hermes_home, "coder-a", anthropic())
    write_profile(hermes_home, "coder-a2", anthropic("claude-haiku"))
    write_profile(hermes_home, "coder-s", "some-model-name")
    write_profile(hermes_home, "coder-auto", {"provider": "auto", "default": "x"})
    write_profile(hermes_home, "coder-g", provider_model("google"))
    cli = distress(
        '[profiles.coder-a]\nfallbacks = ["coder-a2", "coder-s", "coder-auto", "coder-g"]\n'
    )
    task_id = hermes_board.create("rate limited", assignee="coder-a")
    hermes_board.rate_limit([task_id])

    [record] = cli.once(hermes_board.path)

    assert (record["action"], record["applied"]) == ("reassign", True)
    assert route_of(record) == [
        ("coder-a2", "anthropic", False, "same provider"),
        ("coder-s", None, False, "unknown provider"),
        ("coder-auto", None, False, "unknown provider"),
        ("coder-g", "google", True, None),
    ]
    assert hermes_board.task(task_id).assignee == "coder-g"
    assigned = hermes_board.events(task_id, "assigned")[-1]
    assert assigned.payload is not None
    assert assigned.payload["evidence"]["route"] == record["evidence"]["route"]


@pytest.mark.interop
def test_a_credential_failure_moves_to_another_profile_even_on_the_same_provider(
    hermes_home: Path, hermes_board: HermesBoard, distress: DistressCli
) -> None:
    """A 401 that Hermes recorded as a spawn failure sends the task to coder-a2 (anthropic too)."""
    write_profile(hermes_home, "coder-a", anthropic())
    write_profile(hermes_home, "coder-a2", anthropic("claude-haiku"))
    cli = distress('[profiles.coder-a]\nfallbacks = ["coder-a2"]\n')
    board = hermes_board
    task_id = board.create("needs a key", assignee="coder-a")
    # Hermes's spawn-failure path is the one that records an arbitrary error text.
    with board.connect() as conn:
        result = kb.dispatch_once(conn, spawn_fn=refused_spawn, board=None)
    assert result.spawned == []
    [run] = board.runs(task_id)
    assert (run.profile, run.outcome, run.error) == ("coder-a", "spawn_failed", CREDENTIAL_ERROR)
    task = board.task(task_id)
    assert (task.status, task.consecutive_failures) == ("ready", 1)
    # left alone, Hermes parks it: the error reads as an auth blocker
    assert board.dispatch() == []
    assert board.last_dispatch is not None
    assert board.last_dispatch.respawn_guarded == [(task_id, "blocker_auth")]

    [record] = cli.once(board.path)

    assert (record["task_id"], record["action"], record["reason"], record["applied"]) == (
        task_id,
        "reassign",
        "credential_failure",
        True,
    )
    assert CREDENTIAL_ERROR in record["evidence"]["error"]
    task = board.task(task_id)
    assert (task.status, task.assignee, task.consecutive_failures, task.last_failure_error) == (
        "ready",
        "coder-a2",
        0,
        None,
    )
    assigned = board.events(task_id, "assigned")[-1]
    assert assigned.payload is not None
    assert (assigned.payload["from_provider"], assigned.payload["to_provider"]) == (
        "anthropic",
        "anthropic",
    )
    assert board.dispatch() == [task_id]
    assert board.runs(task_id)[-1].profile == "coder-a2"


@pytest.mark.interop
def test_a_reassignment_by_hermes_answers_the_signal(
    hermes_home: Path, hermes_board: HermesBoard, distress: DistressCli
) -> None:
    """After Hermes's assign_task moved it to coder-b, coder-a's quota wall is answered."""
    write_profile(hermes_home, "coder-a", anthropic())
    write_profile(hermes_home, "coder-b", provider_model("openai"))
    cli = distress()
    task_id = hermes_board.create("rate limited", assignee="coder-a")
    hermes_board.rate_limit([task_id])
    with hermes_board.connect() as conn:
        assert kb.assign_task(conn, task_id, "coder-b")

    assert cli.once(hermes_board.path) == []
    task = hermes_board.task(task_id)
    assert (task.status, task.assignee) == ("ready", "coder-b")
    assert hermes_board.parents(task_id) == []
