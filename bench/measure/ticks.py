"""Steady-state ticks, in-process on the board: the auto-heal tick as the daemon makes it
(the board opened, read, closed), and any watcher's ticks after its first; each must
write nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.measure.timing import once, profile_if_slow, timed
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


class BoardWatch:
    """Whether the board changed while it was watched: its fingerprint and SQLite's
    `data_version` (seen from a read-only connection of its own), before and after."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.before = board_fingerprint(path)
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        self.version0 = self.conn.execute("PRAGMA data_version").fetchone()[0]
        self.version1 = self.version0

    def close(self) -> bool:
        """Stop watching; True when nothing changed."""
        self.version1 = self.conn.execute("PRAGMA data_version").fetchone()[0]
        self.conn.close()
        after = board_fingerprint(self.path)
        return self.version0 == self.version1 and self.before == after


def steady_state(
    reports: list[Any], watch: BoardWatch, who: str, problems: list[str]
) -> dict[str, Any]:
    """The timed ticks' verdict, once the watcher has let go of the board: each tick that
    failed or skipped work is a problem, and so is any write (an action, a new
    `data_version`, a changed fingerprint)."""
    label = f"{who} " if who else ""
    actions = 0
    for rep in reports:
        actions += len(rep.outcomes)
        if rep.error or rep.skipped:
            problems.append(f"{label}tick error={rep.error} skipped={len(rep.skipped)}")
    wrote_nothing = watch.close() and actions == 0
    if not wrote_nothing:
        problems.append(
            f"steady-state {label}ticks wrote: actions={actions} "
            f"data_version {watch.version0}->{watch.version1}"
        )
    return {"actions_in_steady_state": actions, "wrote_nothing": wrote_nothing}


def bench_tick(path: Path, n_ticks: int, profile: bool) -> dict[str, Any]:
    from watchers.autoheal.watcher import AutoHeal
    from watchers.clock import SystemClock
    from watchers.probe import ProcessProbe
    from watchers.runner import run_tick
    from watchers.settings import Settings
    from watchers.store.board import BoardStore

    settings = Settings()
    watch = BoardWatch(path)
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
        warm, warm_ms = once(one)
        watching_after_warmup = probe.watching
        if warm.error or warm.outcomes or warm.skipped:
            problems.append(
                f"warm-up tick: error={warm.error} actions={len(warm.outcomes)} "
                f"skipped={len(warm.skipped)}"
            )
        samples, reports = timed(n_ticks, one)
        prof_text = profile_if_slow(profile, samples, TARGET_TICK_MS, one)
        gave_up = len(heal._observers.peek(path).candidates)  # type: ignore[union-attr]
    finally:
        probe.close()
    steady = steady_state(reports, watch, "", problems)
    return {
        "n": len(samples),
        **samples.summary(3),
        "warmup_ms": round(warm_ms, 1),
        "workers_watched": watching_after_warmup,
        "gave_up_candidates": gave_up,
        **steady,
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
    watch = BoardWatch(path)
    probe = ProcessProbe()
    store = BoardStore.open(path)
    watcher = make_watcher(probe)
    clock = SystemClock()
    problems: list[str] = []
    try:
        first, first_ms = once(run_tick, watcher, store, settings, clock)
        if first.error or first.outcomes or first.skipped:
            done = [
                (o.action.kind.value, o.action.reason, o.action.task_id) for o in first.outcomes
            ]
            problems.append(
                f"{name} first tick: error={first.error} actions={done[:5]} "
                f"({len(first.outcomes)}) skipped={len(first.skipped)}"
            )
        samples, reports = timed(n_ticks, run_tick, watcher, store, settings, clock)
        prof_text = profile_if_slow(
            profile, samples, target_ms, lambda: run_tick(watcher, store, settings, clock)
        )
        memory = memory_of(watcher, store, settings)
    finally:
        store.close()
        probe.close()
    steady = steady_state(reports, watch, name, problems)
    return {
        "n": len(samples),
        **samples.summary(3),
        "first_tick_ms": round(first_ms, 1),
        **steady,
        **memory,
        "problems": problems,
        "profile": prof_text,
    }
