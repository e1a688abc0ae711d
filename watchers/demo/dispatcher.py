"""A tiny stand-in for Hermes's dispatcher, for the demo and the benchmark.

It writes tasks, claims, runs and events the way Hermes 0.19 does and starts real
worker processes whose command line carries the task id, as Hermes's workers do.
Workers block reading a pipe from this process, so they end when it ends: nothing
is left running after a demo or a benchmark, however it exits.
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from watchers.store.board import insert_event

CLAIM_TTL_SECONDS = 900
_PY_WORKER = (
    "import sys; line = sys.stdin.readline().strip(); sys.exit(int(line) if line.isdigit() else 0)"
)
"""A worker that waits: a number on its stdin makes it exit with that code, EOF with 0."""


def new_task_id() -> str:
    return "t_" + secrets.token_hex(4)


class DemoDispatcher:
    def __init__(
        self, board: Path, hostname: str | None = None, *, light_workers: bool = False
    ) -> None:
        self.board = board
        self.hostname = hostname or socket.gethostname()
        self.claimer = f"{self.hostname}:{os.getpid()}"
        self.light_workers = light_workers  # /bin/sh workers: ~1 MB each, for a thousand of them
        self.conn = sqlite3.connect(str(board), isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: set[str] = set()  # tracked here: poll() would reap a zombie we want kept

    def close(self) -> None:
        for proc in self.workers.values():
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.workers.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.workers.clear()
        self.conn.close()

    @contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def create_task(
        self,
        title: str,
        assignee: str,
        *,
        body: str = "",
        max_retries: int | None = None,
        now: int | None = None,
    ) -> str:
        now = int(time.time()) if now is None else now
        task_id = new_task_id()
        with self._txn():
            self.conn.execute(
                "INSERT INTO tasks (id, title, body, assignee, status, priority, created_by, created_at, "
                "workspace_kind, max_retries) VALUES (?, ?, ?, ?, 'ready', 0, 'demo', ?, 'scratch', ?)",
                (task_id, title, body, assignee, now, max_retries),
            )
            insert_event(
                self.conn, task_id, "created", {"assignee": assignee, "status": "ready"}, now
            )
        return task_id

    def claim(self, task_id: str, *, now: int | None = None) -> int:
        """ready -> running with a fresh run row, as Hermes's claim_task does."""
        now = int(time.time()) if now is None else now
        with self._txn():
            cur = self.conn.execute(
                "UPDATE tasks SET status = 'running', claim_lock = ?, claim_expires = ?, "
                "started_at = COALESCE(started_at, ?) WHERE id = ? AND status = 'ready' AND claim_lock IS NULL",
                (self.claimer, now + CLAIM_TTL_SECONDS, now, task_id),
            )
            if cur.rowcount != 1:
                raise RuntimeError(f"{task_id} is not claimable")
            assignee = self.conn.execute(
                "SELECT assignee FROM tasks WHERE id = ?", (task_id,)
            ).fetchone()[0]
            run = self.conn.execute(
                "INSERT INTO task_runs (task_id, profile, status, claim_lock, claim_expires, started_at) "
                "VALUES (?, ?, 'running', ?, ?, ?)",
                (task_id, assignee, self.claimer, now + CLAIM_TTL_SECONDS, now),
            )
            run_id = int(run.lastrowid or 0)
            self.conn.execute("UPDATE tasks SET current_run_id = ? WHERE id = ?", (run_id, task_id))
            insert_event(
                self.conn, task_id, "claimed", {"lock": self.claimer, "run_id": run_id}, now, run_id
            )
        return run_id

    def start_worker(self, task_id: str) -> subprocess.Popen[bytes]:
        """A real process for the task; its pid is recorded on the task and its run."""
        if self.light_workers:
            argv = ["/bin/sh", "-c", "read _", f"work-kanban-task-{task_id}"]
        else:
            argv = [sys.executable, "-S", "-c", _PY_WORKER, f"work kanban task {task_id}"]
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.workers[task_id] = proc
        self.killed.discard(task_id)
        self.record_pid(task_id, proc.pid)
        return proc

    def record_pid(self, task_id: str, pid: int, *, now: int | None = None) -> None:
        now = int(time.time()) if now is None else now
        with self._txn():
            self.conn.execute("UPDATE tasks SET worker_pid = ? WHERE id = ?", (pid, task_id))
            self.conn.execute(
                "UPDATE task_runs SET worker_pid = ? WHERE id = (SELECT current_run_id FROM tasks WHERE id = ?)",
                (pid, task_id),
            )
            run = self.conn.execute(
                "SELECT current_run_id FROM tasks WHERE id = ?", (task_id,)
            ).fetchone()
            insert_event(self.conn, task_id, "spawned", {"pid": pid}, now, run[0] if run else None)

    def heartbeat(self, task_id: str, *, now: int | None = None) -> None:
        now = int(time.time()) if now is None else now
        with self._txn():
            self.conn.execute(
                "UPDATE tasks SET last_heartbeat_at = ? WHERE id = ? AND status = 'running'",
                (now, task_id),
            )
            self.conn.execute(
                "UPDATE task_runs SET last_heartbeat_at = ? "
                "WHERE id = (SELECT current_run_id FROM tasks WHERE id = ?)",
                (now, task_id),
            )
            run = self.conn.execute(
                "SELECT current_run_id FROM tasks WHERE id = ?", (task_id,)
            ).fetchone()
            insert_event(self.conn, task_id, "heartbeat", None, now, run[0] if run else None)

    def backdate_attempt(self, task_id: str, seconds: int) -> None:
        """Make the open attempt look `seconds` older (claim and heartbeat)."""
        with self._txn():
            self.conn.execute(
                "UPDATE task_runs SET started_at = started_at - ?, "
                "last_heartbeat_at = last_heartbeat_at - ? "
                "WHERE id = (SELECT current_run_id FROM tasks WHERE id = ?)",
                (seconds, seconds, task_id),
            )
            self.conn.execute(
                "UPDATE tasks SET started_at = started_at - ?, last_heartbeat_at = last_heartbeat_at - ? "
                "WHERE id = ?",
                (seconds, seconds, task_id),
            )

    def kill_worker(self, task_id: str, *, reap: bool = True) -> int:
        """SIGKILL the worker. Without `reap` it stays a zombie until this process waits."""
        proc = self.workers[task_id]
        self.killed.add(task_id)
        proc.kill()
        if reap:
            proc.wait()
        return proc.pid

    def exit_worker(self, task_id: str, code: int) -> int:
        """Make the worker exit with `code` by itself (left a zombie until this process
        waits: the exit code stays readable, as a worker Hermes spawned)."""
        proc = self.workers[task_id]
        self.killed.add(task_id)
        assert proc.stdin is not None
        proc.stdin.write(f"{code}\n".encode())
        proc.stdin.flush()
        return proc.pid

    def record_give_up(
        self, task_id: str, errors: list[str], *, at: int, outcome: str = "crashed"
    ) -> None:
        """Failed attempts ending in Hermes's breaker trip (`gave_up`), as Hermes writes them."""
        with self._txn():
            for i, err in enumerate(errors):
                run = self.conn.execute(
                    "INSERT INTO task_runs (task_id, profile, status, started_at, ended_at, outcome, error) "
                    "SELECT id, assignee, ?, ?, ?, ?, ? FROM tasks WHERE id = ?",
                    (outcome, at - 100 + i, at - 50 + i, outcome, err, task_id),
                ).lastrowid
                insert_event(
                    self.conn, task_id, outcome, {"pid": 100 + i, "error": err}, at - 50 + i, run
                )
            self.conn.execute(
                "UPDATE tasks SET status = 'blocked', consecutive_failures = ?, last_failure_error = ?, "
                "claim_lock = NULL, claim_expires = NULL, worker_pid = NULL, current_run_id = NULL "
                "WHERE id = ?",
                (len(errors), errors[-1][:500], task_id),
            )
            insert_event(
                self.conn,
                task_id,
                "gave_up",
                {"failures": len(errors), "error": errors[-1][:500]},
                at,
            )

    def live_workers(self) -> list[str]:
        """Tasks whose worker this dispatcher started and has not killed."""
        return [t for t in self.workers if t not in self.killed]

    def waiting(self) -> list[str]:
        """Ready tasks this dispatcher would run (not `[BLOCKED]` cards), by id."""
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT id FROM tasks WHERE status = 'ready' AND title NOT LIKE '[BLOCKED]%' "
                "ORDER BY id"
            )
        ]

    def claim_ready(self, hold: Collection[str] = ()) -> list[str]:
        """Claim every ready task and start its worker, as a dispatcher tick would; not the
        held ones, nor `[BLOCKED]` cards (they are an orchestrator's, not run here)."""
        ready = [t for t in self.waiting() if t not in hold]
        for task_id in ready:
            old = self.workers.pop(task_id, None)
            if old is not None and old.stdin is not None:
                old.stdin.close()
            self.claim(task_id)
            self.start_worker(task_id)
        return ready

    def complete(self, task_id: str, summary: str = "done", *, now: int | None = None) -> bool:
        """running -> done with the run closed as completed, as a worker's kanban_complete does."""
        now = int(time.time()) if now is None else now
        with self._txn():
            run = self.conn.execute(
                "SELECT current_run_id FROM tasks WHERE id = ? AND status = 'running'", (task_id,)
            ).fetchone()
            if run is None:
                return False
            self.conn.execute(
                "UPDATE tasks SET status = 'done', completed_at = ?, claim_lock = NULL, "
                "claim_expires = NULL, worker_pid = NULL, current_run_id = NULL, "
                "consecutive_failures = 0, last_failure_error = NULL WHERE id = ?",
                (now, task_id),
            )
            self.conn.execute(
                "UPDATE task_runs SET status = 'done', outcome = 'completed', summary = ?, ended_at = ?, "
                "claim_lock = NULL, claim_expires = NULL, worker_pid = NULL WHERE id = ?",
                (summary, now, run[0]),
            )
            insert_event(self.conn, task_id, "completed", {"summary": summary}, now, run[0])
        return True
