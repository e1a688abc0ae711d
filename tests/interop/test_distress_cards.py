"""Distress writes the contract's `[BLOCKED]` card, and Hermes's orchestrator acts on it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hermes_cli import kanban_db as kb

from tests.interop.conftest import DistressCli
from tests.interop.interop_harness import (
    HermesBoard,
    WatchersCli,
    anthropic,
    provider_model,
    write_profile,
)
from tests.interop.test_crash_loops import SETTINGS, crash_loop

DISTRESS_LINES = (
    "Blocked task",
    "Worker",
    "Branch",
    "Workspace",
    "Blocker type",
    "Completed",
    "Cannot touch",
    "Needs",
    "State",
)
"""The `## Distress Signal` lines of the contract, in order."""


def card_title(task_id: str, blocker: str) -> str:
    return f"[BLOCKED] {task_id} {blocker}"


def assert_contract_body(body: str) -> None:
    """The contract's sections, and its Distress Signal lines, each once and in order."""
    sections = [m.group(0) for m in re.finditer(r"^## .+$", body, re.MULTILINE)]
    assert sections == ["## Distress Signal", "## Scope Guard", "## Evidence"]
    signal, rest = body.split("## Scope Guard", maxsplit=1)
    labels = re.findall(r"^- ([A-Z][a-z]+(?: [a-z]+)?): \S", signal, re.MULTILINE)
    assert tuple(labels) == DISTRESS_LINES
    guard = rest.split("## Evidence", maxsplit=1)[0]
    assert re.search(r"^DO NOT touch: ", guard, re.MULTILINE)
    assert re.search(r"^Only fix: ", guard, re.MULTILINE)


@dataclass
class NoRoute:
    board: HermesBoard
    task_id: str
    cli: WatchersCli


@pytest.fixture
def no_route(hermes_home: Path, hermes_board: HermesBoard, distress: DistressCli) -> NoRoute:
    """A task on anthropic's coder-a, rate-limited by Hermes; its only fallback is anthropic too."""
    write_profile(hermes_home, "coder-a", anthropic())
    write_profile(hermes_home, "coder-a2", anthropic("claude-haiku"))
    cli = distress('[profiles.coder-a]\nfallbacks = ["coder-a2"]\n')
    task_id = hermes_board.create(
        "refactor the parser", assignee="coder-a", body="Do not touch: api/, docs/"
    )
    hermes_board.rate_limit([task_id])
    return NoRoute(hermes_board, task_id, cli)


@pytest.mark.interop
def test_no_route_writes_the_contract_card_and_hermes_runs_it(
    hermes_home: Path, no_route: NoRoute
) -> None:
    """The orchestrator's card holds the source until Hermes completes it; then nothing more."""
    board, task_id = no_route.board, no_route.task_id

    [record] = no_route.cli.once(board.path)

    assert (record["task_id"], record["action"], record["reason"], record["applied"]) == (
        task_id,
        "card",
        "rate_limited",
        True,
    )
    [card] = board.tasks_titled(card_title(task_id, "rate_limited"))
    assert (card.assignee, card.status, card.created_by) == ("orchestrator", "ready", "watchers")
    assert card.priority > 0
    assert card.body is not None
    assert_contract_body(card.body)
    assert f"- Blocked task: {task_id} — refactor the parser\n" in card.body
    assert "- Worker: coder-a (provider anthropic)\n" in card.body
    assert "- Blocker type: rate_limited\n" in card.body
    assert "- Cannot touch: api/, docs/\n" in card.body
    assert "same provider" in card.body  # the route, in the evidence
    assert board.parents(task_id) == [card.id]
    with board.connect() as conn:
        assert kb.child_ids(conn, card.id) == [task_id]
    source = board.task(task_id)
    assert (source.status, source.assignee) == ("todo", "coder-a")
    [comment] = board.comments(task_id)
    assert comment.author == "watchers"
    assert card.id in comment.body
    [linked] = board.events(task_id, "linked")
    assert linked.payload is not None
    assert (linked.payload["parent"], linked.payload["child"]) == (card.id, task_id)

    # Hermes's dispatcher hands the card to the orchestrator profile; the source waits.
    (hermes_home / "profiles" / "orchestrator").mkdir()
    assert board.dispatch() == [card.id]
    assert board.runs(card.id)[-1].profile == "orchestrator"
    assert board.task(task_id).status == "todo"
    with board.connect() as conn:
        # complete_task promotes the children whose parents are all done (recompute_ready)
        assert kb.complete_task(conn, card.id, summary="moved to another provider")
    assert board.task(card.id).status == "done"
    assert board.task(task_id).status == "ready"

    # the resolved card answered that signal
    assert no_route.cli.once(board.path) == []
    assert len(board.tasks_titled(card_title(task_id, "rate_limited"))) == 1


