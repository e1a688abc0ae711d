"""`watchers once` reaps workers that died on a board Hermes made and dispatched itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hermes_cli import kanban_db as kb

from tests.interop.interop_harness import HermesBoard, WatchersCli


@dataclass
class Reaped:
    """A Hermes board after `watchers once`: which workers were gone, zombies or alive."""

    board: HermesBoard
    gone: list[str]
    zombie: list[str]
    alive: list[str]
    pids: dict[str, int]
    runs: dict[str, int | None]
    alive_before: dict[str, dict[str, Any]]
    records: list[dict[str, Any]]

    @property
    def dead(self) -> list[str]:
        return self.gone + self.zombie


@pytest.fixture
def reaped(hermes_board: HermesBoard, watchers: WatchersCli) -> Reaped:
    """Six tasks dispatched by Hermes; two workers killed and waited for, two killed and left
    zombies, two alive; then one `watchers once` over the board."""
    ids = [hermes_board.create(f"task {n}") for n in range(6)]
    assert sorted(hermes_board.dispatch()) == sorted(ids)
    gone, zombie, alive = ids[:2], ids[2:4], ids[4:]
    pids = {t: hermes_board.worker(t).pid for t in ids}
    runs = {t: hermes_board.task(t).current_run_id for t in ids}
    assert None not in runs.values()
    for t in gone:
        hermes_board.kill(t, reap=True)
    for t in zombie:
        hermes_board.kill(t, reap=False)
    alive_before = {t: hermes_board.state(t) for t in alive}

    records = watchers.once(hermes_board.path)

    return Reaped(hermes_board, gone, zombie, alive, pids, runs, alive_before, records)


@pytest.mark.interop
def test_the_json_reports_one_applied_reap_per_dead_worker(reaped: Reaped) -> None:
    """Every record names the watcher, board, task, action, reason, evidence and applied."""
    by_task = {r["task_id"]: r for r in reaped.records}

    assert len(reaped.records) == len(by_task)
    assert set(by_task) == set(reaped.dead)
    for task_id, record in by_task.items():
        verdict = "gone" if task_id in reaped.gone else "zombie"
        assert record["watcher"] == "auto-heal"
        assert record["board"] == "default"
        assert record["action"] == "reap"
        assert record["reason"] == f"worker_{verdict}"
        assert record["applied"] is True
        evidence = record["evidence"]
        assert evidence["verdict"] == verdict
        assert evidence["pid"] == reaped.pids[task_id]
        assert evidence["run_id"] == reaped.runs[task_id]
        assert (evidence["failures_before"], evidence["failures"]) == (0, 1)


@pytest.mark.interop
def test_hermes_sees_each_dead_task_ready_again_with_one_failure(reaped: Reaped) -> None:
    """Status ready, claim and pid cleared, no open run, consecutive_failures 1."""
    for task_id in reaped.dead:
        task = reaped.board.task(task_id)
        assert task.status == "ready"
        assert (task.claim_lock, task.claim_expires, task.worker_pid) == (None, None, None)
        assert task.current_run_id is None
        assert task.consecutive_failures == 1
        assert task.last_failure_error is not None
        assert task.last_failure_error.startswith(f"pid {reaped.pids[task_id]} ")


@pytest.mark.interop
def test_hermes_sees_each_dead_run_closed_as_crashed_with_an_error(reaped: Reaped) -> None:
    """The one attempt is ended, outcome crashed, with an error text in Hermes's shape."""
    for task_id in reaped.dead:
        pid = reaped.pids[task_id]
        [run] = reaped.board.runs(task_id)
        assert run.id == reaped.runs[task_id]
        assert (run.status, run.outcome) == ("crashed", "crashed")
        assert run.ended_at is not None
        assert (run.claim_lock, run.worker_pid) == (None, None)
        assert run.metadata is not None
        assert run.metadata["by"] == "watchers"
        assert run.error is not None
        if task_id in reaped.zombie:
            assert run.error.startswith(f"pid {pid} killed by signal 9")
        else:
            assert run.error.startswith(f"pid {pid} not alive")


@pytest.mark.interop
def test_hermes_sees_one_crashed_event_by_watchers_per_dead_task(reaped: Reaped) -> None:
    """The event is on the closed run and its payload says who wrote it."""
    for task_id in reaped.dead:
        [event] = reaped.board.events(task_id, "crashed")
        assert event.run_id == reaped.runs[task_id]
        assert event.payload is not None
        assert event.payload["by"] == "watchers"
        assert event.payload["pid"] == reaped.pids[task_id]


@pytest.mark.interop
def test_tasks_with_live_workers_are_untouched(reaped: Reaped) -> None:
    """Their rows, runs and events are exactly what they were, and the workers still run."""
    for task_id in reaped.alive:
        assert reaped.board.state(task_id) == reaped.alive_before[task_id]
        assert reaped.board.task(task_id).status == "running"
        assert reaped.board.worker(task_id).poll() is None


@pytest.mark.interop
def test_hermes_can_claim_every_healed_task_again(reaped: Reaped) -> None:
    """`claim_task` on a reaped task returns it running, on a fresh run."""
    with reaped.board.connect() as conn:
        claimed = {t: kb.claim_task(conn, t) for t in reaped.dead}

    for task_id, task in claimed.items():
        assert task is not None, task_id
        assert task.status == "running"
        assert task.current_run_id not in (None, reaped.runs[task_id])


@pytest.mark.interop
def test_a_second_watchers_once_adds_nothing(reaped: Reaped, watchers: WatchersCli) -> None:
    """Nothing is left to heal: the JSON array is empty and no task, run or event changes."""
    before = {t: reaped.board.state(t) for t in reaped.dead + reaped.alive}

    assert watchers.once(reaped.board.path) == []
    assert {t: reaped.board.state(t) for t in before} == before


@pytest.mark.interop
def test_a_dead_worker_of_a_task_with_max_retries_1_blocks_it_with_gave_up(
    hermes_board: HermesBoard, watchers: WatchersCli
) -> None:
    """At the task's own limit the reap trips the breaker: blocked, crashed then gave_up."""
    task_id = hermes_board.create("one try only", max_retries=1)
    assert hermes_board.dispatch() == [task_id]
    pid = hermes_board.kill(task_id, reap=True)

    [record] = watchers.once(hermes_board.path)

    assert (record["task_id"], record["action"], record["applied"]) == (task_id, "reap", True)
    assert (record["evidence"]["failures"], record["evidence"]["failure_limit"]) == (1, 1)
    task = hermes_board.task(task_id)
    assert (task.status, task.consecutive_failures, task.current_run_id) == ("blocked", 1, None)
    [run] = hermes_board.runs(task_id)
    assert (run.outcome, run.ended_at is not None) == ("crashed", True)
    kinds = [e.kind for e in hermes_board.events(task_id)]
    assert kinds[-2:] == ["crashed", "gave_up"]
    [gave_up] = hermes_board.events(task_id, "gave_up")
    assert gave_up.payload is not None
    assert gave_up.payload["by"] == "watchers"
    assert gave_up.payload["failures"] == 1
    assert gave_up.payload["effective_limit"] == 1
    assert gave_up.payload["limit_source"] == "task"
    assert gave_up.payload["pid"] == pid
