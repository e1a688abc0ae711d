"""`watchers run` over the fleet's boards, HTTP on a loopback port: started in a session
of its own, its JSON log read as it grows, start to "first round done" and /readyz,
shutdown (and its process group killed, however the run ends)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import _die_with_parent, watchers_argv
from bench.targets import POLL_S, SHUTDOWN_WAIT_S

FIRST_ROUND_TIMEOUT_S = 240.0
READY_TIMEOUT_S = 60.0  # after "first round done"
HTTP_TIMEOUT_S = 2.0  # /readyz


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
