"""`watchers run` on the board: started, its first round, its RSS after a minute, its
shutdown, and what its log says."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import _die_with_parent, watchers_argv
from bench.procfs import cpu_seconds, kib, pidfd_count, proc_status
from bench.targets import SHUTDOWN_WAIT_S

DAEMON_FIRST_ROUND_TIMEOUT_S = 90.0
RSS_MIN_AGE_S = 60.0


@dataclass
class DaemonRun:
    proc: subprocess.Popen[bytes]
    log_path: Path
    started_mono: float

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        with contextlib.suppress(OSError), self.log_path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"event": line.rstrip(), "level": "raw"})
        return out


def start_daemon(path: Path, config: Path, log_path: Path) -> DaemonRun:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WATCHERS_")}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*watchers_argv(), "run", "--board", str(path), "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads run in the benchmark
        )
    return DaemonRun(proc, log_path, time.monotonic())


def wait_first_round(d: DaemonRun, n_workers: int) -> dict[str, Any]:
    """Started, and its first tick verified every worker (one pidfd each)."""
    deadline = time.monotonic() + DAEMON_FIRST_ROUND_TIMEOUT_S
    started = False
    fds = 0
    while time.monotonic() < deadline:
        if d.proc.poll() is not None:
            raise RuntimeError(f"daemon exited early with {d.proc.returncode}; see {d.log_path}")
        if not started:
            started = any(line.get("event") == "started" for line in d.log_lines())
        fds = pidfd_count(d.proc.pid)
        if started and fds >= n_workers:
            break
        time.sleep(0.2)
    return {
        "started_logged": started,
        "pidfds": fds,
        "first_round_s": round(time.monotonic() - d.started_mono, 2),
        "ok": started and fds >= n_workers,
    }


def rss_after_a_minute(d: DaemonRun) -> dict[str, Any]:
    """The daemon's memory (and threads, pidfds, CPU) once it has run for at least a minute."""
    wait_until = d.started_mono + RSS_MIN_AGE_S
    time.sleep(max(0.0, min(RSS_MIN_AGE_S, wait_until - time.monotonic())))
    st = proc_status(d.proc.pid)
    return {
        "after_s": round(time.monotonic() - d.started_mono, 1),
        "vmrss_kib": kib(st.get("VmRSS")),
        "vmhwm_kib": kib(st.get("VmHWM")),
        "threads": int(st.get("Threads", "0")),
        "pidfds": pidfd_count(d.proc.pid),
        "cpu_s": cpu_seconds(d.proc.pid),
    }


def stop_daemon(d: DaemonRun) -> dict[str, Any]:
    if d.proc.poll() is not None:
        return {"exit_code": d.proc.returncode, "shutdown_s": 0.0, "note": "already exited"}
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    try:
        code = d.proc.wait(timeout=SHUTDOWN_WAIT_S)
        note = "SIGTERM"
    except subprocess.TimeoutExpired:
        d.proc.kill()
        code = d.proc.wait(timeout=10)
        note = f"did not stop within {SHUTDOWN_WAIT_S:.0f}s; SIGKILLed"
    return {"exit_code": code, "shutdown_s": round(time.monotonic() - t0, 2), "note": note}


def daemon_log_summary(d: DaemonRun, victims: Sequence[str]) -> dict[str, Any]:
    lines = d.log_lines()
    actions = [ln for ln in lines if ln.get("event") == "action"]
    reaped = {ln.get("task") for ln in actions if ln.get("result") == "applied"}
    others = [ln for ln in actions if ln.get("task") not in set(victims)]
    bad = [
        ln
        for ln in lines
        if ln.get("level") in ("warning", "error", "critical", "raw")
        or ln.get("event") in ("tick failed", "guard tripped: holding actions", "tick crashed")
    ]
    scheduled = next((ln for ln in lines if ln.get("event") == "scheduled"), {})
    return {
        "scheduled_watchers": scheduled.get("watchers"),
        "log_lines": len(lines),
        "actions": len(actions),
        "applied_on_victims": len(reaped & set(victims)),
        "actions_on_other_tasks": len(others),
        "warnings_or_errors": len(bad),
        "first_problems": [ln.get("event") for ln in bad[:5]],
    }
