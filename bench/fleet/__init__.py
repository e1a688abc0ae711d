"""kanban-watchers fleet benchmark: many boards under one `watchers run`.

`.venv/bin/python -m bench.fleet` (about 4-5 minutes on 2 cores). Two scenarios, each
one real `watchers run` subprocess at default settings (auto-heal 15 s, distress 30 s,
budget 60 s) with HTTP on a free loopback port, configured by a TOML file in a temp
directory (the `boards` setting and `[http] listen`; no secrets):

  1. "101 boards" (`--boards N`): N-1 empty boards and one board with 200 `running`
     tasks claimed by this host on live workers (claims 60 s old: past the 30 s start
     grace). Once the daemon logs "first round done", wait `--settle-seconds` (60), then
     measure its CPU over `--idle-seconds` (60) from /proc/<pid>/stat and its VmRSS,
     fds and threads at the end. Targets: idle CPU <= 0.2 % of one core, RSS <= 60 MiB.
  2. "1,000 boards" (`--thousand/--no-thousand`): 999 empty boards and one with 20 live
     workers. Time to "first round done" and to /readyz answering 200; then one worker
     is SIGKILLed (and reaped) and its task is read every 100 ms (read-only, bounded
     60 s) until it leaves `running`; then CPU over 30 s, RSS, fds, threads. Verdicts:
     starts, ready, heals.

Empty boards are one `create_board` file copied. Prints a table and writes
bench/out/fleet.json; exits 0 when every target passes, else 1.

Every wait is bounded. However the run ends, the daemon (started in a session of its
own) gets SIGTERM, then SIGKILL to its process group; workers are stopped by closing
their stdin, then killed by pid; the temp directory is removed. Workers also exit when
this process dies (they read a pipe from it) and the daemon gets a parent-death signal.

Where things are:

  scenario.py  the boards, their workers and the daemon's TOML; one scenario; `collect`
               runs both (python -m bench runs it too)
  daemon.py    `watchers run` over the boards: its log read as it grows, start to first
               round and /readyz, shutdown
  measure.py   CPU over a window (per thread, with ticks from /metrics), memory, fds; a
               worker SIGKILLed and its heal timed
  report.py    the table's rows (bench/report.py prints them too) and the summary
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.targets import OUT_DIR

OUT_PATH = OUT_DIR / "fleet.json"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--boards", type=int, default=101, help="boards in scenario 1 (>= 1)")
    ap.add_argument("--workers", type=int, default=200, help="live workers in scenario 1")
    ap.add_argument(
        "--thousand",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run scenario 2 (1,000 boards)",
    )
    ap.add_argument("--thousand-boards", type=int, default=1000)
    ap.add_argument("--thousand-workers", type=int, default=20)
    ap.add_argument("--idle-seconds", type=float, default=60.0, help="scenario 1's CPU window")
    ap.add_argument("--settle-seconds", type=float, default=60.0, help="after the first round")
    ap.add_argument("--thousand-idle-seconds", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=OUT_PATH)
    return ap
