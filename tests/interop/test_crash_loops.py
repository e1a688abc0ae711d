"""`watchers once` resets crash loops Hermes recorded itself, when the machine caused them."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from hermes_cli import kanban_db as kb

from tests.interop.interop_harness import FAILING_WORKER, HermesBoard, WatchersCli

SETTINGS = {"reset_backoff_base_seconds": 0, "max_resets": 1}
"""Reset as soon as Hermes gives up, and escalate the give-up after the first reset."""


def crash_loop(board: HermesBoard, deaths: dict[str, str]) -> None:
    """Let Hermes dispatch each task, see its worker die (`"sigkill"`, or `"exit"` for a
    worker that exits 1 by itself) and record the crash, until its breaker blocks them all."""
    for _ in range(kb.DEFAULT_FAILURE_LIMIT + 1):
        looping = {t for t in deaths if board.task(t).status != "blocked"}
        if not looping:
            break
        assert set(board.dispatch()) == looping
        for task_id in looping:
            if deaths[task_id] == "sigkill":
                board.kill(task_id, reap=False)
            else:
                board.let_exit(task_id)
        assert set(board.record_crashes()) == looping
    assert {board.task(t).status for t in deaths} == {"blocked"}


@dataclass
class CrashLooped:
    board: HermesBoard
    infra: str  # its workers were SIGKILLed: the machine's fault
    task_caused: str  # its workers exited with code 1: the task's fault


@pytest.fixture
def crash_looped(hermes_board: HermesBoard) -> CrashLooped:
    """Two tasks Hermes blocked after two crashes each: one killed by signal 9, one exit 1."""
    infra = hermes_board.create("killed by the machine")
    task_caused = hermes_board.create("fails by itself", worker=FAILING_WORKER)
    crash_loop(hermes_board, {infra: "sigkill", task_caused: "exit"})
    return CrashLooped(hermes_board, infra, task_caused)


@pytest.mark.interop
def test_hermes_records_each_crash_in_its_own_words_until_its_breaker_blocks(
    crash_looped: CrashLooped,
) -> None:
    """Hermes's runs read `killed by signal 9` or `exited with code 1`; its gave_up follows."""
    board = crash_looped.board
    for task_id, shape in (
        (crash_looped.infra, r"pid \d+ killed by signal 9"),
        (crash_looped.task_caused, r"pid \d+ exited with code 1"),
    ):
        runs = board.runs(task_id)
        assert [r.outcome for r in runs] == ["crashed"] * kb.DEFAULT_FAILURE_LIMIT
        assert all(r.error is not None and re.fullmatch(shape, r.error) for r in runs)
        task = board.task(task_id)
        assert task.consecutive_failures == kb.DEFAULT_FAILURE_LIMIT
        [gave_up] = board.events(task_id, "gave_up")
        assert gave_up.payload is not None
        assert "by" not in gave_up.payload


@pytest.mark.interop
def test_watchers_resets_an_infrastructure_crash_loop(
    crash_looped: CrashLooped, watchers: WatchersCli
) -> None:
    """The SIGKILL loop goes back to ready, counter cleared, with an unblocked event and a comment."""
    board, infra = crash_looped.board, crash_looped.infra
    [gave_up] = board.events(infra, "gave_up")

    records = watchers.once(board.path, **SETTINGS)

    assert [(r["task_id"], r["action"], r["reason"], r["applied"]) for r in records] == [
        (infra, "reset", "infra_crash_loop", True)
    ]
    task = board.task(infra)
    assert (task.status, task.consecutive_failures, task.last_failure_error) == ("ready", 0, None)
    [unblocked] = board.events(infra, "unblocked")
    assert unblocked.payload is not None
    assert unblocked.payload["by"] == "watchers"
    assert unblocked.payload["reset"] == 1
    assert unblocked.payload["gave_up_event_id"] == gave_up.id
    [comment] = board.comments(infra)
    assert comment.author == "watchers"
    assert "reset" in comment.body


@pytest.mark.interop
def test_watchers_leaves_a_task_caused_crash_loop_blocked(
    crash_looped: CrashLooped, watchers: WatchersCli
) -> None:
    """Workers that exited 1 by themselves are the task's fault: no reset, nothing written."""
    board, task_id = crash_looped.board, crash_looped.task_caused
    before = board.state(task_id)

    records = watchers.once(board.path, **SETTINGS)

    assert task_id not in {r["task_id"] for r in records}
    assert board.state(task_id) == before
    assert board.task(task_id).status == "blocked"
    assert board.comments(task_id) == []


@pytest.mark.interop
def test_hermes_dispatches_a_reset_task_again(
    crash_looped: CrashLooped, watchers: WatchersCli
) -> None:
    """After the reset Hermes's dispatcher spawns a worker for the task on a new run."""
    board, infra = crash_looped.board, crash_looped.infra
    watchers.once(board.path, **SETTINGS)

    assert board.dispatch() == [infra]
    task = board.task(infra)
    assert (task.status, task.worker_pid) == ("running", board.worker(infra).pid)
    assert len(board.runs(infra)) == kb.DEFAULT_FAILURE_LIMIT + 1


@pytest.mark.interop
def test_the_give_up_after_max_resets_is_escalated_once_and_stays_blocked(
    crash_looped: CrashLooped, watchers: WatchersCli
) -> None:
    """With max_resets 1 the next give-up is escalated, not reset; then nothing more is written."""
    board, infra = crash_looped.board, crash_looped.infra
    watchers.once(board.path, **SETTINGS)
    crash_loop(board, {infra: "sigkill"})
    second_give_up = board.events(infra, "gave_up")[-1]

    records = watchers.once(board.path, **SETTINGS)

    assert [(r["task_id"], r["action"], r["reason"], r["applied"]) for r in records] == [
        (infra, "escalate", "reset_limit", True)
    ]
    task = board.task(infra)
    assert (task.status, task.consecutive_failures) == ("blocked", kb.DEFAULT_FAILURE_LIMIT)
    [escalated] = board.events(infra, "escalated")
    assert escalated.payload is not None
    assert escalated.payload["by"] == "watchers"
    assert escalated.payload["gave_up_event_id"] == second_give_up.id
    assert len(board.events(infra, "unblocked")) == 1
    assert [c.author for c in board.comments(infra)] == ["watchers", "watchers"]
    before = board.state(infra)

    assert watchers.once(board.path, **SETTINGS) == []
    assert board.state(infra) == before