@pytest.mark.interop
def test_reassign_orchestrator_writes_a_card_even_when_a_route_exists(
    hermes_home: Path, hermes_board: HermesBoard, distress: DistressCli
) -> None:
    """With `distress.reassign = "orchestrator"` coder-b on openai is named, not used."""
    write_profile(hermes_home, "coder-a", anthropic())
    write_profile(hermes_home, "coder-b", provider_model("openai"))
    cli = distress(
        '[distress]\nreassign = "orchestrator"\n\n[profiles.coder-a]\nfallbacks = ["coder-b"]\n'
    )
    task_id = hermes_board.create("rate limited", assignee="coder-a")
    hermes_board.rate_limit([task_id])

    [record] = cli.once(hermes_board.path)

    assert (record["action"], record["reason"], record["applied"]) == ("card", "rate_limited", True)
    assert record["evidence"]["route"] == [
        {"profile": "coder-b", "provider": "openai", "eligible": True, "why": None}
    ]
    [card] = hermes_board.tasks_titled(card_title(task_id, "rate_limited"))
    assert card.body is not None
    assert "distress.reassign = orchestrator" in card.body
    task = hermes_board.task(task_id)
    assert (task.assignee, task.status) == ("coder-a", "todo")
    assert hermes_board.parents(task_id) == [card.id]


@pytest.mark.interop
def test_a_stuck_worker_gets_an_env_blocker_card_and_keeps_running(
    hermes_board: HermesBoard, distress: DistressCli
) -> None:
    """An alive worker silent past stuck_after: card as its parent; the task stays running."""
    cli = distress(stuck_after_seconds=60)
    board = hermes_board
    task_id = board.create("wedged")
    assert board.dispatch() == [task_id]
    before = board.task(task_id)
    with board.connect() as conn:
        assert kb.heartbeat_worker(conn, task_id)
        # Time cannot be faked across processes: age the heartbeat instead. (Backdating the
        # claim itself would make the live worker look like a reused pid.)
        with kb.write_txn(conn):
            conn.execute(
                "UPDATE tasks SET last_heartbeat_at = last_heartbeat_at - 600 WHERE id = ?",
                (task_id,),
            )
            conn.execute(
                "UPDATE task_runs SET last_heartbeat_at = last_heartbeat_at - 600 WHERE id = ?",
                (before.current_run_id,),
            )

    [record] = cli.once(board.path)

    assert (record["task_id"], record["action"], record["reason"], record["applied"]) == (
        task_id,
        "card",
        "stuck",
        True,
    )
    evidence = record["evidence"]
    assert (evidence["verdict"], evidence["pid"]) == ("alive", board.worker(task_id).pid)
    assert evidence["heartbeat_age_seconds"] >= 600
    [card] = board.tasks_titled(card_title(task_id, "env_blocker"))
    assert (card.assignee, card.status) == ("orchestrator", "ready")
    assert card.body is not None
    assert_contract_body(card.body)
    assert board.parents(task_id) == [card.id]
    after = board.task(task_id)
    assert (after.status, after.worker_pid, after.current_run_id, after.claim_lock) == (
        "running",
        before.worker_pid,
        before.current_run_id,
        before.claim_lock,
    )
    assert board.worker(task_id).poll() is None
    assert board.record_crashes() == []
    assert board.task(task_id).status == "running"


@pytest.mark.interop
def test_an_auto_heal_escalation_gets_an_env_blocker_card(
    hermes_board: HermesBoard, watchers: WatchersCli, distress: DistressCli
) -> None:
    """After auto-heal escalates a crash loop it may not reset again, distress writes its card."""
    board = hermes_board
    task_id = board.create("killed by the machine")
    crash_loop(board, {task_id: "sigkill"})
    watchers.once(board.path, **SETTINGS)
    crash_loop(board, {task_id: "sigkill"})
    assert [r["action"] for r in watchers.once(board.path, **SETTINGS)] == ["escalate"]

    [record] = distress().once(board.path)

    assert (record["task_id"], record["action"], record["reason"], record["applied"]) == (
        task_id,
        "card",
        "escalation",
        True,
    )
    assert record["evidence"]["reason_class"] == "infra_resets_exhausted"
    [card] = board.tasks_titled(card_title(task_id, "env_blocker"))
    assert (card.assignee, card.status, card.created_by) == ("orchestrator", "ready", "watchers")
    assert card.body is not None
    assert_contract_body(card.body)
    assert board.parents(task_id) == [card.id]
    assert board.task(task_id).status == "blocked"


@pytest.mark.interop
def test_with_route_creator_a_card_goes_to_the_profile_that_created_the_task(
    hermes_home: Path, hermes_board: HermesBoard, distress: DistressCli
) -> None:
    """An orchestrator profile's task gets its card back; a person's task goes to the orchestrator."""
    write_profile(hermes_home, "coder-a", anthropic())
    write_profile(hermes_home, "lead", anthropic("claude-opus"))
    cli = distress('[cards]\nroute = "creator"\n')
    by_lead = hermes_board.create("split the parser", assignee="coder-a", created_by="lead")
    by_person = hermes_board.create("fix the docs", assignee="coder-a", created_by="alice")
    hermes_board.rate_limit([by_lead, by_person])

    records = cli.once(hermes_board.path)

    assert sorted((r["task_id"], r["action"]) for r in records) == sorted(
        [(by_lead, "card"), (by_person, "card")]
    )
    [lead_card] = hermes_board.tasks_titled(card_title(by_lead, "rate_limited"))
    [person_card] = hermes_board.tasks_titled(card_title(by_person, "rate_limited"))
    assert (lead_card.assignee, person_card.assignee) == ("lead", "orchestrator")
    [comment] = hermes_board.comments(by_lead)
    assert "for lead" in comment.body
    # Hermes's dispatcher hands the card to the creating profile, as to any assignee.
    assert lead_card.id in hermes_board.dispatch()
    assert hermes_board.runs(lead_card.id)[-1].profile == "lead"
