"""The fleet's figures: CPU over an idle window (per thread, with the ticks /metrics
counted around it), memory, threads and fds; one worker SIGKILLed and its heal timed."""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.fleet.daemon import DaemonRun, _check_alive, http_get
from bench.procfs import cpu_seconds, fd_counts, kib, proc_status, thread_cpu
from bench.targets import POLL_S

HEAL_TIMEOUT_S = 60.0
SCRAPE_TIMEOUT_S = 15.0  # /metrics (a busy daemon with 1,000 boards answers slowly)
SCRAPE_PAUSE_S = 2.0  # between a /metrics scrape and the CPU window's edge


_METRIC = re.compile(
    r"^(watchers_ticks_total|watchers_tick_duration_seconds_sum)\{([^}]*)\} ([0-9.eE+-]+)$"
)


def scrape(d: DaemonRun) -> dict[str, Any]:
    """Tick counts and seconds in ticks by watcher from /metrics, plus its size and time."""
    t0 = time.monotonic()
    status, body = http_get(d.port, "/metrics", SCRAPE_TIMEOUT_S)
    took = time.monotonic() - t0
    ticks: Counter[str] = Counter()
    tick_s: Counter[str] = Counter()
    for line in body.decode("utf-8", "replace").splitlines():
        m = _METRIC.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        watcher = labels.get("watcher", "?")
        if m.group(1) == "watchers_ticks_total":
            ticks[f"{watcher}:{labels.get('outcome', '?')}"] += float(m.group(3))
        else:
            tick_s[watcher] += float(m.group(3))
    return {
        "status": status,
        "bytes": len(body),
        "scrape_s": round(took, 3),
        "ticks": dict(ticks),
        "tick_seconds": dict(tick_s),
    }


def idle_window(d: DaemonRun, seconds: float) -> dict[str, Any]:
    """CPU over `seconds` (% of one core), per thread, and ticks run in the window (from
    /metrics scraped outside the window)."""
    _check_alive(d)
    before = scrape(d)
    time.sleep(SCRAPE_PAUSE_S)
    d.log.poll()
    lines0 = d.log.lines
    th0 = thread_cpu(d.proc.pid)
    c0, w0 = cpu_seconds(d.proc.pid), time.monotonic()
    end = w0 + seconds
    while time.monotonic() < end:
        _check_alive(d)
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
    c1, w1 = cpu_seconds(d.proc.pid), time.monotonic()
    th1 = thread_cpu(d.proc.pid)
    d.log.poll()
    lines1 = d.log.lines
    time.sleep(SCRAPE_PAUSE_S)
    after = scrape(d)
    if c0 is None or c1 is None:
        raise RuntimeError("daemon CPU counters unreadable")
    wall = w1 - w0
    order = sorted(th1)
    cpu = c1 - c0
    per_thread = sorted(
        ((tid, round(th1[tid] - th0.get(tid, 0.0), 2)) for tid in th1), key=lambda x: -x[1]
    )
    ticks = {
        k: round(v - before["ticks"].get(k, 0.0))
        for k, v in after["ticks"].items()
        if v - before["ticks"].get(k, 0.0) > 0
    }
    tick_s = {
        k: round(v - before["tick_seconds"].get(k, 0.0), 3)
        for k, v in after["tick_seconds"].items()
    }
    return {
        "window_s": round(wall, 2),
        "cpu_s": round(cpu, 3),
        "cpu_pct_one_core": round(cpu / wall * 100.0, 3),
        # start order: main 0, then the daemon's own threads (change feed, scheduler,
        # reflex, http...) before the tick pool's, which start on demand
        "threads_by_cpu_s": [
            {"tid": tid, "start_rank": order.index(tid), "cpu_s": s} for tid, s in per_thread[:6]
        ],
        "ticks_in_window_approx": ticks,
        "tick_wall_seconds_in_window_approx": tick_s,
        "log_lines_in_window": lines1 - lines0,
        "metrics_status": after["status"],
        "metrics_bytes": after["bytes"],
        "metrics_scrape_s": after["scrape_s"],
    }


def snapshot(d: DaemonRun) -> dict[str, Any]:
    st = proc_status(d.proc.pid)
    rss = kib(st.get("VmRSS"))
    hwm = kib(st.get("VmHWM"))
    return {
        "pid": d.proc.pid,
        "age_s": round(time.monotonic() - d.started_mono, 1),
        "rss_mib": round(rss / 1024, 1) if rss is not None else None,
        "hwm_mib": round(hwm / 1024, 1) if hwm is not None else None,
        "threads": int(st.get("Threads", "0")),
        "fds": fd_counts(d.proc.pid),
        "cpu_total_s": cpu_seconds(d.proc.pid),
    }


def kill_one_and_measure(board: Path, disp: Any) -> dict[str, Any]:
    """SIGKILL the worker whose pid is in a running task's worker_pid, reap it, and read
    the task every 100 ms until it leaves `running` (bounded)."""
    ro = sqlite3.connect(f"file:{board}?mode=ro", uri=True, timeout=5)
    try:
        row = ro.execute(
            "SELECT id, worker_pid, current_run_id FROM tasks "
            "WHERE status = 'running' AND worker_pid IS NOT NULL ORDER BY id LIMIT 1"
        ).fetchone()
        if row is None:
            raise RuntimeError("no running task with a worker on the board")
        tid, pid, run_id = row
        proc = disp.workers.get(tid)
        if proc is None or proc.pid != pid:
            raise RuntimeError(f"task {tid}'s worker_pid {pid} is not one of our workers")
        t_kill = time.monotonic()
        proc.kill()
        proc.wait(timeout=5)  # reaped: the pid is gone, as when init reaps it
        disp.killed.add(tid)
        status = "running"
        seen_s = None
        deadline = t_kill + HEAL_TIMEOUT_S
        while time.monotonic() < deadline:
            r = ro.execute("SELECT status FROM tasks WHERE id = ?", (tid,)).fetchone()
            status = r[0] if r else "missing"
            if status != "running":
                seen_s = time.monotonic() - t_kill
                break
            time.sleep(POLL_S)
        run = ro.execute("SELECT outcome FROM task_runs WHERE id = ?", (run_id,)).fetchone()
    finally:
        ro.close()
    return {
        "task": tid,
        "pid": pid,
        "heal_s": round(seen_s, 2) if seen_s is not None else None,
        "new_status": status,
        "run_outcome": run[0] if run else None,
    }
