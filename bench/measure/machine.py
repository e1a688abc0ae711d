"""The machine and the code the figures were taken on (for the one-board run and for the
fleet), and the machine's pace."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sqlite3
import subprocess
import time
from typing import Any

from bench.procfs import kib, proc_status
from bench.targets import ROOT


def cpu_model() -> str:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return model


def machine_facts() -> dict[str, Any]:
    model = cpu_model()
    mem = kib(proc_status(os.getpid()).get("VmRSS"))
    total_mem = None
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as fh:
        total_mem = kib(fh.readline().split(":", 1)[1])
    import psutil

    from watchers import __version__

    try:
        from importlib.metadata import version

        hermes = version("hermes-agent")
    except Exception:
        hermes = "?"
    git = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for key, cmd in (
            ("head", ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
            ("dirty", ["git", "-C", str(ROOT), "status", "--porcelain", "--", "watchers"]),
        ):
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
            git[key] = out.stdout.strip() if key == "head" else out.stdout.split("\n")
        git["dirty"] = sorted(line[3:] for line in git.get("dirty", []) if line.strip())
    return {
        "git": git,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "mem_total_mib": round(total_mem / 1024) if total_mem else None,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "psutil": psutil.__version__,
        "hermes_agent": hermes,
        "kanban_watchers": __version__,
        "kernel": platform.release(),
        "bench_rss_at_start_kib": mem,
        "python_loop_1m_ms": python_loop_ms(),
    }


def python_loop_ms() -> float:
    """The machine's pace when the figures were taken: a million-step Python loop (best
    of three). Shared hosts vary by the hour; this puts a run's figures in context."""
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1)


def fleet_machine_facts() -> dict[str, Any]:
    model = cpu_model()
    from watchers import __version__

    head = dirty = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        head = out.stdout.strip()
        out = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "watchers"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        dirty = sorted(line[3:] for line in out.stdout.split("\n") if line.strip())
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        "kanban_watchers": __version__,
        "git_head": head,
        "uncommitted_in_watchers": dirty,
    }
