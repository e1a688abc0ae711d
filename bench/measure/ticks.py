"""Steady-state ticks, in-process on the board: the auto-heal tick as the daemon makes it
(the board opened, read, closed), and any watcher's ticks after its first; each must
write nothing."""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.measure.timing import pct, profile_ticks
from bench.targets import TARGET_TICK_MS


def board_fingerprint(path: Path) -> tuple[Any, ...]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return tuple(
            conn.execute(
                "SELECT (SELECT COALESCE(MAX(id), 0) FROM task_events), "
                "(SELECT COUNT(*) FROM task_events), (SELECT COALESCE(MAX(id), 0) FROM task_runs), "
                "(SELECT COUNT(*) FROM task_comments), "
                "(SELECT group_concat(status || '=' || n) FROM "
                "  (SELECT status, COUNT(*) AS n FROM tasks GROUP BY status ORDER BY status)), "
                "(SELECT SUM(consecutive_failures) FROM tasks)"
            ).fetchone()
        )
    finally:
        conn.close()


def bench_tick(path: Path, n_ticks: int, profile: bool) -> dict[str, Any]:
    from watchers.autoheal.watcher import AutoHeal
    from watchers.clock import SystemClock
    from watchers.probe import ProcessProbe
    from watchers.runner import run_tick
    from watchers.settings import Settings
    from watchers.store.board import BoardStore

    settings = Settings()
    before = board_fingerprint(path)
    watch = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    version0 = watch.execute("PRAGMA data_version").fetchone()[0]
    probe = ProcessProbe()
    heal = AutoHeal(probe)
    clock = SystemClock()
    problems: list[str] = []

    def one() -> Any:
        """A pass as the daemon makes it: the board opened, read, closed."""
        store = BoardStore.open(path)
        try:
            return run_tick(heal, store, settings, clock)
        finally:
            store.close()

    try:
        t0 = time.perf_counter()
        warm = one()
        warm_ms = (time.perf_counter() - t0) * 1000
        watching_after_warmup = probe.watching
        if warm.error or warm.outcomes or warm.skipped:
            problems.append(
                f"warm-up tick: error={warm.error} actions={len(warm.outcomes)} "
                f"skipped={len(warm.skipped)}"
            )
        samples: list[float] = []
        actions = 0
        for _ in range(n_ticks):
            t0 = time.perf_counter()
            rep = one()
            samples.append((time.perf_counter() - t0) * 1000)
            actions += len(rep.outcomes)
            if rep.error or rep.skipped:
                problems.append(f"tick error={rep.error} skipped={len(rep.skipped)}")
        prof_text = None
        if profile or statistics.median(samples) > TARGET_TICK_MS:
            prof_text = profile_ticks(one, 20)
        gave_up = len(heal._observers.peek(path).candidates)  # type: ignore[union-attr]
    finally:
        probe.close()
    version1 = watch.execute("PRAGMA data_version").fetchone()[0]
    watch.close()
    after = board_fingerprint(path)
    wrote_nothing = actions == 0 and version0 == version1 and before == after
    if not wrote_nothing:
        problems.append(
            f"steady-state ticks wrote: actions={actions} data_version {version0}->{version1}"
        )
    return {
        "n": len(samples),
        "median_ms": round(statistics.median(samples), 3),
        "p95_ms": round(pct(samples, 95), 3),
        "min_ms": round(min(samples), 3),
        "max_ms": round(max(samples), 3),
        "warmup_ms": round(warm_ms, 1),
        "workers_watched": watching_after_warmup,
        "gave_up_candidates": gave_up,
        "actions_in_steady_state": actions,
        "wrote_nothing": wrote_nothing,
        "problems": problems,
        "profile": prof_text,
    }


def measure_watcher_ticks(
    name: str,
    make_watcher: Callable[[Any], Any],
    memory_of: Callable[[Any, Any, Any], dict[str, Any]],
    target_ms: float,
    path: Path,
    config: Path,
    n_ticks: int,
    profile: bool,
) -> dict[str, Any]:
    """One watcher's ticks, in-process on the board: the first (it builds the watcher's
    memory) reported apart, then `n_ticks` timed ones, which must write nothing."""
    from watchers.clock import SystemClock
    from watchers.probe import ProcessProbe
    from watchers.runner import run_tick
    from watchers.settings import load_settings
    from watchers.store.board import BoardStore

    settings = load_settings(config)
    before = board_fingerprint(path)
    watch = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    version0 = watch.execute("PRAGMA data_version").fetchone()[0]
    probe = ProcessProbe()
    store = BoardStore.open(path)
    watcher = make_watcher(probe)
    clock = SystemClock()
    problems: list[str] = []
    try:
        t0 = time.perf_counter()
        first = run_tick(watcher, store, settings, clock)
        first_ms = (time.perf_counter() - t0) * 1000
        if first.error or first.outcomes or first.skipped:
            done = [
                (o.action.kind.value, o.action.reason, o.action.task_id) for o in first.outcomes
            ]
            problems.append(
                f"{name} first tick: error={first.error} actions={done[:5]} "
                f"({len(first.outcomes)}) skipped={len(first.skipped)}"
            )
        samples: list[float] = []
        actions = 0
        for _ in range(n_ticks):
            t0 = time.perf_counter()
            rep = run_tick(watcher, store, settings, clock)
            samples.append((time.perf_counter() - t0) * 1000)
            actions += len(rep.outcomes)
            if rep.error or rep.skipped:
                problems.append(f"{name} tick error={rep.error} skipped={len(rep.skipped)}")
        prof_text = None
        if profile or statistics.median(samples) > target_ms:
            prof_text = profile_ticks(lambda: run_tick(watcher, store, settings, clock), 20)
        memory = memory_of(watcher, store, settings)
    finally:
        store.close()
        probe.close()
    version1 = watch.execute("PRAGMA data_version").fetchone()[0]
    watch.close()
    after = board_fingerprint(path)
    wrote_nothing = actions == 0 and version0 == version1 and before == after
    if not wrote_nothing:
        problems.append(
            f"steady-state {name} ticks wrote: actions={actions} "
            f"data_version {version0}->{version1}"
        )
    return {
        "n": len(samples),
        "median_ms": round(statistics.median(samples), 3),
        "p95_ms": round(pct(samples, 95), 3),
        "min_ms": round(min(samples), 3),
        "max_ms": round(max(samples), 3),
        "first_tick_ms": round(first_ms, 1),
        "actions_in_steady_state": actions,
        "wrote_nothing": wrote_nothing,
        **memory,
        "problems": problems,
        "profile": prof_text,
    }
