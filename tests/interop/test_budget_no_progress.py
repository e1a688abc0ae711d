"""Alive, heartbeating, getting nowhere: the budget watcher cards an attempt that shows no
progress (no worker event, no new heartbeat note, no change in its git workspace) for
`no_progress_seconds`, and leaves alone the ones that do move. Hermes 0.19 writes the
heartbeats, comments and claims; time moves on an injected clock."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from hermes_cli import kanban_db as kb

from tests.interop.interop_harness import PROFILE, HermesBoard
from watchers.budget.watcher import Budget
from watchers.clock import FakeClock
from watchers.model import ActionKind
from watchers.probe import StaticProbe
from watchers.runner import run_tick
from watchers.settings import load_settings
from watchers.store.board import BoardStore

pytestmark = pytest.mark.interop

LIMIT = 1800.0  # budget.no_progress_seconds, the default


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        check=True,
        capture_output=True,
        timeout=30,
    )


def repository(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q")
    (path / "README").write_text("start\n")
    git(path, "add", "README")
    git(path, "commit", "-q", "-m", "start")
    return path


def task_in(board: HermesBoard, title: str, workspace: Path) -> str:
    with board.connect() as conn:
        task_id = kb.create_task(
            conn, title=title, assignee=PROFILE, workspace_kind="dir", workspace_path=str(workspace)
        )
    board.scripts.setdefault(task_id, "import sys; sys.stdin.read()")
    return task_id


def beat(board: HermesBoard, task_id: str, times: int, note: str | None = None) -> None:
    with board.connect() as conn:
        for _ in range(times):
            assert kb.heartbeat_worker(conn, task_id, note=note)


def test_an_attempt_that_only_heartbeats_is_carded_and_one_that_moves_is_not(
    tmp_path: Path, hermes_board: HermesBoard
) -> None:
    """Unchanged repository and a plain directory with heartbeats only: one card each, the
    workers untouched; a new commit, a worker comment, a new heartbeat note: no card."""
    board = hermes_board
    stalled_repo = task_in(board, "loops in a repository", repository(tmp_path / "a"))
    moving_repo = task_in(board, "commits as it goes", repository(tmp_path / "b"))
    (tmp_path / "c").mkdir()
    (tmp_path / "d").mkdir()
    (tmp_path / "e").mkdir()
    commenting = task_in(board, "reports as it goes", tmp_path / "c")
    stalled_dir = task_in(board, "loops in a plain directory", tmp_path / "d")
    noting = task_in(board, "heartbeats with new notes", tmp_path / "e")
    everyone = {stalled_repo, moving_repo, commenting, stalled_dir, noting}
    assert set(board.dispatch()) == everyone
    # Hermes stamps its events with the real time: the attempts and the first look are
    # placed 20 minutes back, so what Hermes writes now comes after them.
    with board.connect() as conn, kb.write_txn(conn):
        conn.execute("UPDATE task_runs SET started_at = started_at - 1300 WHERE ended_at IS NULL")
    now = time.time()
    watcher, clock, settings = Budget(StaticProbe()), FakeClock(now - 1200), load_settings()

    def budget_pass() -> list[tuple[str, str, str]]:
        store = BoardStore.open(board.path)
        try:
            report = run_tick(watcher, store, settings, clock)
        finally:
            store.close()
        assert report.error is None
        return sorted(
            (o.action.task_id, o.action.kind.value, o.action.reason) for o in report.outcomes
        )

    assert budget_pass() == []  # the first look: every attempt watched from now
    deadline = watcher.deadline(board.path)
    assert deadline is not None and deadline == pytest.approx(clock.now() + LIMIT, abs=5)

    for task_id in everyone:
        beat(board, task_id, 5)  # alive, heartbeating, all of them
    (tmp_path / "b" / "parser.py").write_text("def parse(): ...\n")
    git(tmp_path / "b", "add", "parser.py")
    git(tmp_path / "b", "commit", "-q", "-m", "the parser")
    with board.connect() as conn:
        kb.add_comment(conn, commenting, PROFILE, "lexer done, on to the grammar")
    beat(board, noting, 1, note="step 2 of 5")
    clock.advance(900)
    assert budget_pass() == []  # 15 minutes of nothing: not yet
    clock.advance(1000)  # 31 min 40 s after the first look, about 0 after Hermes's writes

    cards = budget_pass()

    assert cards == sorted(
        [
            (stalled_repo, ActionKind.CARD.value, "no_progress"),
            (stalled_dir, ActionKind.CARD.value, "no_progress"),
        ]
    )
    [repo_card] = board.tasks_titled(f"[BLOCKED] {stalled_repo} iteration_budget")
    assert repo_card.body is not None
    assert "looks like it is looping" in repo_card.body
    assert "workspace (git HEAD, diff --stat, untracked files)" in repo_card.body
    [dir_card] = board.tasks_titled(f"[BLOCKED] {stalled_dir} iteration_budget")
    assert dir_card.body is not None and "git HEAD" not in dir_card.body.split("## Evidence")[1]
    for task_id in everyone:
        assert board.task(task_id).status == "running"  # never touched
        assert board.worker(task_id).poll() is None
    clock.advance(600)
    assert budget_pass() == []  # one card per attempt; the others moved 10 min ago
