"""Two `watchers once` and Hermes's own crash pass, at once on one board, reap each dead
worker exactly once."""

from __future__ import annotations

from collections import Counter

import pytest
from hermes_cli import kanban_db as kb

from tests.interop.interop_harness import HermesBoard, WatchersCli

ROUNDS = (
    pytest.param(False, id="cold-start"),
    *(pytest.param(True, id=f"gated-{n}") for n in range(1, 4)),
)
"""A cold start lets Hermes run while both watchers are still importing; a gated one
releases both watchers, fully loaded, the moment before Hermes's pass starts."""


@pytest.mark.interop
@pytest.mark.parametrize("gated", ROUNDS)
def test_each_dead_worker_is_reaped_exactly_once(
    hermes_board: HermesBoard, watchers: WatchersCli, gated: bool
) -> None:
    """Six dead and six live workers; afterwards every dead task has one crashed run, one
    crashed event and one failure, counted by exactly one of the three passes."""
    ids = [hermes_board.create(f"task {n}") for n in range(12)]
    assert sorted(hermes_board.dispatch()) == sorted(ids)
    dead, alive = ids[:6], ids[6:]
    runs = {t: hermes_board.task(t).current_run_id for t in ids}
    for n, task_id in enumerate(dead):
        hermes_board.kill(task_id, reap=n % 2 == 0)
    alive_before = {t: hermes_board.state(t) for t in alive}

    procs = [watchers.start_once(hermes_board.path, gated=gated) for _ in range(2)]
    for proc in procs:
        if gated:
            watchers.release(proc)
    with hermes_board.connect() as conn:
        by_hermes = kb.detect_crashed_workers(conn)
    outputs = [watchers.finish(proc) for proc in procs]

    records = [r for out in outputs for r in out]
    assert {r["action"] for r in records} <= {"reap"}
    assert {r["result"] for r in records} <= {"applied", "race_lost"}
    by_watchers = [r["task_id"] for r in records if r["applied"]]
    counted = Counter(by_watchers + by_hermes)
    assert counted == Counter(dead), f"watchers {by_watchers}, hermes {by_hermes}"
    for task_id in dead:
        task = hermes_board.task(task_id)
        assert task.consecutive_failures == 1, task_id
        assert task.status in {"ready", "blocked"}, task_id
        [run] = hermes_board.runs(task_id)
        assert run.id == runs[task_id]
        assert (run.outcome, run.ended_at is not None) == ("crashed", True)
        [crashed] = hermes_board.events(task_id, "crashed")
        assert crashed.run_id == run.id
    for task_id in alive:
        assert hermes_board.state(task_id) == alive_before[task_id]
