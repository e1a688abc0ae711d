"""The daemon's pass over an unchanged board with nothing due."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

from bench.measure.timing import timed


def unchanged_count(daemon: Any) -> float:
    """Passes the daemon's own metrics counted as over an unchanged board."""
    return sum(
        daemon.metrics.registry.get_sample_value(
            "watchers_ticks_total", {"watcher": w, "outcome": "unchanged"}
        )
        or 0.0
        for w in ("auto-heal", "distress", "budget")
    )


def bench_unchanged(path: Path, config: Path, n: int) -> dict[str, Any]:
    """The daemon's pass over an unchanged board with nothing due: each watcher's sweep
    over this board after two full passes (the second sees the WAL the first one left),
    timed in-process on the daemon's own code (no scheduler thread runs)."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from watchers.daemon import Daemon
    from watchers.settings import load_settings

    daemon = Daemon(lambda: load_settings(config), [path])
    scheduler = BackgroundScheduler(timezone=UTC)
    passes = daemon.passes  # the daemon's own jobs, sweep and wakes (watchers.passes)
    out: dict[str, Any] = {"problems": []}
    try:
        daemon._schedule(scheduler, daemon.settings, [path])
        for _ in range(2):
            for key in list(passes.jobs):
                passes.tick(key)
        full = sum(j.full for j in passes.jobs.values())
        unchanged_before = unchanged_count(daemon)
        for name in ("auto-heal", "distress", "budget"):
            samples, _ = timed(n, passes.sweep, name)
            out[name] = samples.summary(4, ("median", "p95"))
        unchanged = unchanged_count(daemon) - unchanged_before
        out["full_passes_during"] = sum(j.full for j in passes.jobs.values()) - full
        out["unchanged_passes"] = int(unchanged)
        if out["full_passes_during"] or unchanged != 3 * n:
            out["problems"].append(
                f"unchanged-pass bench: {out['full_passes_during']} full passes, "
                f"{unchanged} of {3 * n} passes unchanged"
            )
        out["median_ms"] = max(out[w]["median_ms"] for w in ("auto-heal", "distress", "budget"))
    finally:
        daemon.probe.close()
        daemon.metrics.close()
    return out
