"""Process control both benchmarks share: phases, stopping workers, the daemon's child
process, limits and signals. (What /proc says is in procfs.py.)"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKER_EXIT_WAIT_S = 10.0


@dataclass
class Phases:
    times: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.times[name] = round(time.monotonic() - t0, 2)
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {self.times[name]:.1f} s", flush=True)


def stop_workers(disp: Any) -> dict[str, int]:
    """Close every worker's stdin (they exit on EOF), wait bounded, kill leftovers."""
    procs: list[subprocess.Popen[bytes]] = list(disp.workers.values())
    for p in procs:
        if p.stdin is not None:
            with contextlib.suppress(OSError):
                p.stdin.close()
    deadline = time.monotonic() + WORKER_EXIT_WAIT_S
    killed = 0
    for p in procs:
        try:
            p.wait(timeout=max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            killed += 1
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
    leftover = sum(1 for p in procs if p.poll() is None)
    disp.workers.clear()
    with contextlib.suppress(sqlite3.Error):
        disp.conn.close()
    return {"workers": len(procs), "killed_after_timeout": killed, "still_running": leftover}


def _die_with_parent() -> None:
    """In the daemon's child process: SIGTERM it if the benchmark dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def watchers_argv() -> list[str]:
    exe = Path(sys.executable).parent / "watchers"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "watchers"]


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)
