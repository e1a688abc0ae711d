"""Hermes 0.19.0's own pass, `detect_crashed_workers`, on the same board."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.measure.timing import timed


def bench_hermes(path: Path, n_calls: int, n_running: int) -> dict[str, Any]:
    t0 = time.monotonic()
    from hermes_cli import kanban_db as kb

    import_s = time.monotonic() - t0
    grace = kb._resolve_crash_grace_seconds()
    host_prefix = f"{kb._claimer_id().split(':', 1)[0]}:"
    cols_before = _columns(path)

    t0 = time.monotonic()
    conn = kb.connect(path)  # first connect: header + integrity check + schema; excluded
    first_connect_s = time.monotonic() - t0
    problems: list[str] = []
    try:
        oldest_ok = conn.execute(
            "SELECT COUNT(*) FROM tasks WHERE status = 'running' AND worker_pid IS NOT NULL "
            "AND claim_lock LIKE ? AND started_at <= ?",
            (host_prefix + "%", int(time.time()) - grace),
        ).fetchone()[0]
        # One untimed call with _pid_alive counted: proves it checks every worker.
        real = kb._pid_alive
        seen: list[bool] = []

        def counting(pid: int | None) -> bool:
            alive = real(pid)
            seen.append(alive)
            return alive

        kb._pid_alive = counting
        try:
            first = kb.detect_crashed_workers(conn)
        finally:
            kb._pid_alive = real
        if first:
            problems.append(f"Hermes reclaimed {len(first)} task(s): {first[:5]}")
        if len(seen) != n_running or not all(seen):
            problems.append(
                f"Hermes checked {len(seen)} PIDs ({sum(seen)} alive), expected {n_running}"
            )
        watch = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        v0 = watch.execute("PRAGMA data_version").fetchone()[0]
        samples, outs = timed(n_calls, kb.detect_crashed_workers, conn)
        problems += [f"Hermes reclaimed {out[:5]}" for out in outs if out]
        v1 = watch.execute("PRAGMA data_version").fetchone()[0]
        watch.close()
        if v0 != v1:
            problems.append("Hermes's calls changed the board")
    finally:
        conn.close()
    cols_after = _columns(path)
    return {
        "n": len(samples),
        **samples.summary(3),
        "import_s": round(import_s, 2),
        "first_connect_s": round(first_connect_s, 2),
        "crash_grace_s": grace,
        "host_prefix": host_prefix,
        "running_past_grace": oldest_ok,
        "pids_checked_per_call": len(seen),
        "pids_alive": sum(seen),
        "schema_changed_by_hermes": sorted(cols_after - cols_before),
        "problems": problems,
    }


def _columns(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {
            f"{t}.{r[1]}"
            for t in ("tasks", "task_runs", "task_events")
            for r in conn.execute(f"PRAGMA table_info({t})")
        }
    finally:
        conn.close()
