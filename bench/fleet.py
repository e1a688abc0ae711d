"""kanban-watchers fleet benchmark: many boards under one `watchers run`.

`.venv/bin/python bench/fleet.py` (about 4-5 minutes on 2 cores). Two scenarios, each
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
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a script: import the package from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    Phases,
    _die_with_parent,
    _on_signal,
    _raise_nofile,
    stop_workers,
    watchers_argv,
)
from bench.procfs import kib, proc_status

ROOT = Path(__file__).resolve().parent.parent
OUT_PATH = ROOT / "bench" / "out" / "fleet.json"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_IDLE_CPU_PCT = 0.2  # % of one core
TARGET_RSS_MIB = 60.0

CLAIM_BACKDATE_S = 60  # > the 30 s start grace, < the probe's 120 s spawn slack
FIRST_ROUND_TIMEOUT_S = 240.0
READY_TIMEOUT_S = 60.0  # after "first round done"
HEAL_TIMEOUT_S = 60.0
POLL_S = 0.1
HTTP_TIMEOUT_S = 2.0  # /readyz
SCRAPE_TIMEOUT_S = 15.0  # /metrics (a busy daemon with 1,000 boards answers slowly)
SHUTDOWN_WAIT_S = 20.0
SCRAPE_PAUSE_S = 2.0  # between a /metrics scrape and the CPU window's edge

# -- /proc helpers (copied from bench/run.py: that file is edited independently) ---------


def _stat_cpu(path: str) -> float | None:
    try:
        with open(path, "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    return _stat_cpu(f"/proc/{pid}/stat")


def thread_cpu(pid: int) -> dict[int, float]:
    """utime+stime of each of the process's threads (by tid)."""
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            s = _stat_cpu(f"/proc/{pid}/task/{tid}/stat")
            if s is not None:
                out[int(tid)] = s
    return out


def fd_counts(pid: int) -> dict[str, int]:
    """Open fds by kind: pidfd, socket, pipe, file (db, wal, shm, log...), other."""
    kinds: Counter[str] = Counter()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return {"total": -1}
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target == "anon_inode:[pidfd]":
            kinds["pidfd"] += 1
        elif target.startswith("socket:"):
            kinds["socket"] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        elif target.startswith("/"):
            kinds["file"] += 1
        else:
            kinds["other"] += 1
    return {"total": sum(kinds.values()), **dict(sorted(kinds.items()))}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str, timeout: float = HTTP_TIMEOUT_S) -> tuple[int | None, bytes]:
    try:
        with urllib.request.urlopen(  # loopback, our own daemon
            f"http://127.0.0.1:{port}{path}", timeout=timeout
        ) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, ValueError):
        return None, b""


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
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


