"""Heal time: workers SIGKILLed one at a time under the daemon; how long each task stays
`running` after its worker died, and how it was healed."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.measure.daemon import DaemonRun
from bench.measure.timing import Samples
from bench.procfs import kib, proc_status
from bench.targets import POLL_S

KILL_PHASE_LIMIT_S = 180.0


def kill_and_measure(
    d: DaemonRun,
    path: Path,
    disp: Any,
    run_ids: dict[str, int],
    n_kills: int,
    rng: random.Random,
) -> dict[str, Any]:
    victims = rng.sample(sorted(disp.workers), n_kills)
    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    pending: dict[str, float] = {}  # task id -> kill time (monotonic)
    heal: dict[str, float] = {}
    new_status: dict[str, str] = {}
    kill_wall: dict[str, float] = {}
    rss_samples: list[tuple[float, int]] = []
    start = time.monotonic()
    deadline = start + KILL_PHASE_LIMIT_S
    next_kill = start + rng.uniform(2.0, 6.0)
    next_rss = start
    queue = list(victims)
    try:
        while (queue or pending) and time.monotonic() < deadline:
            now = time.monotonic()
            if queue and now >= next_kill:
                tid = queue.pop(0)
                proc = disp.workers[tid]
                kill_wall[tid] = time.time()
                pending[tid] = time.monotonic()
                proc.kill()
                proc.wait(timeout=5)  # reaped: the PID is gone, as when init reaps it
                next_kill = time.monotonic() + rng.uniform(2.0, 6.0)
            if pending:
                ids = list(pending)
                marks = ",".join("?" * len(ids))
                rows = ro.execute(
                    f"SELECT id, status FROM tasks WHERE id IN ({marks})", ids
                ).fetchall()
                seen_at = time.monotonic()
                for tid, status in rows:
                    if status != "running":
                        heal[tid] = seen_at - pending.pop(tid)
                        new_status[tid] = status
            if now >= next_rss:
                rss = kib(proc_status(d.proc.pid).get("VmRSS"))
                if rss is not None:
                    rss_samples.append((round(now - d.started_mono, 1), rss))
                next_rss = now + 1.0
            if d.proc.poll() is not None:
                raise RuntimeError(f"daemon exited during the kill phase: {d.proc.returncode}")
            wake = time.monotonic() + POLL_S
            if queue:
                wake = min(wake, next_kill)
            time.sleep(max(0.0, wake - time.monotonic()))
        # the heal rows: each run closed as crashed by the watchers
        checked = 0
        for tid in heal:
            run = ro.execute(
                "SELECT outcome FROM task_runs WHERE id = ?", (run_ids[tid],)
            ).fetchone()
            ev = ro.execute(
                "SELECT payload FROM task_events WHERE task_id = ? AND kind = 'crashed' "
                "ORDER BY id DESC LIMIT 1",
                (tid,),
            ).fetchone()
            by = json.loads(ev[0]).get("by") if ev and ev[0] else None
            if run and run[0] == "crashed" and by == "watchers":
                checked += 1
    finally:
        ro.close()
    times = Samples([heal[t] for t in victims if t in heal], unit="s")
    return {
        "kills": len(victims) - len(queue),
        "healed": len(times),
        "unhealed": sorted(pending) + queue,
        **times.summary(2),
        "samples_s": [round(t, 2) for t in times.values],
        "new_status": sorted(set(new_status.values())),
        "heals_verified": checked,
        "phase_s": round(time.monotonic() - start, 1),
        "rss_samples": rss_samples,
        "victims": victims,
    }
