"""Reads of tasks as they are now: running rows, statuses, budget fields, details."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from watchers.model import (
    KNOWN_STATUSES,
    RunningTask,
    SkippedRow,
)
from watchers.store.connection import Connection
from watchers.store.rows import (
    BudgetRow,
    TaskDetail,
    _chunks,
    _Malformed,
    _opt_float,
    _opt_int,
    _opt_name,
    _opt_text,
    _req_int,
    _task_id,
    _Undecodable,
    _valid_pid,
    _well_typed_running,
    host_pid_max,
)


class TaskReads(Connection):
    """What the board's task rows say now."""

    def running_tasks(
        self, memo: dict[tuple[Any, ...], RunningTask] | None = None
    ) -> tuple[list[RunningTask], list[SkippedRow]]:
        """Every `running` task with its open attempt; malformed rows are reported. With
        `memo` (the caller's, from its last call), a row read before is not parsed again;
        on return it holds exactly this call's well-typed rows. A row read again keeps the
        key it was parsed from, whose values the parsed task shares: replacing it with the
        new, equal row would hold every value twice."""
        sql = (
            "SELECT t.id, t.assignee, t.claim_lock, t.claim_expires, t.worker_pid, "
            "t.current_run_id, t.started_at, t.last_heartbeat_at, t.consecutive_failures, "
            f"{self._col('max_retries')}, {self._col('worker_started_at')}, r.started_at "
            "FROM tasks t LEFT JOIN task_runs r ON r.id = t.current_run_id "
            "WHERE t.status = 'running'"
        )
        tasks: list[RunningTask] = []
        skipped: list[SkippedRow] = []
        stale = dict(memo) if memo else {}  # what is not read again is dropped below
        for row in self._query(sql):
            fast = stale.pop(row, None)
            if fast is None:
                fast = _well_typed_running(row)
                if fast is not None and memo is not None:
                    memo[row] = fast
            if fast is not None:
                tasks.append(fast)
                continue
            try:
                task_id = _task_id(row)
            except _Malformed as exc:
                skipped.append(SkippedRow(self.slug, "tasks", None, str(exc)))
                continue
            try:
                run_started = _opt_int(row, 11, "task_runs.started_at")
                pid = _opt_int(row, 4, "worker_pid")
                if not _valid_pid(pid):
                    raise _Malformed(
                        f"worker_pid {pid} is not a PID on this host (1 to {host_pid_max() - 1})"
                    )
                tasks.append(
                    RunningTask(
                        task_id=task_id,
                        assignee=_opt_name(row, 1, "assignee"),
                        claim_lock=_opt_text(row, 2, "claim_lock"),
                        claim_expires=_opt_int(row, 3, "claim_expires"),
                        worker_pid=pid,
                        current_run_id=_opt_int(row, 5, "current_run_id"),
                        attempt_started_at=(
                            run_started
                            if run_started is not None
                            else _opt_int(row, 6, "started_at")
                        ),
                        last_heartbeat_at=_opt_int(row, 7, "last_heartbeat_at"),
                        consecutive_failures=_req_int(row, 8, "consecutive_failures"),
                        max_retries=_opt_int(row, 9, "max_retries"),
                        worker_started_at=_opt_float(row, 10),
                    )
                )
            except _Malformed as exc:
                skipped.append(SkippedRow(self.slug, "tasks", task_id, str(exc)))
        if memo is not None:
            for row in stale:
                del memo[row]
        return tasks, skipped

    def status_counts(self) -> tuple[dict[str, int], list[SkippedRow]]:
        counts: dict[str, int] = {}
        skipped: list[SkippedRow] = []
        for status, n in self._query("SELECT status, COUNT(*) FROM tasks GROUP BY status"):
            if isinstance(status, str) and status in KNOWN_STATUSES:
                counts[status] = n
            else:
                skipped.append(
                    SkippedRow(
                        self.slug, "tasks", None, f"{n} task(s) with unknown status {status!r}"
                    )
                )
        return counts, skipped

    def unknown_status_tasks(self, limit: int = 20) -> list[tuple[str, str]]:
        """(task id, status) of tasks whose status no Hermes release writes, at most `limit`
        of each such status. The distinct statuses come from Hermes's status index (a few
        milliseconds on a 100,000-task board); ids only for statuses found unknown."""
        out: list[tuple[str, str]] = []
        for (status,) in self._query("SELECT DISTINCT status FROM tasks"):
            if isinstance(status, str) and status in KNOWN_STATUSES:
                continue
            where = "status IS NULL" if status is None else "status = ?"  # = uses the index
            args = (limit,) if status is None else (status, limit)
            for row in self._query(f"SELECT id FROM tasks WHERE {where} LIMIT ?", args):
                if isinstance(row[0], str) and not isinstance(row[0], _Undecodable):
                    out.append((row[0], repr(status)[:80]))
        return out

    def task_states(self, task_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """(status, consecutive_failures) for each existing task id."""
        out: dict[str, tuple[str, int]] = {}
        for chunk, marks in _chunks(task_ids):
            for row in self._query(
                f"SELECT id, status, consecutive_failures FROM tasks WHERE id IN ({marks})", chunk
            ):
                try:
                    out[_task_id(row)] = (
                        _opt_text(row, 1, "status") or "",
                        _req_int(row, 2, "consecutive_failures"),
                    )
                except _Malformed:
                    continue
        return out

    def budget_rows(
        self, task_ids: Sequence[str] | None = None, *, budget_bodies_only: bool = False
    ) -> list[BudgetRow]:
        """Budget-relevant fields of the given tasks, or of every task not done/archived
        (read in pages). With `budget_bodies_only`, a body is returned only when it
        mentions a budget."""
        body = "CASE WHEN body LIKE '%budget%' THEN body END" if budget_bodies_only else "body"
        cols = (
            f"t.rowid, id, status, assignee, {body}, {self._col('max_runtime_seconds')}, "
            f"{self._col('goal_max_turns')}, {self._col('max_retries')}, "
            f"{self._col('block_recurrences')}"
        )
        rows: Iterable[tuple[Any, ...]]
        if task_ids is None:
            rows = self._pages(
                f"SELECT {cols} FROM tasks t WHERE t.rowid > ? "
                "AND status NOT IN ('done', 'archived') ORDER BY t.rowid LIMIT ?",
                (),
                page=1000,
            )
        else:
            rows = (
                row
                for chunk, marks in _chunks(task_ids)
                for row in self._query(f"SELECT {cols} FROM tasks t WHERE id IN ({marks})", chunk)
            )
        out = []
        for full in rows:
            row = full[1:]
            try:
                out.append(
                    BudgetRow(
                        task_id=_task_id(row),
                        status=_opt_name(row, 1, "status") or "",
                        assignee=_opt_name(row, 2, "assignee"),
                        body=_opt_text(row, 3, "body") or "",
                        max_runtime_seconds=_opt_int(row, 4, "max_runtime_seconds"),
                        goal_max_turns=_opt_int(row, 5, "goal_max_turns"),
                        max_retries=_opt_int(row, 6, "max_retries"),
                        block_recurrences=_opt_int(row, 7, "block_recurrences") or 0,
                    )
                )
            except _Malformed:
                continue
        return out

    def task_details(self, task_ids: Sequence[str]) -> dict[str, TaskDetail]:
        out: dict[str, TaskDetail] = {}
        for chunk, marks in _chunks(task_ids):
            for row in self._query(
                "SELECT id, title, body, status, assignee, "
                f"{self._col('provider_override')}, {self._col('branch_name')}, "
                f"{self._col('workspace_path')}, consecutive_failures, completed_at, created_at, "
                f"{self._col('model_override')}, {self._col('created_by')} "
                f"FROM tasks t WHERE id IN ({marks})",
                chunk,
            ):
                try:
                    out[_task_id(row)] = TaskDetail(
                        task_id=_task_id(row),
                        title=_opt_text(row, 1, "title") or "",
                        body=_opt_text(row, 2, "body") or "",
                        status=_opt_text(row, 3, "status") or "",
                        assignee=_opt_text(row, 4, "assignee"),
                        provider_override=_opt_text(row, 5, "provider_override"),
                        branch=_opt_text(row, 6, "branch_name"),
                        workspace=_opt_text(row, 7, "workspace_path"),
                        consecutive_failures=_req_int(row, 8, "consecutive_failures"),
                        completed_at=_opt_int(row, 9, "completed_at"),
                        created_at=_req_int(row, 10, "created_at"),
                        model_override=_opt_text(row, 11, "model_override"),
                        created_by=_opt_text(row, 12, "created_by"),
                    )
                except _Malformed:
                    continue
        return out

    def top_task(self) -> tuple[int, str | None]:
        """The highest rowid of `tasks` and the id of the task there."""
        rows = self._query("SELECT rowid, id FROM tasks ORDER BY rowid DESC LIMIT 1")
        if not rows:
            return 0, None
        return int(rows[0][0]), rows[0][1] if isinstance(rows[0][1], str) else None

    def task_id_at_rowid(self, rowid: int) -> str | None:
        rows = self._query("SELECT id FROM tasks WHERE rowid = ?", (rowid,))
        return rows[0][0] if rows and isinstance(rows[0][0], str) else None
