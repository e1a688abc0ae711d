"""One scenario: N boards (empty ones copied from one, one with live workers), one
`watchers run` over them; and `collect`, which runs the scenarios asked for."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import Phases, _raise_nofile, stop_workers
from bench.fleet.daemon import (
    DaemonRun,
    _check_alive,
    free_port,
    kill_daemon_group,
    start_daemon,
    stop_daemon,
    wait_start,
)
from bench.fleet.measure import idle_window, kill_one_and_measure, snapshot
from bench.measure.machine import fleet_machine_facts as machine_facts
from bench.targets import CLAIM_BACKDATE_S


def make_boards(root: Path, n_boards: int) -> list[Path]:
    """`root/boards/bNNN/kanban.db`: one empty board, copied."""
    from watchers.store.schema import create_board

    template = root / "template" / "kanban.db"
    create_board(template)
    width = max(3, len(str(n_boards - 1)))
    paths = []
    for i in range(n_boards):
        p = root / "boards" / f"b{i:0{width}d}" / "kanban.db"
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, p)
        paths.append(p)
    return paths


def start_running(path: Path, n_workers: int) -> tuple[Any, dict[str, int]]:
    """`n_workers` tasks claimed by this host, each on a live /bin/sh worker; claims
    backdated past the start grace (as bench/board/running.py's start_running)."""
    from watchers.demo.dispatcher import DemoDispatcher

    disp = DemoDispatcher(path, light_workers=True)
    disp.conn.execute("PRAGMA synchronous=NORMAL")
    run_ids: dict[str, int] = {}
    try:
        for i in range(n_workers):
            claimed_at = int(time.time()) - CLAIM_BACKDATE_S
            tid = disp.create_task(f"fleet task {i}", "default", now=claimed_at - 5)
            run_ids[tid] = disp.claim(tid, now=claimed_at)
            disp.start_worker(tid)
            disp.heartbeat(tid, now=claimed_at + CLAIM_BACKDATE_S // 2)
        # no connection of ours stays open on the board while the daemon runs
        disp.conn.close()
    except BaseException:
        stop_workers(disp)
        raise
    return disp, run_ids


def write_config(path: Path, boards: list[Path], port: int) -> None:
    lines = ["boards = ["]
    lines += [f"  {json.dumps(str(b))}," for b in boards]
    lines += ["]", "", "[http]", f'listen = "127.0.0.1:{port}"', ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def scenario(
    res: dict[str, Any],
    tmp: Path,
    name: str,
    n_boards: int,
    n_workers: int,
    *,
    settle_s: float,
    idle_s: float,
    kill_one: bool,
    phases: Phases,
) -> None:
    """Fills `res` as it goes (a run cut short keeps what it measured)."""
    root = tmp / name
    root.mkdir()
    (root / "hermes").mkdir()
    disp: Any = None
    daemon: DaemonRun | None = None
    try:
        with phases.phase(f"{name}: boards + {n_workers} workers"):
            boards = make_boards(root, n_boards)
            disp, _ = start_running(boards[0], n_workers)
        res["running_board"] = str(boards[0].relative_to(root))
        port = free_port()
        config = root / "watchers.toml"
        write_config(config, boards, port)
        with phases.phase(f"{name}: daemon start -> first round + /readyz"):
            daemon = start_daemon(config, root / "daemon.log", port, root / "hermes")
            res["start"] = wait_start(daemon)
            res["after_first_round"] = snapshot(daemon)
        if kill_one and res["start"]["first_round_s"] is not None:
            with phases.phase(f"{name}: SIGKILL one worker -> task leaves running"):
                res["heal"] = kill_one_and_measure(boards[0], disp)
        if res["start"]["first_round_s"] is not None:
            fr = daemon.started_mono + res["start"]["first_round_s"]
            wait = fr + settle_s - time.monotonic()
            if wait > 0:
                with phases.phase(f"{name}: settle until {settle_s:.0f} s after first round"):
                    end = time.monotonic() + wait
                    while time.monotonic() < end:
                        _check_alive(daemon)
                        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            with phases.phase(f"{name}: idle window {idle_s:.0f} s"):
                res["idle"] = idle_window(daemon, idle_s)
                res["end"] = snapshot(daemon)
        with phases.phase(f"{name}: daemon shutdown (SIGTERM)"):
            res["shutdown"] = stop_daemon(daemon)
    finally:
        if daemon is not None:
            if daemon.proc.poll() is None:
                res["shutdown"] = {
                    "exit_code": None,
                    "shutdown_s": None,
                    "note": "killed during clean-up",
                }
            kill_daemon_group(daemon)
            daemon.log.poll()
            res["log"] = {
                "lines": daemon.log.lines,
                "levels": dict(daemon.log.levels),
                "top_events": dict(daemon.log.events.most_common(8)),
                "problem_kinds": dict(daemon.log.problem_kinds.most_common(10)),
                "problems": daemon.log.problems,
            }
        if disp is not None:
            res["cleanup"] = stop_workers(disp)


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scenarios `args` asks for; their figures (python -m bench calls this too)."""
    t_start = time.monotonic()
    _raise_nofile()
    res: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    res["machine"] = machine_facts()
    phases = Phases()
    tmp = Path(tempfile.mkdtemp(prefix="kw-fleet-"))
    try:
        res["fleet"] = {"boards": args.boards, "workers": args.workers}
        scenario(
            res["fleet"],
            tmp,
            "fleet",
            args.boards,
            args.workers,
            settle_s=args.settle_seconds,
            idle_s=args.idle_seconds,
            kill_one=False,
            phases=phases,
        )
        if args.thousand:
            res["thousand"] = {"boards": args.thousand_boards, "workers": args.thousand_workers}
            scenario(
                res["thousand"],
                tmp,
                "thousand",
                args.thousand_boards,
                args.thousand_workers,
                settle_s=0.0,
                idle_s=args.thousand_idle_seconds,
                kill_one=True,
                phases=phases,
            )
    except BaseException as exc:
        res["aborted"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        if not isinstance(exc, Exception):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        res["phases_s"] = phases.times
        res["total_s"] = round(time.monotonic() - t_start, 1)
    return res
