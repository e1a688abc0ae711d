"""Where the daemon's memory starts: the libraries it is built on, alone, and the daemon
itself on an empty board. The 100,000-task figure is read beside these two.

The libraries' program (`python -c STACK`) imports what the daemon is built on (the
settings, logging, scheduling and metrics libraries, psutil, PyYAML, SQLite) and uses
each the least the daemon does: a settings model read, a JSON logger, a scheduler with
one interval job, a metrics registry served over HTTP on loopback, a connection opened
and closed. It holds no board, no watcher and none of this project's code.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import watchers_argv
from bench.measure.daemon import start_daemon, stop_daemon
from bench.procfs import kib, proc_status

SETTLE_S = 30.0  # the empty-board daemon's age when its RSS is read (first round long done)
FIRST_ROUND_TIMEOUT_S = 60.0

STACK = r"""
import sys, threading, time, sqlite3
sys.modules.setdefault("rich", None)  # as the `watchers` command does (watchers/launch.py)
import psutil, yaml, structlog
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry, Counter, make_wsgi_app
from pydantic import BaseModel
from pydantic_settings import BaseSettings
from wsgiref.simple_server import make_server

class Section(BaseModel):
    interval_seconds: float = 15.0

class Settings(BaseSettings):
    log_level: str = "info"
    section: Section = Section()

settings = Settings()
structlog.configure(processors=[structlog.processors.TimeStamper(fmt="iso"),
                                structlog.processors.JSONRenderer()])
log = structlog.get_logger()
registry = CollectorRegistry()
passes = Counter("passes_total", "passes", registry=registry)
server = make_server("127.0.0.1", 0, make_wsgi_app(registry))
threading.Thread(target=server.serve_forever, daemon=True).start()
scheduler = BackgroundScheduler()
scheduler.add_job(passes.inc, "interval", seconds=1)
scheduler.start()
sqlite3.connect(":memory:").close()
psutil.Process().create_time()
yaml.safe_load("a: 1")
log.info("started")
time.sleep(float(sys.argv[1]))
with open("/proc/self/status") as fh:
    print(next(line.split()[1] for line in fh if line.startswith("VmRSS:")))
"""


def libraries_alone(seconds: float = 5.0) -> dict[str, Any]:
    """VmRSS of a program that is only the daemon's libraries, each in use."""
    out = subprocess.run(
        [sys.executable, "-c", STACK, str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    lines = out.stdout.split()
    value = int(lines[-1]) if out.returncode == 0 and lines and lines[-1].isdigit() else None
    return {"vmrss_kib": value, "exit_code": out.returncode, "stderr": out.stderr[-300:]}


def empty_board_daemon(tmp: Path) -> dict[str, Any]:
    """`watchers run` at defaults (HTTP on, every watcher) on an empty board, its VmRSS
    once it has run for SETTLE_S seconds."""
    board = tmp / "empty" / "kanban.db"
    board.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*watchers_argv(), "init-board", str(board)], check=True, capture_output=True)
    config = tmp / "empty" / "watchers.toml"
    config.write_text("# defaults\n", encoding="utf-8")
    d = start_daemon(board, config, tmp / "empty" / "daemon.log")
    try:
        deadline = d.started_mono + FIRST_ROUND_TIMEOUT_S
        while time.monotonic() < deadline and d.proc.poll() is None:
            if b"first round done" in d.log_path.read_bytes():
                break
            time.sleep(0.2)
        time.sleep(max(0.0, d.started_mono + SETTLE_S - time.monotonic()))
        st = proc_status(d.proc.pid) if d.proc.poll() is None else {}
        return {
            "vmrss_kib": kib(st.get("VmRSS")),
            "after_s": round(time.monotonic() - d.started_mono, 1),
            "threads": int(st.get("Threads", "0")),
        }
    finally:
        stop_daemon(d)
