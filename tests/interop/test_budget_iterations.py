"""Heartbeats Hermes records count against a task's iteration budget."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.interop.conftest import BudgetCli
from tests.interop.interop_harness import PROCESS_TIMEOUT, HermesBoard
from tests.interop.test_budget_time import budget_card, heartbeat, summary


def git(workspace: Path, *args: str) -> None:
    """Run git in `workspace` with a throwaway identity."""
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=workspace,
        check=True,
        capture_output=True,
        timeout=PROCESS_TIMEOUT,
    )


def make_git_workspace(workspace: Path) -> None:
    """A repository with one commit on `main` and one file changed since."""
    (workspace / "src").mkdir()
    (workspace / "src" / "lexer.py").write_text("TOKENS = []\n", encoding="utf-8")
    git(workspace, "init", "-q", "-b", "main")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-q", "-m", "base")
    (workspace / "src" / "lexer.py").write_text("TOKENS = ['if']\n", encoding="utf-8")


@pytest.mark.interop
def test_heartbeats_warn_at_80_percent_and_card_at_the_iteration_budget(
    hermes_board: HermesBoard, budget: BudgetCli
) -> None:
    """Budget 5: 3 heartbeats nothing, 4 one warning, 5 a card with the split skeleton."""
    board, cli = hermes_board, budget()
    task_id = board.create(
        "write the tokenizer", body="1. keywords\n2. literals\n\nIteration budget: 5\n"
    )
    assert board.dispatch() == [task_id]
    workspace = board.task(task_id).workspace_path
    assert workspace is not None
    make_git_workspace(Path(workspace))
    run_id = board.task(task_id).current_run_id

    heartbeat(board, task_id, 3)
    assert cli.once(board.path) == []

    heartbeat(board, task_id, 1)
    [warn] = cli.once(board.path)
    assert summary([warn]) == [(task_id, "warn", "iterations_budget_warning", True)]
    assert warn["evidence"] == {
        "budget": "iterations",
        "consumed": 4,
        "limit": 5,
        "source": "body",
        "run_id": run_id,
    }
    [event] = board.events(task_id, "budget_warning")
    assert event.run_id == run_id
    assert [c.author for c in board.comments(task_id)] == ["watchers"]
    assert cli.once(board.path) == []

    heartbeat(board, task_id, 1)
    [record] = cli.once(board.path)

    assert summary([record]) == [(task_id, "card", "iteration_budget", True)]
    assert (record["evidence"]["consumed"], record["evidence"]["heartbeats"]) == (5, 5)
    card = budget_card(board, task_id)
    assert card.assignee == "orchestrator"
    assert card.body is not None
    assert "- budget: iterations\n- consumed: 5\n- limit: 5.0\n- source: body\n" in card.body
    needs = next(line for line in card.body.splitlines() if line.startswith("- Needs: "))
    assert f"split {task_id} into narrower tasks" in needs
    assert "[1] keywords; [2] literals" in needs
    assert "files touched so far: src/lexer.py" in needs
    assert "- State: uncommitted\n" in card.body
    assert board.task(task_id).status == "running"
    assert board.worker(task_id).poll() is None
    assert len(board.events(task_id, "budget_warning")) == 1
    state = board.state(task_id)

    assert cli.once(board.path) == []
    assert board.state(task_id) == state
