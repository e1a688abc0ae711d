"""Reads of what happened: events, runs and cards, followed by cursor or per task."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from watchers.cards import CARD_MARK
from watchers.hermes.events import READY, lane_of
from watchers.model import (
    FailureRecord,
)
from watchers.store.connection import Connection
from watchers.store.rows import (
    AUTHOR,
    ERROR_TEXT_LIMIT,
    ESCALATED,
    PAYLOAD_LIMIT,
    EventRow,
    ResetHistory,
    StatusEvent,
    _chunks,
    _event_row,
    _Malformed,
    _opt_int,
    _opt_text,
    _payload,
    _req_int,
    _task_id,
    _Undecodable,
)


class HistoryReads(Connection):
    """The board's history: events, runs, cards."""

    def max_event_id(self) -> int:
        rows = self._query("SELECT COALESCE(MAX(id), 0) FROM task_events")
        return int(rows[0][0])

    def status_events_after(self, cursor: int, kinds: Iterable[str]) -> list[StatusEvent]:
        """Events of the given kinds with id > cursor, oldest first (a rowid range scan)."""
        kinds = tuple(kinds)
        marks = ",".join("?" * len(kinds))
        rows = self._query(
            f"SELECT id, task_id, kind, created_at FROM task_events "
            f"WHERE id > ? AND kind IN ({marks}) ORDER BY id",
            (cursor, *kinds),
        )
        return self._events(rows)

    def latest_status_event_of_blocked(self, kinds: Iterable[str]) -> list[StatusEvent]:
        """For every `blocked` task, its most recent event among `kinds`."""
        kinds = tuple(kinds)
        marks = ",".join("?" * len(kinds))
        rows = self._query(
            "SELECT e.id, e.task_id, e.kind, e.created_at FROM tasks t "
            "JOIN task_events e ON e.id = ("
            f"  SELECT id FROM task_events WHERE task_id = t.id AND kind IN ({marks}) "
            "   ORDER BY id DESC LIMIT 1) "
            "WHERE t.status = 'blocked'",
            kinds,
        )
        return self._events(rows)

    def _events(self, rows: Iterable[tuple[Any, ...]]) -> list[StatusEvent]:
        out = []
        for row in rows:
            try:
                out.append(
                    StatusEvent(
                        event_id=_req_int(row, 0, "task_events.id"),
                        task_id=_task_id(row[1:]),
                        kind=_opt_text(row, 2, "kind") or "",
                        created_at=_req_int(row, 3, "task_events.created_at"),
                    )
                )
            except _Malformed:
                continue  # an event we cannot read cannot be acted on; the task row decides
        return out

    def runs_of_tasks(
        self, task_ids: Sequence[str]
    ) -> Iterator[tuple[str, int, int, str | None, str | None]]:
        """(task id, run id, started_at, outcome, error) of the given tasks' runs, each
        task's oldest first, 500 tasks a read (through the runs' task index). Undecodable
        rows are skipped."""
        for chunk, _marks in _chunks(task_ids):
            for row in self._rows_of(
                "SELECT r.id, r.task_id, r.started_at, r.outcome, r.error FROM task_runs r "
                "WHERE r.task_id IN ({marks}) ORDER BY r.task_id, r.id",
                list(chunk),
                (),
            ):
                try:
                    yield (
                        _task_id(row[1:]),
                        _req_int(row, 0, "task_runs.id"),
                        _req_int(row, 2, "started_at"),
                        _opt_text(row, 3, "outcome"),
                        _opt_text(row, 4, "error"),
                    )
                except _Malformed:
                    continue

    def events_of_tasks(
        self, task_ids: Sequence[str], kinds: Iterable[str], upto: int
    ) -> Iterator[EventRow]:
        """Events of the given kinds, with ids up to `upto`, of the given tasks, each
        task's oldest first, 500 tasks a read; payloads only where a budget needs them.
        Undecodable rows are skipped."""
        kinds = tuple(kinds)
        kind_marks = ",".join("?" * len(kinds))
        for chunk, _marks in _chunks(task_ids):
            for row in self._rows_of(
                "SELECT e.id, e.task_id, e.kind, e.created_at, "
                "CASE WHEN e.kind IN ('unblocked', 'budget_warning', 'budget_malformed') "
                "THEN e.payload END, NULL, NULL, NULL, e.run_id "
                "FROM task_events e WHERE e.task_id IN ({marks}) AND e.id <= ? "
                f"AND e.kind IN ({kind_marks}) ORDER BY e.task_id, e.id",
                list(chunk),
                (upto, *kinds),
            ):
                event = _event_row(row, self._json(row[4], "task_events", row[0], row[1]))
                if event is not None:
                    yield event

    def heartbeat_counts(
        self, run_ids: Sequence[int], upto: int | None = None
    ) -> dict[int, tuple[int, int]]:
        """(heartbeats, latest heartbeat event id) per run, counting events up to `upto`."""
        out: dict[int, tuple[int, int]] = {}
        limit = upto if upto is not None else 2**62
        for chunk, marks in _chunks(run_ids):
            for run_id, n, last in self._query(
                f"SELECT run_id, COUNT(*), MAX(id) FROM task_events WHERE run_id IN ({marks}) "
                "AND kind = 'heartbeat' AND id <= ? GROUP BY run_id",
                (*chunk, limit),
            ):
                if isinstance(run_id, int):
                    out[run_id] = (int(n), int(last))
        return out

    def first_event_id_since(self, since: float) -> int:
        """The first event id at or after `since` (binary search over ids: events are
        appended in time order; nothing is scanned)."""
        lo, hi = 0, self.max_event_id()
        while lo < hi:
            mid = (lo + hi) // 2
            rows = self._query(
                "SELECT id, created_at FROM task_events WHERE id > ? ORDER BY id LIMIT 1", (mid,)
            )
            if not rows or not isinstance(rows[0][1], int) or rows[0][1] >= since:
                hi = mid
            else:
                lo = int(rows[0][0])
        return lo

    def events_with_runs_after(self, cursor: int, kinds: Iterable[str]) -> list[EventRow]:
        kinds = tuple(kinds)
        marks = ",".join("?" * len(kinds))
        rows = self._query(
            "SELECT e.id, e.task_id, e.kind, e.created_at, e.payload, r.profile, r.outcome, "
            "r.error, r.id FROM task_events e LEFT JOIN task_runs r ON r.id = e.run_id "
            f"WHERE e.id > ? AND e.kind IN ({marks}) ORDER BY e.id",
            (cursor, *kinds),
        )
        out = []
        for row in rows:
            event = _event_row(row, self._json(row[4], "task_events", row[0], row[1]))
            if event is not None:
                out.append(event)
        return out

    def card_rows_between(self, after: int, upto: int) -> list[tuple[int, str, str, str]]:
        """(rowid, id, title, status) of tasks titled like a distress card, rowid in (after, upto]."""
        out = []
        for row in self._query(
            "SELECT rowid, id, title, status FROM tasks WHERE rowid > ? AND rowid <= ? "
            "AND instr(title, ?) > 0 ORDER BY rowid",
            (after, upto, CARD_MARK),
        ):
            if all(isinstance(v, str) and not isinstance(v, _Undecodable) for v in row[1:]):
                out.append((int(row[0]), row[1], row[2], row[3]))
        return out

    def last_event_id(self, task_id: str) -> int | None:
        rows = self._query("SELECT MAX(id) FROM task_events WHERE task_id = ?", (task_id,))
        value = rows[0][0] if rows else None
        return value if isinstance(value, int) else None

    def last_event_at(self, task_id: str) -> int | None:
        rows = self._query("SELECT MAX(created_at) FROM task_events WHERE task_id = ?", (task_id,))
        value = rows[0][0] if rows else None
        return value if isinstance(value, int) else None

    def run_summaries(self, task_id: str, limit: int = 3) -> tuple[list[str], int]:
        """The latest non-empty run summaries, and how many attempts the task has had."""
        summaries = [
            r[0]
            for r in self._query(
                "SELECT summary FROM task_runs WHERE task_id = ? AND summary IS NOT NULL "
                "AND summary != '' ORDER BY id DESC LIMIT ?",
                (task_id, limit),
            )
            if isinstance(r[0], str) and not isinstance(r[0], _Undecodable)
        ]
        attempts = int(
            self._query("SELECT COUNT(*) FROM task_runs WHERE task_id = ?", (task_id,))[0][0]
        )
        return summaries, attempts

    def failure_history(self, task_id: str, limit: int) -> list[FailureRecord]:
        """The task's closed attempts, newest first, plus its last failure text."""
        rows = self._query(
            "SELECT id, outcome, error FROM task_runs WHERE task_id = ? AND ended_at IS NOT NULL "
            "ORDER BY id DESC LIMIT ?",
            (task_id, limit),
        )
        out = []
        for row in rows:
            try:
                out.append(
                    FailureRecord(
                        run_id=_opt_int(row, 0, "task_runs.id"),
                        outcome=_opt_text(row, 1, "outcome") or "",
                        error=_opt_text(row, 2, "error") or "",
                    )
                )
            except _Malformed:
                out.append(FailureRecord(run_id=None, outcome="", error=""))
        return out

    def protocol_violation_streak(self, task_id: str, scan: int = 50) -> int:
        """Trailing closed runs that were clean exits without a terminal call (Hermes's
        marker in the run metadata, or its error text); rate-limited runs are neutral."""
        streak = 0
        for outcome, error, metadata in self._query(
            "SELECT outcome, error, metadata FROM task_runs WHERE task_id = ? "
            "AND ended_at IS NOT NULL ORDER BY id DESC LIMIT ?",
            (task_id, scan),
        ):
            if outcome == "rate_limited":
                continue
            if outcome == "crashed" and (
                _payload(metadata).get("protocol_violation")
                or (isinstance(error, str) and "protocol violation" in error)
            ):
                streak += 1
                continue
            break
        return streak

    def last_failure_error(self, task_id: str) -> str | None:
        rows = self._query("SELECT last_failure_error FROM tasks WHERE id = ?", (task_id,))
        if not rows:
            return None
        try:
            return _opt_text(rows[0], 0, "last_failure_error")
        except _Malformed:
            return None

    def claimed_lanes(self, task_ids: Sequence[str]) -> dict[str, str]:
        """The lane each task's latest attempt was claimed from (its latest `claimed`
        event), for the tasks claimed from a lane other than `ready`; others are absent."""
        out: dict[str, str] = {}
        for chunk, marks in _chunks(task_ids):
            for row in self._query(
                "SELECT task_id, substr(payload, 1, ?) FROM task_events WHERE id IN ("
                f"  SELECT MAX(id) FROM task_events WHERE task_id IN ({marks}) "
                "   AND kind = 'claimed' GROUP BY task_id)",
                (PAYLOAD_LIMIT, *chunk),
            ):
                if not isinstance(row[0], str) or isinstance(row[0], _Undecodable):
                    continue
                lane = lane_of(_payload(row[1]))  # a cut payload is simply not a review claim
                if lane != READY:
                    out[row[0]] = lane
        return out

    def failure_texts(self, task_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """(status, last_failure_error) of each task that has a failure text (capped)."""
        out: dict[str, tuple[str, str]] = {}
        for chunk, marks in _chunks(task_ids):
            for row in self._query(
                "SELECT id, status, substr(last_failure_error, 1, ?) FROM tasks "
                f"WHERE id IN ({marks}) AND last_failure_error IS NOT NULL",
                (ERROR_TEXT_LIMIT * 2, *chunk),
            ):
                try:
                    text = _opt_text(row, 2, "last_failure_error")
                    if text:
                        out[_task_id(row)] = (_opt_text(row, 1, "status") or "", text)
                except _Malformed:
                    continue
        return out

    def reset_history(self, task_id: str, since: int, gave_up_event_id: int) -> ResetHistory:
        """Our own resets of this task since `since`, and whether the give-up with
        id `gave_up_event_id` was already escalated. Durable: read from events."""
        rows = self._query(
            "SELECT id, kind, payload, created_at FROM task_events WHERE task_id = ? "
            "AND kind IN ('unblocked', ?) AND (created_at >= ? OR id > ?) ORDER BY id",
            (task_id, ESCALATED, since, gave_up_event_id),
        )
        resets: list[int] = []
        escalated = False
        for row in rows:
            payload = self._json(row[2], "task_events", row[0], task_id)
            if payload.get("by") != AUTHOR:
                continue
            if row[1] == "unblocked" and payload.get("reset") and isinstance(row[3], int):
                if row[3] >= since:
                    resets.append(row[3])
            elif row[1] == ESCALATED and payload.get("gave_up_event_id") == gave_up_event_id:
                escalated = True
        return ResetHistory(tuple(resets), escalated)
