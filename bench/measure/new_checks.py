"""What the checks beyond liveness cost per pass on the benchmark board: the dispatcher
check (its whole pass, as the daemon makes it: the board opened, read, closed), and the
budget watcher's no-progress check (its pass with the check on, less the same pass with
it off, taken in alternation so both see the same machine)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.measure.ticks import BoardWatch, steady_state
from bench.measure.timing import Samples, timed
from bench.targets import TARGET_NEW_CHECK_MS


def bench_new_checks(path: Path, config: Path, n: int) -> dict[str, Any]:
    from watchers.budget.watcher import Budget
    from watchers.clock import SystemClock
    from watchers.dispatcher.watcher import Dispatcher
    from watchers.probe import ProcessProbe
    from watchers.runner import run_tick
    from watchers.settings import load_settings
    from watchers.store.board import BoardStore

    settings = load_settings(config)
    quiet = settings.model_copy(
        update={"budget": settings.budget.model_copy(update={"no_progress_seconds": None})}
    )
    clock = SystemClock()
    probe = ProcessProbe()
    watch = BoardWatch(path)
    problems: list[str] = []
    dispatcher = Dispatcher(probe)

    def dispatcher_pass() -> Any:
        store = BoardStore.open(path)
        try:
            return run_tick(dispatcher, store, settings, clock)
        finally:
            store.close()

    def stalled_read() -> Any:
        """The check's read as on a board where nothing was claimed for stall_seconds and
        ready work waits (every claim counts as too old): it stops once the stall is
        certain."""
        from watchers.dispatcher.observe import observe

        store = BoardStore.open(path)
        try:
            return observe(store, dispatcher.rules(settings), claimed_after=time.time())
        finally:
            store.close()

    def full_read() -> Any:
        """`watchers status` and the metrics' read: every ready task, exact counts."""
        from watchers.dispatcher.observe import observe

        store = BoardStore.open(path)
        try:
            return observe(store, dispatcher.rules(settings))
        finally:
            store.close()

    try:
        dispatcher_pass()
        passes, reports = timed(n, dispatcher_pass)
        stalled, _ = timed(max(10, n // 2), stalled_read)
        full, states = timed(max(10, n // 4), full_read)
        with_check, without = Budget(probe), Budget(probe)
        store = BoardStore.open(path)
        try:
            run_tick(with_check, store, settings, clock)
            run_tick(without, store, quiet, clock)
            on: list[float] = []
            off: list[float] = []
            budget_reports = []
            for _ in range(n):
                s_on, r_on = timed(1, run_tick, with_check, store, settings, clock)
                s_off, r_off = timed(1, run_tick, without, store, quiet, clock)
                on += s_on.values
                off += s_off.values
                budget_reports += r_on + r_off
        finally:
            store.close()
    finally:
        probe.close()
    steady = steady_state([*reports, *budget_reports], watch, "new checks", problems)
    share = statistics.median(on) - statistics.median(off)
    state = states[-1][0] if states else None
    return {
        "dispatcher": passes.summary(3, ("median", "p95")),
        "dispatcher_stalled_read": stalled.summary(3, ("median", "p95")),
        "dispatcher_full_read": {
            **full.summary(3, ("median", "p95")),
            "ready": getattr(state, "ready", None),
            "dispatchable": getattr(state, "dispatchable", None),
        },
        "budget_with_check": Samples(on).summary(3, ("median",)),
        "budget_without_check": Samples(off).summary(3, ("median",)),
        "no_progress_share_ms": round(share, 3),
        "target_ms": TARGET_NEW_CHECK_MS,
        **steady,
        "problems": problems,
    }
