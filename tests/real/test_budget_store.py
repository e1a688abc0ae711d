"""The iteration-budget watcher on real board files, across ticks and restarts."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import events, rows
from watchers.budget.watcher import Budget
from watchers.clock import SystemClock
from watchers.probe import StaticProbe
from watchers.runner import run_tick
from watchers.settings import Settings, load_settings
from watchers.store.board import BoardStore


def budget_tick(board: Path, watcher: Budget | None = None, s: Settings | None = None):
    store = BoardStore.open(board, busy_timeout=0.5)
    try:
        return run_tick(
            watcher or Budget(StaticProbe()), store, s or load_settings(), SystemClock()
        )
    finally:
        store.close()


def age_attempt(dispatcher, task_id: str, seconds: int) -> None:
    dispatcher.conn.execute(
        "UPDATE task_runs SET started_at = ? WHERE id = (SELECT current_run_id FROM tasks WHERE id = ?)",
        (int(time.time()) - seconds, task_id),
    )


def test_a_warning_then_a_card_each_once_even_across_restarts(board, dispatcher):
    """85 %: one warning; 110 %: one card; a restarted daemon repeats neither."""
    task = dispatcher.create_task("Refactor", "coder", body="Time budget: 10m\n- parser\n- docs")
    dispatcher.claim(task)
    dispatcher.start_worker(task)
    age_attempt(dispatcher, task, 510)
    [warn] = budget_tick(board).outcomes
    assert (warn.action.kind.value, warn.applied) == ("warn", True)
    assert budget_tick(board).outcomes == ()
    age_attempt(dispatcher, task, 660)
    [card] = budget_tick(board).outcomes
    assert card.action.kind.value == "card" and card.applied
    [(title, status)] = rows(board, "SELECT title, status FROM tasks WHERE title LIKE '[BLOCKED]%'")
    assert (title, status) == (f"[BLOCKED] {task} iteration_budget", "ready")
    assert rows(board, "SELECT status FROM tasks WHERE id = ?", (task,)) == [("running",)]
    assert dispatcher.workers[task].poll() is None  # never touched
    assert budget_tick(board).outcomes == ()
    [warning] = events(board, task, "budget_warning")
    assert warning["by"] == "watchers" and warning["budget"] == "time"


def test_heartbeats_after_the_first_load_are_counted(board, dispatcher):
    """The event tail counts heartbeats per attempt as they arrive."""
    task = dispatcher.create_task("Loop", "coder", body="Iteration budget: 5")
    dispatcher.claim(task)
    dispatcher.start_worker(task)
    watcher = Budget(StaticProbe())
    assert budget_tick(board, watcher).outcomes == ()
    for _ in range(4):
        dispatcher.heartbeat(task)
    [warn] = budget_tick(board, watcher).outcomes
    assert warn.action.reason == "iterations_budget_warning"
    dispatcher.heartbeat(task)
    [card] = budget_tick(board, watcher).outcomes
    assert card.action.reason == "iteration_budget" and card.action.evidence["consumed"] == 5


def test_a_malformed_budget_line_is_reported_once_ever(board, dispatcher):
    """One event and one comment, not again after a restart; the valid line still counts."""
    task = dispatcher.create_task("Odd", "coder", body="Time budget: soon\nAttempt budget: 1")
    dispatcher.record_give_up(task, ["pid 1 exited with code 1"], at=int(time.time()) - 5)
    outcomes = budget_tick(board).outcomes
    assert sorted(o.action.kind.value for o in outcomes) == ["card", "note"]
    assert budget_tick(board).outcomes == ()
    assert len(events(board, task, "budget_malformed")) == 1
    comments = rows(board, "SELECT body FROM task_comments WHERE task_id = ?", (task,))
    assert sum("could not read" in c[0] for c in comments) == 1


def test_quiet_tasks_are_forgotten_and_recalled_with_their_history(board, dispatcher):
    """Only the live part of a board is held between passes; a task named again by an
    event is rebuilt from its history, so attempts made before it was forgotten count."""
    quiet = dispatcher.create_task("Flaky", "coder", body="Attempt budget: 3")
    dispatcher.record_give_up(quiet, ["exit 1", "exit 1"], at=int(time.time()) - 500)
    live = dispatcher.create_task("Busy", "coder")
    dispatcher.claim(live)
    dispatcher.start_worker(live)
    watcher = Budget(StaticProbe())
    assert budget_tick(board, watcher).outcomes == ()  # 2 of 3 attempts: nothing to say
    observer = watcher._observers.peek(board)
    assert observer is not None and set(observer.memos) == {live}
    dispatcher.record_give_up(quiet, ["exit 1"], at=int(time.time()) - 5)
    [card] = budget_tick(board, watcher).outcomes
    assert card.action.kind.value == "card" and card.action.task_id == quiet
    evidence = card.action.evidence  # the two attempts made before it was forgotten count
    assert (evidence["attempts"], evidence["failures"]) == (3, 3)
    assert budget_tick(board, watcher).outcomes == ()
    assert set(observer.memos) == {live}  # answered: forgotten again


def test_a_reload_weighs_forgotten_tasks_against_the_new_budgets(board, dispatcher):
    quiet = dispatcher.create_task("Flaky", "coder")
    dispatcher.record_give_up(quiet, ["exit 1", "exit 1"], at=int(time.time()) - 500)
    watcher = Budget(StaticProbe())
    loose = Settings.model_validate({"budget": {"attempt_budget": 5}})
    assert budget_tick(board, watcher, loose).outcomes == ()
    tight = Settings.model_validate({"budget": {"attempt_budget": 2}})
    [card] = budget_tick(board, watcher, tight).outcomes
    assert card.action.kind.value == "card" and card.action.task_id == quiet
