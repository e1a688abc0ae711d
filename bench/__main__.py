"""kanban-watchers benchmark: `make bench` (= .venv/bin/python -m bench).

One run, on one machine:
  1. builds a 100,000-task Hermes board with realistic history (distress history
     included: rate limits, 401s, reassignments, `[BLOCKED]` cards, Hermes profiles on
     3 providers; budget history included: budget lines, over-budget tasks with their
     `iteration_budget` cards, warnings) and 1,000 `running` tasks claimed by this host
     on 1,000 live workers, well within their budgets;
  2. times the steady-state auto-heal tick in-process (must write nothing);
  2b. times the steady-state distress tick in-process (must write nothing);
  2c. times the steady-state budget tick in-process (must write nothing), its first
      tick (loading every open task) apart;
  3. times Hermes 0.19.0's own `detect_crashed_workers` on the same board;
  4. runs `watchers run` at default settings (plus the profile map), SIGKILLs workers
     one at a time and measures how long each task stays `running` after its worker died;
  5. reads the daemon's RSS after it has run for at least 60 s;
  6. prints a summary with PASS/FAIL per target and writes bench/out/results.json.

Every wait is bounded; workers, the daemon and the temp directory are cleaned up
however the run ends (workers also exit by themselves when this process dies: they
block reading a pipe from it; the daemon gets SIGTERM from the kernel if we die).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.board import build_board, start_running, write_profiles
from bench.common import Phases, _on_signal, _raise_nofile, stop_workers
from bench.fleet import parser as fleet_parser
from bench.fleet.scenario import collect as fleet_collect
from bench.measure.budget import bench_budget
from bench.measure.daemon import (
    DaemonRun,
    daemon_log_summary,
    rss_after_a_minute,
    start_daemon,
    stop_daemon,
    wait_first_round,
)
from bench.measure.distress import bench_distress
from bench.measure.floor import empty_board_daemon, libraries_alone
from bench.measure.heal import kill_and_measure
from bench.measure.hermes import bench_hermes
from bench.measure.machine import machine_facts
from bench.measure.new_checks import bench_new_checks
from bench.measure.ticks import bench_tick
from bench.measure.unchanged import bench_unchanged
from bench.report import report
from bench.targets import OUT_DIR


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--running", type=int, default=1_000)
    ap.add_argument("--ticks", type=int, default=60, help="timed steady-state ticks (>= 50)")
    ap.add_argument("--hermes-calls", type=int, default=25, help="timed Hermes calls (>= 20)")
    ap.add_argument("--kills", type=int, default=24, help="workers SIGKILLed (>= 20)")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument(
        "--profile",
        action="store_true",
        help="print a cProfile of 20 ticks of each watcher (auto-heal, distress, budget)",
    )
    ap.add_argument(
        "--fleet",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run bench/fleet's scenarios (101 boards idle, 1,000 boards; ~4 min)",
    )
    ap.add_argument("--out", type=Path, default=OUT_DIR / "results.json")
    args = ap.parse_args(argv)

    t_start = time.monotonic()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    _raise_nofile()
    stripped = sorted(
        k
        for k in os.environ
        if k.upper().startswith("WATCHERS_") or k == "HERMES_KANBAN_CRASH_GRACE_SECONDS"
    )
    for k in stripped:
        del os.environ[k]  # default settings, default Hermes grace

    tmp = Path(tempfile.mkdtemp(prefix="kw-bench-"))
    os.environ["HERMES_HOME"] = str(tmp / "hermes")
    os.environ["HERMES_KANBAN_HOME"] = str(tmp / "hermes")
    board = tmp / "kanban.db"
    config = tmp / "watchers.toml"
    rng = random.Random(args.seed + 1)
    phases = Phases()
    res: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    problems: list[str] = []
    disp: Any = None
    daemon: DaemonRun | None = None

    from watchers.logs import configure_logging

    configure_logging("info", "console", stream=sys.stderr)
    res["machine"] = machine_facts()
    m = res["machine"]
    print(
        f"machine: {m['cpus']} cores ({m['cpus_usable']} usable) {m['cpu_model']}, "
        f"{m['mem_total_mib']} MiB RAM, Python {m['python']}, SQLite {m['sqlite']}, "
        f"hermes-agent {m['hermes_agent']}, kernel {m['kernel']}; "
        f"pace: a 1M-step Python loop in {m['python_loop_1m_ms']} ms"
    )
    g = m.get("git") or {}
    print(f"code: {g.get('head')}, uncommitted in watchers/: {g.get('dirty') or 'none'}")
    if stripped:
        print(f"note: ignoring {', '.join(stripped)} (the benchmark uses defaults)")
    try:
        with phases.phase("1a build board"):
            write_profiles(tmp / "hermes", config)
            built = build_board(board, args.tasks, args.running, args.seed)
        res["board"] = {
            **built["counts"],
            "generate_s": built["generate_s"],
            "insert_s": built["insert_s"],
        }
        with phases.phase("1b claim + start workers"):
            disp, run_ids = start_running(board, built["running_ids"], built["heartbeat_plan"])
        res["board"]["running_workers"] = len(disp.workers)
        res["board"]["size_mib"] = round(board.stat().st_size / 2**20, 1)
        print(
            f"board: {res['board']['tasks']:,} tasks, {res['board']['task_runs']:,} runs, "
            f"{res['board']['task_events']:,} events, {res['board']['size_mib']} MiB; "
            f"{len(disp.workers)} live workers"
        )

        with phases.phase("2 in-process auto-heal ticks"):
            res["tick"] = bench_tick(board, args.ticks, args.profile)
        problems += res["tick"]["problems"]
        if res["tick"]["profile"]:
            print(res["tick"]["profile"])

        with phases.phase("2b in-process distress ticks"):
            res["distress"] = bench_distress(board, config, args.ticks, args.profile)
        problems += res["distress"]["problems"]
        if res["distress"]["profile"]:
            print(res["distress"]["profile"])

        with phases.phase("2c in-process budget ticks"):
            res["budget"] = bench_budget(board, config, args.ticks, args.profile)
        problems += res["budget"]["problems"]
        if res["budget"]["profile"]:
            print(res["budget"]["profile"])

        with phases.phase("2c+ in-process checks beyond liveness"):
            res["new_checks"] = bench_new_checks(board, config, args.ticks)
        problems += res["new_checks"]["problems"]

        with phases.phase("2d in-process passes over the unchanged board"):
            res["unchanged"] = bench_unchanged(board, config, 200)
        problems += res["unchanged"]["problems"]

        with phases.phase("3 Hermes detect_crashed_workers"):
            res["hermes"] = bench_hermes(board, args.hermes_calls, len(disp.workers))
        problems += res["hermes"]["problems"]

        with phases.phase("4 daemon: start + first round"):
            daemon = start_daemon(board, config, tmp / "daemon.log")
            res["daemon_start"] = wait_first_round(daemon, len(disp.workers))
        if not res["daemon_start"]["ok"]:
            problems.append(f"daemon first round not confirmed: {res['daemon_start']}")
        with phases.phase("4+5 daemon: kills, heal times, RSS"):
            res["heal"] = kill_and_measure(daemon, board, disp, run_ids, args.kills, rng)
            res["rss"] = rss_after_a_minute(daemon)  # once it has run for at least a minute
        if res["heal"]["unhealed"]:
            problems.append(f"not healed in time: {res['heal']['unhealed']}")
        if res["heal"]["new_status"] != ["ready"]:
            problems.append(f"killed tasks became {res['heal']['new_status']}, expected ready")
        if res["heal"]["heals_verified"] != res["heal"]["healed"]:
            problems.append("some heals were not closed as crashed by the watchers")
        with phases.phase("6 daemon shutdown (SIGTERM)"):
            res["shutdown"] = stop_daemon(daemon)
        res["daemon_log"] = daemon_log_summary(daemon, res["heal"]["victims"])
        if not {"auto-heal", "distress", "budget"} <= set(
            res["daemon_log"]["scheduled_watchers"] or []
        ):
            problems.append(f"daemon scheduled {res['daemon_log']['scheduled_watchers']}")
        if res["daemon_log"]["warnings_or_errors"]:
            problems.append(f"daemon log has problems: {res['daemon_log']['first_problems']}")
        if res["daemon_log"]["actions_on_other_tasks"]:
            problems.append(
                f"daemon acted on {res['daemon_log']['actions_on_other_tasks']} task(s) "
                "that were not killed"
            )
        if res["shutdown"]["exit_code"] != 0:
            problems.append(f"daemon exit code {res['shutdown']['exit_code']}")
        with phases.phase("6b memory floor: the libraries alone, the daemon on an empty board"):
            res["floor"] = {"libraries": libraries_alone(), "empty_board": empty_board_daemon(tmp)}
        if args.fleet:
            with phases.phase("7 fleet: 101 boards idle, 1,000 boards"):
                res["fleet"] = fleet_collect(fleet_parser().parse_args([]))
            if res["fleet"].get("aborted"):
                problems.append(f"fleet benchmark aborted: {res['fleet']['aborted']}")
    except BaseException as exc:
        problems.append(f"benchmark aborted: {type(exc).__name__}: {exc}")
        raise
    finally:
        if daemon is not None and daemon.proc.poll() is None:
            res["shutdown"] = stop_daemon(daemon)
        if disp is not None:
            res["cleanup"] = stop_workers(disp)
        shutil.rmtree(tmp, ignore_errors=True)
        res["problems"] = problems
        res["phases_s"] = phases.times
        res["total_s"] = round(time.monotonic() - t_start, 1)
        report(res, args.out)
    return 0 if res.get("all_pass") else 1


if __name__ == "__main__":
    sys.exit(main())
