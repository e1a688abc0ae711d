"""The interop harness: boards made and driven by the real `hermes_cli.kanban_db`, real
worker processes spawned through Hermes's own dispatcher, and the real `watchers` CLI run
as a subprocess.

Hermes connections in the test process are short-lived (one per step), as Hermes's own
tools use them. Hermes 0.19 opens and closes the board file with plain `open()` after every
commit (`_check_file_length_invariant`), which drops every POSIX lock this process holds on
it. A `watchers once` that exits while a Hermes connection is open here then takes itself
for the board's last connection, checkpoints and deletes the WAL: the Hermes connection's
later writes go to the deleted file, unseen by anyone else, and a checkpoint that grows the
file between Hermes's size and header reads makes Hermes raise "torn-extend detected".
Where Hermes must run while `watchers once` runs, `hold_open` keeps the board open in
another process, so no `watchers once` is ever the last connection.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from hermes_cli import kanban_db as kb

PROFILE = "coder"
"""The assignee of every task: a real (empty) Hermes profile, lowercase as Hermes stores it."""

BLOCKING_WORKER = "import sys; sys.stdin.read()"
"""Lives until the test closes its stdin (or kills it)."""

FAILING_WORKER = "import sys; sys.stdin.read(); sys.exit(1)"
"""Exits with code 1 by itself once its stdin closes: a task-caused failure."""

RATE_LIMITED_WORKER = "import sys; sys.stdin.read(); sys.exit(75)"
"""Exits 75 (EX_TEMPFAIL, Hermes's rate-limit sentinel) once its stdin closes: a quota wall."""

PROCESS_TIMEOUT = 120.0
"""Upper bound for any one subprocess; a healthy one takes about a second."""

_GATED_ONCE = (
    "import os, sys\n"
    "import watchers.cli\n"
    "os.write(1, b'ready\\n')\n"
    "sys.stdin.readline()\n"
    "sys.exit(watchers.cli.main(sys.argv[1:]))\n"
)
"""`watchers once` with its imports done before it waits for the go: lets a test start
several passes over a board within a millisecond of each other."""


def sqlite_schema(path: Path) -> list[tuple[str, str, str, str | None]]:
    """Every table's and index's (type, name, table, sql) from sqlite_master, sorted."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE type IN ('table', 'index') ORDER BY type, name"
        ).fetchall()
    finally:
        conn.close()
    return rows


def table_shapes(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Per table: its columns as (name, type, notnull, default, pk), in order."""
    conn = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {t: [tuple(r[1:]) for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        conn.close()


_HOLD_OPEN = (
    "import os, sqlite3, sys\n"
    "conn = sqlite3.connect(sys.argv[1])\n"
    "conn.execute('SELECT COUNT(*) FROM sqlite_master').fetchall()\n"
    "os.write(1, b'ready\\n')\n"
    "sys.stdin.read()\n"
)


def hold_open(path: Path) -> subprocess.Popen[bytes]:
    """A process holding a SQLite connection to `path` (and its shared lock) until its stdin
    closes: no other connection that closes meanwhile is the last one."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_OPEN, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    ready = os.read(proc.stdout.fileno(), 64)
    if ready != b"ready\n":
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the board keeper did not start: {ready!r}")
    return proc


def write_profile(root: Path, name: str, model: object) -> Path:
    """Write `model: <model>` to the profile's config.yaml (`default` is the root's own)."""
    directory = root if name == "default" else root / "profiles" / name
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.yaml"
    config.write_text(yaml.safe_dump({"model": model}), encoding="utf-8")
    return config


def anthropic(model: str = "claude-sonnet-4") -> dict[str, str]:
    """A config.yaml `model` mapping on the anthropic provider."""
    return {"provider": "anthropic", "default": model}


def provider_model(provider: str, model: str = "some-model") -> dict[str, str]:
    """A config.yaml `model` mapping on `provider`."""
    return {"provider": provider, "default": model}


class HermesBoard:
    """One board file driven through Hermes's own API, with the workers it spawned."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.workers: dict[str, list[subprocess.Popen[bytes]]] = {}
        self.scripts: dict[str, str] = {}
        self.last_dispatch: kb.DispatchResult | None = None

    # -- Hermes ---------------------------------------------------------------------

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = kb.connect(self.path)
        try:
            yield conn
        finally:
            conn.close()

    def create(
        self,
        title: str,
        *,
        max_retries: int | None = None,
        worker: str = BLOCKING_WORKER,
        assignee: str = PROFILE,
        body: str | None = None,
        created_by: str | None = None,
    ) -> str:
        with self.connect() as conn:
            task_id = kb.create_task(
                conn,
                title=title,
                body=body,
                assignee=assignee,
                max_retries=max_retries,
                created_by=created_by,
            )
        self.scripts[task_id] = worker
        return task_id

    def spawn(self, task: kb.Task, workspace_path: str, board: str | None = None) -> int:
        """Hermes's spawn_fn: a real process whose command line carries the task id."""
        proc = subprocess.Popen(
            [
                sys.executable,
                "-S",
                "-c",
                self.scripts.get(task.id, BLOCKING_WORKER),
                f"work kanban task {task.id}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=workspace_path,
        )
        self.workers.setdefault(task.id, []).append(proc)
        return proc.pid

    def dispatch(self) -> list[str]:
        """One tick of Hermes's dispatcher; the ids of the tasks it spawned workers for."""
        with self.connect() as conn:
            self.last_dispatch = kb.dispatch_once(conn, spawn_fn=self.spawn, board=None)
        return [task_id for task_id, _assignee, _workspace in self.last_dispatch.spawned]

    def record_crashes(self) -> list[str]:
        """Hermes's own crash pass: reap its dead children, then detect crashed workers."""
        reap = getattr(kb, "reap_worker_zombies", None)  # Hermes 0.15 and later
        if reap is not None:
            reap()
        with self.connect() as conn:
            return kb.detect_crashed_workers(conn)

    def rate_limit(self, task_ids: list[str]) -> None:
        """Hermes dispatches the (only ready) tasks, their workers exit 75, Hermes requeues them."""
        for task_id in task_ids:
            self.scripts[task_id] = RATE_LIMITED_WORKER
        assert sorted(self.dispatch()) == sorted(task_ids), self.last_dispatch
        for task_id in task_ids:
            self.let_exit(task_id)
        assert sorted(self.record_rate_limits()) == sorted(task_ids)

    def record_rate_limits(self) -> list[str]:
        """Hermes's crash pass; the ids it requeued as rate-limited (exit 75), not crashed."""
        assert self.record_crashes() == []
        return list(getattr(kb.detect_crashed_workers, "_last_rate_limited", []))

    def tasks_titled(self, title: str) -> list[kb.Task]:
        """Every task (archived ones too) whose title is exactly `title`."""
        with self.connect() as conn:
            tasks = kb.list_tasks(conn, include_archived=True)
        return [t for t in tasks if t.title == title]

    def parents(self, task_id: str) -> list[str]:
        with self.connect() as conn:
            return kb.parent_ids(conn, task_id)

    def task(self, task_id: str) -> kb.Task:
        with self.connect() as conn:
            task = kb.get_task(conn, task_id)
        assert task is not None, task_id
        return task

    def runs(self, task_id: str) -> list[kb.Run]:
        with self.connect() as conn:
            return kb.list_runs(conn, task_id)

    def events(self, task_id: str, kind: str | None = None) -> list[kb.Event]:
        with self.connect() as conn:
            events = kb.list_events(conn, task_id)
        return [e for e in events if kind is None or e.kind == kind]

    def comments(self, task_id: str) -> list[kb.Comment]:
        with self.connect() as conn:
            return kb.list_comments(conn, task_id)

    def state(self, task_id: str) -> dict[str, Any]:
        """Everything Hermes shows about a task: its row, its runs and its events."""
        return {
            "task": asdict(self.task(task_id)),
            "runs": [asdict(r) for r in self.runs(task_id)],
            "events": [asdict(e) for e in self.events(task_id)],
        }

    # -- workers --------------------------------------------------------------------

    def worker(self, task_id: str) -> subprocess.Popen[bytes]:
        """The task's latest worker."""
        return self.workers[task_id][-1]

    def kill(self, task_id: str, *, reap: bool) -> int:
        """SIGKILL the task's worker. With `reap` it is waited for and gone; without, it
        is left a zombie (dead, not waited for) until Hermes's reaper or teardown."""
        proc = self.worker(task_id)
        proc.kill()
        if reap:
            proc.wait(timeout=PROCESS_TIMEOUT)
        else:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        return proc.pid

    def let_exit(self, task_id: str) -> int:
        """Close the worker's stdin so it exits by itself; wait for that without reaping it."""
        proc = self.worker(task_id)
        assert proc.stdin is not None
        proc.stdin.close()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        return proc.pid

    def close(self) -> None:
        procs = [p for ps in self.workers.values() for p in ps]
        for proc in procs:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=PROCESS_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.workers.clear()


class WatchersCli:
    """The real `watchers` command, run as a subprocess against one board."""

    @staticmethod
    def env(**auto_heal: float | int) -> dict[str, str]:
        """This process's environment (Hermes homes included), no stray WATCHERS_ settings,
        no start grace, plus the given auto_heal settings."""
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WATCHERS_")}
        env["WATCHERS_AUTO_HEAL__START_GRACE_SECONDS"] = "0"
        for name, value in auto_heal.items():
            env[f"WATCHERS_AUTO_HEAL__{name.upper()}"] = str(value)
        return env

    def __init__(
        self,
        cwd: Path,
        watcher: str = "auto-heal",
        *,
        config: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.cwd = cwd
        self.watcher = watcher
        self.config = config
        self.extra_env = dict(extra_env or {})
        self.started: list[subprocess.Popen[bytes]] = []

    def _config_args(self) -> list[str]:
        return [] if self.config is None else ["--config", str(self.config)]

    def _env(self, **auto_heal: float | int) -> dict[str, str]:
        return {**self.env(**auto_heal), **self.extra_env}

    def argv(self, board: Path) -> list[str]:
        return [
            "once",
            "--board",
            str(board),
            "--json",
            "--watcher",
            self.watcher,
            *self._config_args(),
        ]

    def _json(self, args: list[str], env: dict[str, str]) -> Any:
        """Run `python -m watchers <args>`; its JSON (exit status must be 0)."""
        done = subprocess.run(
            [sys.executable, "-m", "watchers", *args],
            env=env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def status(self, board: Path) -> list[dict[str, Any]]:
        """`watchers status --json --board <board>`; its boards."""
        report: dict[str, Any] = self._json(
            ["status", "--json", "--board", str(board), *self._config_args()], self._env()
        )
        assert report["schema_version"] == 1
        boards: list[dict[str, Any]] = report["boards"]
        return boards

    def once(self, board: Path, **auto_heal: float | int) -> list[dict[str, Any]]:
        """`watchers once --board <board> --json`; its JSON array."""
        records: list[dict[str, Any]] = self._json(self.argv(board), self._env(**auto_heal))
        return records

    def start_once(
        self, board: Path, *, gated: bool = False, **auto_heal: float | int
    ) -> subprocess.Popen[bytes]:
        """Start `watchers once` without waiting. A gated one has done its imports and waits
        for `release`; an ungated one is `python -m watchers` straight away."""
        head = ["-c", _GATED_ONCE] if gated else ["-m", "watchers"]
        proc = subprocess.Popen(
            [sys.executable, *head, *self.argv(board)],
            env=self._env(**auto_heal),
            cwd=self.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.started.append(proc)
        if gated:
            assert proc.stdout is not None
            assert os.read(proc.stdout.fileno(), 64) == b"ready\n"
        return proc

    @staticmethod
    def release(proc: subprocess.Popen[bytes]) -> None:
        """Let a gated `watchers once` go."""
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()

    @staticmethod
    def finish(proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
        """Wait for a started `watchers once`; its JSON array (exit status must be 0)."""
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
        assert proc.returncode == 0, err.decode(errors="replace")
        records: list[dict[str, Any]] = json.loads(out)
        return records

    def close(self) -> None:
        """Kill any started `watchers once` a failed test left behind."""
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        self.started.clear()
