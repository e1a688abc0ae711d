"""Reads of what Hermes's dispatcher works from and leaves behind: ready tasks, running
counts, the newest claim, and when a ready task last saw anything happen.

Every read goes through an index: ready and running tasks through Hermes's status index,
the newest claims by the runs' primary key from the top, a task's newest event through
the events' (task_id, created_at) index. Nothing scans a board's history by event kind.
"""

from __future__ import annotations

from collections.abc import Sequence

from watchers.model import SkippedRow
from watchers.store.connection import Connection
from watchers.store.rows import (
    ReadyRow,
    _chunks,
    _Malformed,
    _opt_int,
    _opt_text,
    _req_int,
    _task_id,
)

CLAIM_WINDOW = 50
"""The newest runs looked at for the newest claim (runs Hermes adds without a claim, for a
ready task marked done by hand, are passed over; 50 of those in a row are not)."""


class DispatchReads(Connection):
    """What the dispatcher's progress can be read from."""

    def last_claim_at(self, window: int = CLAIM_WINDOW) -> int | None:
        """When the newest claim happened (epoch seconds); None when the board has no runs.

        A run is created by a claim, with the claim's time as `started_at`, and its
        `claimed` event carries the run's id. Hermes also writes an instant run (started
        and ended at once, no claim) when a task is completed or blocked without one: those
        are passed over. If every run of the window is such a run, the oldest one's time is
        taken: the newest claim is older, so a stall is reported late, never falsely."""
        rows = self._query(
            "SELECT r.id, r.started_at, r.ended_at, EXISTS ("
            "  SELECT 1 FROM task_events e WHERE e.run_id = r.id AND e.kind = 'claimed') "
            "FROM task_runs r ORDER BY r.id DESC LIMIT ?",
            (window,),
        )
        fallback: int | None = None
        for row in rows:
            try:
                started = _req_int(row, 1, "task_runs.started_at")
                ended = _opt_int(row, 2, "task_runs.ended_at")
            except _Malformed:
                continue  # a run we cannot read says nothing about when claims happened
            if row[3] or ended is None or ended != started:
                return started
            fallback = started
        return fallback

    def ready_rows(self) -> tuple[list[ReadyRow], list[SkippedRow]]:
        """Every unclaimed `ready` task, oldest created first; malformed rows are reported."""
        rows, skipped = self.ready_rows_after(0, None)
        out = [row for _, row in rows]
        out.sort(key=lambda r: (r.created_at, r.task_id))
        return out, skipped

    def running_count(self) -> int:
        """`running` tasks: from the status index alone, no row is read."""
        rows = self._query("SELECT COUNT(*) FROM tasks WHERE status = 'running'")
        return int(rows[0][0]) if rows and type(rows[0][0]) is int else 0

    def ready_count(self) -> int:
        """`ready` tasks (claimed ones too): from the status index alone, no row is read."""
        rows = self._query("SELECT COUNT(*) FROM tasks WHERE status = 'ready'")
        return int(rows[0][0]) if rows and type(rows[0][0]) is int else 0

    def ready_rows_after(
        self, rowid: int, limit: int | None
    ) -> tuple[list[tuple[int, ReadyRow]], list[SkippedRow]]:
        """Unclaimed `ready` tasks after `rowid`, in rowid order (Hermes's insertion order,
        so the oldest created first), at most `limit` (None: all), with their rowids."""
        out: list[tuple[int, ReadyRow]] = []
        skipped: list[SkippedRow] = []
        for row in self._query(
            "SELECT id, assignee, created_at, rowid FROM tasks "
            "WHERE status = 'ready' AND claim_lock IS NULL AND rowid > ? ORDER BY rowid LIMIT ?",
            (rowid, -1 if limit is None else limit),
        ):
            tid, assignee, created, at = row
            if (
                type(tid) is str  # `type is`: excludes _Undecodable
                and tid
                and (assignee is None or type(assignee) is str)
                and type(created) is int
            ):
                out.append((at, ReadyRow(tid, assignee, created)))  # the common case, unchecked
                continue
            try:
                task_id = _task_id(row)
            except _Malformed as exc:
                skipped.append(SkippedRow(self.slug, "tasks", None, str(exc)))
                continue
            try:
                out.append(
                    (
                        at,
                        ReadyRow(
                            task_id,
                            _opt_text(row, 1, "assignee"),
                            _req_int(row, 2, "created_at"),
                        ),
                    )
                )
            except _Malformed as exc:
                skipped.append(SkippedRow(self.slug, "tasks", task_id, str(exc)))
        return out, skipped

    def running_by_assignee(self) -> dict[str | None, int]:
        """Running tasks per assignee (stripped, lower case; None: unassigned or unreadable)."""
        out: dict[str | None, int] = {}
        for assignee, n in self._query(
            "SELECT assignee, COUNT(*) FROM tasks WHERE status = 'running' GROUP BY assignee"
        ):
            key = assignee.strip().lower() or None if type(assignee) is str else None
            out[key] = out.get(key, 0) + int(n)
        return out

    def newest_event_at(self, task_ids: Sequence[str]) -> dict[str, int]:
        """Each task's newest event time (epoch seconds); tasks without events are absent.
        One index seek per task (`MAX` over the events' (task_id, created_at) index)."""
        out: dict[str, int] = {}
        for chunk, marks in _chunks(task_ids):
            for row in self._query(
                "SELECT t.id, (SELECT MAX(e.created_at) FROM task_events e "
                f"WHERE e.task_id = t.id) FROM tasks t WHERE t.id IN ({marks})",
                chunk,
            ):
                try:
                    when = _opt_int(row, 1, "task_events.created_at")
                    if when is not None:
                        out[_task_id(row)] = when
                except _Malformed:
                    continue  # the task's own created_at still bounds its wait
        return out