# -- boards and workers ----------------------------------------------------------------


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
    backdated past the start grace (as bench/run.py's start_running)."""
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


# -- the daemon ------------------------------------------------------------------------


def write_config(path: Path, boards: list[Path], port: int) -> None:
    lines = ["boards = ["]
    lines += [f"  {json.dumps(str(b))}," for b in boards]
    lines += ["]", "", "[http]", f'listen = "127.0.0.1:{port}"', ""]
    path.write_text("\n".join(lines), encoding="utf-8")


_APS_JOB = re.compile(r'^(Execution of job|Run time of job) ".*?"(.*)$')


def _kind(event: str) -> str:
    """A log event without its job name (APScheduler's own messages name the job)."""
    m = _APS_JOB.match(event)
    return f"apscheduler: {m.group(1)} <job>{m.group(2)}" if m else event


class LogTail:
    """The daemon's JSON log lines on stderr, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.events: Counter[str] = Counter()
        self.levels: Counter[str] = Counter()
        self.problems: list[dict[str, Any]] = []  # the first of each kind
        self.problem_kinds: Counter[str] = Counter()
        self.seen: dict[str, float] = {}  # event -> monotonic time we first read it
        self.lines = 0

    def poll(self) -> None:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return
        self.offset += len(data)
        data = self.partial + data
        *complete, self.partial = data.split(b"\n")
        now = time.monotonic()
        for raw in complete:
            if not raw.strip():
                continue
            self.lines += 1
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": raw.decode("utf-8", "replace")[:300], "level": "raw"}
            if not isinstance(line, dict):
                line = {"event": str(line)[:300], "level": "raw"}
            event = str(line.get("event"))
            level = str(line.get("level"))
            self.events[event] += 1
            self.levels[level] += 1
            self.seen.setdefault(event, now)
            if level in ("warning", "error", "critical", "raw"):
                kind = f"{level}: {_kind(event)[:160]}"
                self.problem_kinds[kind] += 1
                if self.problem_kinds[kind] == 1 and len(self.problems) < 20:
                    self.problems.append(
                        {k: line.get(k) for k in ("level", "event", "error", "board", "watcher")}
                    )


@dataclass
class DaemonRun:
    proc: subprocess.Popen[bytes]
    log: LogTail
    port: int
    started_mono: float


def start_daemon(config: Path, log_path: Path, port: int, hermes_home: Path) -> DaemonRun:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("WATCHERS_")
        and k not in ("HERMES_KANBAN_DB", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET")
    }
    env["HERMES_HOME"] = str(hermes_home)  # empty: no profiles, nothing of the user's
    env["HERMES_KANBAN_HOME"] = str(hermes_home)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*watchers_argv(), "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
            start_new_session=True,  # its own process group: we can kill all of it
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads run in the benchmark
        )
    return DaemonRun(proc, LogTail(log_path), port, time.monotonic())


def kill_daemon_group(d: DaemonRun) -> None:
    """SIGKILL the daemon's own process group (it leads it: start_new_session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(d.proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        d.proc.wait(timeout=10)


def stop_daemon(d: DaemonRun) -> dict[str, Any]:
    if d.proc.poll() is not None:
        kill_daemon_group(d)  # whatever it may have left in its group
        return {"exit_code": d.proc.returncode, "shutdown_s": 0.0, "note": "already exited"}
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    try:
        code = d.proc.wait(timeout=SHUTDOWN_WAIT_S)
        note = "SIGTERM"
    except subprocess.TimeoutExpired:
        kill_daemon_group(d)
        code = d.proc.returncode
        note = f"did not stop within {SHUTDOWN_WAIT_S:.0f} s; SIGKILLed"
    kill_daemon_group(d)
    return {"exit_code": code, "shutdown_s": round(time.monotonic() - t0, 2), "note": note}


def _check_alive(d: DaemonRun) -> None:
    if d.proc.poll() is not None:
        d.log.poll()
        raise RuntimeError(
            f"daemon exited with {d.proc.returncode}; log problems: {d.log.problems[:3]}"
        )


def wait_start(d: DaemonRun) -> dict[str, Any]:
    """Seconds from start to the "first round done" line and to /readyz 200 (polled
    together every 100 ms, bounded)."""
    first_round_s: float | None = None
    ready_s: float | None = None
    ready_503 = 0
    deadline = d.started_mono + FIRST_ROUND_TIMEOUT_S
    while time.monotonic() < deadline:
        _check_alive(d)
        d.log.poll()
        if first_round_s is None and "first round done" in d.log.seen:
            first_round_s = d.log.seen["first round done"] - d.started_mono
            deadline = min(deadline, time.monotonic() + READY_TIMEOUT_S)
        if ready_s is None:
            t = time.monotonic()
            status, _ = http_get(d.port, "/readyz")
            if status == 200:
                ready_s = t - d.started_mono
            elif status == 503:
                ready_503 += 1
        if first_round_s is not None and ready_s is not None:
            break
        time.sleep(POLL_S)
    started = d.log.seen.get("started")
    return {
        "started_logged_s": round(started - d.started_mono, 2) if started else None,
        "first_round_s": round(first_round_s, 2) if first_round_s is not None else None,
        "ready_s": round(ready_s, 2) if ready_s is not None else None,
        "readyz_503_seen": ready_503,
    }


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


# -- scenarios ---------------------------------------------------------------------------


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


# -- report ------------------------------------------------------------------------------


def _f(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}{(' ' + unit) if unit else ''}"


def _fds(snap: dict[str, Any] | None) -> str:
    if not snap:
        return "n/a"
    fds = snap["fds"]
    rest = ", ".join(f"{k} {v}" for k, v in fds.items() if k != "total")
    return f"{fds['total']} ({rest})"


def build_rows(res: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    rows: list[tuple[str, str, str, bool | None]] = []
    s1 = res.get("fleet")
    if s1 is not None:
        n = s1["boards"]
        st, idle, end = s1.get("start", {}), s1.get("idle"), s1.get("end")
        rows += [
            (f"{n} boards: start -> first round done", _f(st.get("first_round_s"), "s"), "", None),
            (f"{n} boards: start -> /readyz 200", _f(st.get("ready_s"), "s"), "", None),
            (
                f"{n} boards: idle CPU over {_f(idle and idle['window_s'], 's', 0)}",
                _f(idle and idle["cpu_pct_one_core"], "%", 3),
                f"<= {TARGET_IDLE_CPU_PCT} %",
                idle is not None and idle["cpu_pct_one_core"] <= TARGET_IDLE_CPU_PCT,
            ),
            (
                f"{n} boards: VmRSS at {_f(end and end['age_s'], 's', 0)}",
                _f(end and end["rss_mib"], "MiB"),
                f"<= {TARGET_RSS_MIB:.0f} MiB",
                end is not None and end["rss_mib"] is not None and end["rss_mib"] <= TARGET_RSS_MIB,
            ),
            (f"{n} boards: fds", _fds(end), "", None),
            (f"{n} boards: threads", str(end["threads"]) if end else "n/a", "", None),
        ]
    s2 = res.get("thousand")
    if s2 is not None:
        n = s2["boards"]
        st, heal, idle, end = (s2.get(k) or {} for k in ("start", "heal", "idle", "end"))
        rows += [
            (
                f"{n:,} boards: start -> first round done (starts)",
                _f(st.get("first_round_s"), "s"),
                f"<= {FIRST_ROUND_TIMEOUT_S:.0f} s",
                st.get("first_round_s") is not None,
            ),
            (
                f"{n:,} boards: start -> /readyz 200 (ready)",
                _f(st.get("ready_s"), "s"),
                "answers",
                st.get("ready_s") is not None,
            ),
            (
                f"{n:,} boards: SIGKILL -> leaves running (heals)",
                _f(heal.get("heal_s"), "s", 2)
                + (f" -> {heal['new_status']}" if heal.get("heal_s") is not None else ""),
                f"<= {HEAL_TIMEOUT_S:.0f} s",
                heal.get("heal_s") is not None,
            ),
            (
                f"{n:,} boards: idle CPU over {_f(idle.get('window_s'), 's', 0)}",
                _f(idle.get("cpu_pct_one_core"), "%", 3),
                "",
                None,
            ),
            (
                f"{n:,} boards: VmRSS at {_f(end.get('age_s'), 's', 0)}",
                _f(end.get("rss_mib"), "MiB"),
                "",
                None,
            ),
            (f"{n:,} boards: fds", _fds(end or None), "", None),
            (f"{n:,} boards: threads", str(end.get("threads", "n/a")), "", None),
        ]
    return rows


def report(res: dict[str, Any], out: Path) -> None:
    rows = build_rows(res)
    res["targets"] = [
        {"figure": label, "measured": value, "target": target, "pass": ok}
        for label, value, target, ok in rows
        if ok is not None
    ]
    res["all_pass"] = bool(res["targets"]) and all(t["pass"] for t in res["targets"])
    res["all_pass"] = res["all_pass"] and not res.get("aborted")
    m = res.get("machine", {})
    width = 96
    print()
    print("=" * width)
    print(
        f"kanban-watchers fleet benchmark — {m.get('cpus')} cores, Python {m.get('python')}, "
        f"SQLite {m.get('sqlite')}, code {m.get('git_head')}"
        + (
            f" (+ uncommitted {m['uncommitted_in_watchers']})"
            if m.get("uncommitted_in_watchers")
            else ""
        )
    )
    print("-" * width)
    print(f"{'figure':48} | {'measured':>22} | {'target':>10} | result")
    for label, value, target, ok in rows:
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        print(f"{label:48} | {value:>22} | {target:>10} | {verdict}")
    print("-" * width)
    for key in ("fleet", "thousand"):
        s = res.get(key)
        if not s:
            continue
        idle, first, end = s.get("idle") or {}, s.get("after_first_round") or {}, s.get("end") or {}
        print(f"{key} ({s['boards']} boards, {s['workers']} workers):")
        st = s.get("start") or {}
        if st:
            print(
                f"  start: 'started' logged at {_f(st.get('started_logged_s'), 's')}, first "
                f"round done at {_f(st.get('first_round_s'), 's')}, /readyz 200 at "
                f"{_f(st.get('ready_s'), 's')} ({st.get('readyz_503_seen')} x 503 before)"
            )
        if first:
            print(
                f"  after first round: RSS {first.get('rss_mib')} MiB, CPU so far "
                f"{_f(first.get('cpu_total_s'), 's')}, threads {first.get('threads')}, "
                f"fds {_fds(first)}"
            )
        if idle:
            print(
                f"  idle window: {idle['cpu_s']} CPU s in {idle['window_s']} s; busiest threads "
                "(by start order, #0 main) "
                + ", ".join(
                    f"#{t['start_rank']} {t['cpu_s']} s" for t in idle["threads_by_cpu_s"][:4]
                )
            )
            print(
                f"  ticks in window (approx.): {idle['ticks_in_window_approx']}; wall s in "
                f"ticks {idle['tick_wall_seconds_in_window_approx']}; log lines "
                f"{idle['log_lines_in_window']}; /metrics {idle['metrics_bytes']:,} bytes in "
                f"{idle['metrics_scrape_s']} s (status {idle['metrics_status']})"
            )
        if end:
            print(
                f"  end: VmHWM {end.get('hwm_mib')} MiB, CPU total {_f(end.get('cpu_total_s'), 's')}"
            )
        heal = s.get("heal")
        if heal:
            print(
                f"  kill: task {heal['task']} pid {heal['pid']} -> {heal['new_status']} after "
                f"{heal['heal_s']} s, run outcome {heal['run_outcome']}"
            )
        sd = s.get("shutdown")
        if sd:
            print(f"  shutdown: exit {sd['exit_code']} after {sd['shutdown_s']} s ({sd['note']})")
        lg = s.get("log")
        if lg:
            print(f"  log: {lg['lines']} lines, levels {lg['levels']}")
            for kind, n in list(lg["problem_kinds"].items())[:5]:
                print(f"  log {n} x {kind}")
        cl = s.get("cleanup")
        if cl:
            print(
                f"  cleanup: {cl['workers']} workers stopped ({cl['killed_after_timeout']} "
                f"SIGKILLed, {cl['still_running']} still running)"
            )
    print("phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in res.get("phases_s", {}).items()))
    print(f"total: {res.get('total_s')} s")
    if res.get("aborted"):
        print(f"ABORTED: {res['aborted']}")
    print(f"overall: {'PASS' if res['all_pass'] else 'FAIL'}")
    print("=" * width)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"results: {out}")


# -- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.boards < 1 or args.thousand_boards < 1:
        ap.error("--boards and --thousand-boards must be >= 1")
    if args.workers < 0 or args.thousand_workers < 1:
        ap.error("--workers must be >= 0 and --thousand-workers >= 1")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    res = collect(args)
    report(res, args.out)
    return 0 if res["all_pass"] else 1


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scenarios `args` asks for; their figures (bench/run.py calls this too)."""
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


if __name__ == "__main__":
    sys.exit(main())
