"""One Hermes board file, read and written safely beside Hermes's own dispatcher.

Rules this module keeps (see the board facts in the README):
- every write is one short `BEGIN IMMEDIATE` transaction holding all of one action's
  rows (task, run, events, comment), or nothing;
- every transition is a compare-and-swap on what was read, and counts only when
  exactly one row changed;
- a locked board is a transient error (StoreBusy); the next tick retries;
- a row that cannot be decoded is skipped and reported, never fatal;
- Hermes's `<db>.dispatch.lock` is never taken.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from watchers.cards import CARD_MARK, parse_card_title
from watchers.errors import BoardError, WatchersError, classify_sqlite_error
from watchers.hermes.events import LANES, READY, STATE_CHANGE_KINDS, lane_of
from watchers.model import (
    KNOWN_STATUSES,
    Action,
    ActionKind,
    FailureRecord,
    RunningTask,
    SkippedRow,
    TaskStatus,
)
from watchers.store.schema import REQUIRED_TABLES, REQUIRED_TASK_COLUMNS

_T = TypeVar("_T")

AUTHOR = "watchers"
"""`created_by` / comment author / payload `by` for everything the daemon writes."""

ERROR_TEXT_LIMIT = 500
NEWER_CARD_DEFAULTS = {"completion_contract": "local-only"}
"""What Hermes main's create_task writes into columns 0.19 does not have."""
PAYLOAD_LIMIT = 4096  # a claimed event's payload is short; an agent-written one is cut
CACHE_KIB = 512  # Hermes caps last_failure_error at 500 characters


ESCALATED = "escalated"
BUDGET_WARNING = "budget_warning"
BUDGET_MALFORMED = "budget_malformed"


class _Undecodable(str):
    """A text value that was not valid UTF-8 (kept as escaped text for the report)."""

    __slots__ = ()


def _lenient_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _Undecodable(raw.decode("utf-8", "backslashreplace"))


class _Malformed(ValueError):
    pass


def _opt_int(row: Sequence[Any], index: int, name: str) -> int | None:
    value = row[index]
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and not isinstance(value, _Undecodable):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _Malformed(f"{name} is not an integer")


def _req_int(row: Sequence[Any], index: int, name: str) -> int:
    value = _opt_int(row, index, name)
    if value is None:
        raise _Malformed(f"{name} is NULL")
    return value


def _opt_text(row: Sequence[Any], index: int, name: str) -> str | None:
    value = row[index]
    if value is None:
        return None
    if isinstance(value, _Undecodable):
        raise _Malformed(f"{name} is not valid UTF-8")
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _Malformed(f"{name} has an unexpected type")


def _opt_float(row: Sequence[Any], index: int) -> float | None:
    """Lenient: a fingerprint we cannot read is treated as absent, not as malformed."""
    value = row[index]
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and not isinstance(value, _Undecodable):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _task_id(row: Sequence[Any]) -> str:
    value = row[0]
    if not isinstance(value, str) or isinstance(value, _Undecodable) or not value:
        raise _Malformed("id is missing or not text")
    return value


_INT_COLUMNS = (3, 4, 5, 6, 7, 9, 11)
PID_MAX_LIMIT = 4_194_304  # Linux's PID_MAX_LIMIT: no kernel hands out a larger PID


@functools.cache
def host_pid_max() -> int:
    """PIDs on this host are below this (`kernel.pid_max`); the kernel's limit if unreadable."""
    try:
        with open("/proc/sys/kernel/pid_max", "rb") as fh:
            value = int(fh.read(32).strip())
    except (OSError, ValueError):
        return PID_MAX_LIMIT
    return value if 0 < value <= PID_MAX_LIMIT else PID_MAX_LIMIT


def _chunks(ids: Sequence[Any]) -> Iterator[tuple[Sequence[Any], str]]:
    """`ids` in slices SQLite takes as one `IN (…)` list, each with its placeholders."""
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        yield chunk, ",".join("?" * len(chunk))


def _valid_pid(pid: int | None) -> bool:
    return pid is None or 0 < pid < host_pid_max()


def _well_typed_running(row: Sequence[Any]) -> RunningTask | None:
    """The common case, without per-field checks: every value already has its type.
    Anything unusual returns None and goes through the careful parser."""
    tid, assignee, lock = row[0], row[1], row[2]
    if type(tid) is not str or not tid:  # `type is`: excludes _Undecodable
        return None
    if (assignee is not None and type(assignee) is not str) or (
        lock is not None and type(lock) is not str
    ):
        return None
    if type(row[8]) is not int:
        return None
    for i in _INT_COLUMNS:
        if row[i] is not None and type(row[i]) is not int:
            return None
    if not _valid_pid(row[4]):
        return None
    started = row[10]
    if started is not None and type(started) not in (int, float):
        return None
    return RunningTask(
        task_id=tid,
        assignee=assignee,
        claim_lock=lock,
        claim_expires=row[3],
        worker_pid=row[4],
        current_run_id=row[5],
        attempt_started_at=row[11] if row[11] is not None else row[6],
        last_heartbeat_at=row[7],
        consecutive_failures=row[8],
        max_retries=row[9],
        worker_started_at=None if started is None else float(started),
    )


@dataclass(frozen=True, slots=True)
class StatusEvent:
    event_id: int
    task_id: str
    kind: str
    created_at: int


@dataclass(frozen=True, slots=True)
class EventRow:
    """An event with the attempt it belongs to (for reading signals out of history)."""

    event_id: int
    task_id: str
    kind: str
    created_at: int
    payload: dict[str, Any]
    run_profile: str | None
    run_outcome: str | None
    run_error: str | None
    run_id: int | None


@dataclass(frozen=True, slots=True)
class BudgetRow:
    task_id: str
    status: str
    assignee: str | None
    body: str
    max_runtime_seconds: int | None
    goal_max_turns: int | None
    max_retries: int | None
    block_recurrences: int


@dataclass(frozen=True, slots=True)
class TaskDetail:
    task_id: str
    title: str
    body: str
    status: str
    assignee: str | None
    provider_override: str | None
    branch: str | None
    workspace: str | None
    consecutive_failures: int
    completed_at: int | None
    created_at: int
    model_override: str | None = None


@dataclass(frozen=True, slots=True)
class ResetHistory:
    reset_times: tuple[int, ...]
    escalated: bool


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def board_slug(path: Path) -> str:
    """The board's name as Hermes knows it: `default` for `<root>/kanban.db`,
    `<slug>` for `<root>/kanban/boards/<slug>/kanban.db`, else the file's stem."""
    if path.name == "kanban.db" and path.parent.parent.name == "boards":
        return path.parent.name
    if path.name == "kanban.db":
        return "default"
    return path.stem


class BoardStore:
    """A connection to one board. Not shared between threads at the same time."""

    def __init__(
        self, path: Path, conn: sqlite3.Connection, slug: str, *, readonly: bool = False
    ) -> None:
        self.path = path
        self.slug = slug
        self.readonly = readonly
        self._conn = conn
        self.identity = _identity(path)  # the file this connection reads, not just its name
        self._noted: set[tuple[str, Any]] = set()
        self._problems: list[SkippedRow] = []
        self.task_columns = self._columns("tasks")
        self.run_columns = self._columns("task_runs")

    # -- opening ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        slug: str | None = None,
        busy_timeout: float = 2.0,
        readonly: bool = False,
    ) -> BoardStore:
        """Open an existing Hermes board, or raise BoardError (exit 66); a board
        locked by another writer raises StoreBusy (transient) instead."""
        path = Path(path)
        if not path.exists():
            raise BoardError(path, "does not exist")
        if not path.is_file():
            raise BoardError(path, "is not a file")
        mode = "ro" if readonly else "rw"
        try:
            conn = sqlite3.connect(
                f"file:{path}?mode={mode}",
                uri=True,
                isolation_level=None,
                timeout=busy_timeout,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise BoardError(path, f"cannot be opened: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            # Ticks read a few index pages; the OS page cache holds the file anyway.
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            if not readonly:
                # Leave checkpoints to Hermes (it runs one every 100 pages). A checkpoint
                # of ours can grow the file between the two reads of Hermes 0.19's
                # post-commit length check, which then fails Hermes's committed write
                # with "torn-extend detected".
                conn.execute("PRAGMA wal_autocheckpoint=0")
                # As Hermes: newer boards carry foreign keys (ON DELETE RESTRICT on tasks);
                # we never delete a row, and a write that would break one fails whole.
                conn.execute("PRAGMA foreign_keys=ON")
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.DatabaseError as exc:
            conn.close()
            failure = classify_sqlite_error(exc, str(path))
            if failure.transient:
                raise failure from None  # locked by another writer: try again next tick
            raise BoardError(path, f"is not a SQLite database ({exc})") from None
        missing = REQUIRED_TABLES - tables
        if missing:
            conn.close()
            raise BoardError(
                path, f"is not a Hermes board (missing tables: {', '.join(sorted(missing))})"
            )
        try:
            store = cls(path, conn, slug or board_slug(path), readonly=readonly)
        except sqlite3.Error as exc:
            conn.close()
            raise classify_sqlite_error(exc, str(path)) from None
        missing_cols = REQUIRED_TASK_COLUMNS - store.task_columns
        if missing_cols:
            store.close()
            raise BoardError(
                path, f"is not a Hermes board (tasks lacks: {', '.join(sorted(missing_cols))})"
            )
        return store

    def close(self) -> None:
        """Close without checkpointing the board's WAL away from under Hermes.

        The last writable connection to close checkpoints and deletes the WAL if it can
        take an exclusive lock. Hermes 0.19 drops its own POSIX locks on the board (a
        plain open()/close() of the file after each commit), so our close could delete
        a WAL that Hermes is still writing to, and Hermes's later writes would be lost
        to everyone else. A read transaction held on a second, read-only connection in
        this process blocks that exclusive lock (SQLite counts locks per file across a
        process's connections), and a read-only connection never deletes the WAL."""
        if self.readonly:
            self._conn.close()
            return
        guard: sqlite3.Connection | None = None
        try:
            # never wait: a board locked by someone else cannot be checkpointed by us either
            guard = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, timeout=0
            )
            guard.execute("BEGIN")
            guard.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.Error:
            pass  # no guard possible (file gone?): close as SQLite would anyway
        try:
            self._conn.close()
        finally:
            if guard is not None:
                with contextlib.suppress(sqlite3.Error):
                    guard.execute("COMMIT")
                guard.close()

    def _json(self, raw: Any, table: str, row_id: Any, task_id: Any) -> dict[str, Any]:
        """A row's JSON object; one that cannot be read is empty and reported once."""
        value, problem = parse_json_object(raw)
        if problem is not None:
            key = (table, row_id)
            if key not in self._noted:
                if len(self._noted) >= 10_000:
                    self._noted.clear()
                self._noted.add(key)
                if len(self._problems) < 100:
                    self._problems.append(
                        SkippedRow(
                            self.slug,
                            table,
                            task_id if isinstance(task_id, str) else None,
                            f"row {row_id}: JSON ignored ({problem})",
                        )
                    )
        return value

    def take_problems(self) -> list[SkippedRow]:
        """Rows read since the last call whose JSON was ignored (each reported once)."""
        out, self._problems = self._problems, []
        return out

    def _columns(self, table: str) -> frozenset[str]:
        return frozenset(r[1] for r in self._conn.execute(f"PRAGMA table_info({table})"))

    def has_task_column(self, name: str) -> bool:
        return name in self.task_columns

    # -- low-level helpers -----------------------------------------------------

    def _fail(self, exc: sqlite3.Error) -> WatchersError:
        return classify_sqlite_error(exc, self.slug)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """One read, under the board's write lock when we may take it.

        A read whose snapshot is older than a Hermes commit holds back Hermes's
        checkpoint of that commit (it copies only frames the oldest reader can see): a
        checkpoint cut short that way can leave the file one page shorter than its header
        says, and Hermes 0.19's post-commit length check then fails the committed write
        ("torn-extend detected"). Under the write lock no Hermes commit can happen while
        we read, so every read of ours sees the latest frame and never cuts a checkpoint
        short. A read takes milliseconds; Hermes waits for it (busy timeout 120 s)."""
        if self.readonly or self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read. Undecodable text is tolerated: the query is repeated with a
        lenient decoder and the caller's parser rejects the affected rows only."""
        try:
            with self._reading():
                try:
                    return self._conn.execute(sql, params).fetchall()
                except sqlite3.OperationalError as exc:
                    if "decode" not in str(exc).lower():
                        raise
                self._conn.text_factory = _lenient_text
                try:
                    return self._conn.execute(sql, params).fetchall()
                finally:
                    self._conn.text_factory = str
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short IMMEDIATE transaction: all of it commits, or none of it."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        try:
            yield conn
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._fail(exc) from exc
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise self._fail(exc) from exc

    # -- reads -----------------------------------------------------------------

    def _col(self, name: str, alias: str = "t") -> str:
        return f"{alias}.{name}" if name in self.task_columns else "NULL"

    def running_tasks(
        self, memo: dict[tuple[Any, ...], RunningTask] | None = None
    ) -> tuple[list[RunningTask], list[SkippedRow]]:
        """Every `running` task with its open attempt; malformed rows are reported. With
        `memo` (the caller's, from its last call), a row read before is not parsed again;
        on return it holds exactly this call's well-typed rows."""
        sql = (
            "SELECT t.id, t.assignee, t.claim_lock, t.claim_expires, t.worker_pid, "
            "t.current_run_id, t.started_at, t.last_heartbeat_at, t.consecutive_failures, "
            f"{self._col('max_retries')}, {self._col('worker_started_at')}, r.started_at "
            "FROM tasks t LEFT JOIN task_runs r ON r.id = t.current_run_id "
            "WHERE t.status = 'running'"
        )
        tasks: list[RunningTask] = []
        skipped: list[SkippedRow] = []
        known = dict(memo) if memo else {}
        if memo is not None:
            memo.clear()
        for row in self._query(sql):
            fast = known.get(row)
            if fast is None:
                fast = _well_typed_running(row)
            if fast is not None:
                tasks.append(fast)
                if memo is not None:
                    memo[row] = fast
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
                        assignee=_opt_text(row, 1, "assignee"),
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
                        status=_opt_text(row, 1, "status") or "",
                        assignee=_opt_text(row, 2, "assignee"),
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

    def _pages(self, sql: str, params: Sequence[Any], page: int = 500) -> Iterator[tuple[Any, ...]]:
        """Rows of `sql` (which takes `? ` for the last key seen, then `params`, and ends
        in `ORDER BY <key> LIMIT ?`), read in pages: each page is its own short read, so
        no read transaction of ours spans the whole scan (a long one would cut Hermes's
        checkpoints short; see the README's torn-extend caveat). The key is column 0."""
        after = 0
        while True:
            rows = self._lenient_read(sql, (after, *params, page))
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1][0]

    def _open_task_pages(self, page: int = 500) -> Iterator[list[str]]:
        """Ids of every task in an open status (any known status but done and archived),
        in pages, from Hermes's status index: each page is its own short read."""
        statuses = sorted(KNOWN_STATUSES - {TaskStatus.DONE.value, TaskStatus.ARCHIVED.value})
        marks = ",".join("?" * len(statuses))
        after = 0
        while True:
            with self._reading():
                rows = self._query(
                    f"SELECT rowid, id FROM tasks WHERE status IN ({marks}) AND rowid > ? "
                    "ORDER BY rowid LIMIT ?",
                    (*statuses, after, page),
                )
            ids = [r[1] for r in rows if isinstance(r[1], str) and r[1]]
            if ids:
                yield ids
            if len(rows) < page:
                return
            after = rows[-1][0]

    def _rows_of(
        self, sql: str, task_ids: list[str], params: Sequence[Any]
    ) -> list[tuple[Any, ...]]:
        """`sql` (taking the ids' marks as `{marks}`, then `params`) over one page of task
        ids, read leniently (an undecodable text is marked, not raised)."""
        marks = ",".join("?" * len(task_ids))
        return self._lenient_read(sql.format(marks=marks), (*task_ids, *params))

    def _lenient_read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """One short read whose undecodable texts are marked, not raised. The lenient
        decoder is set only while it runs: the caller may read otherwise in between."""
        self._conn.text_factory = _lenient_text
        try:
            with self._reading():
                return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        finally:
            self._conn.text_factory = str

    def runs_of_open_tasks(self) -> Iterator[tuple[str, int, int, str | None, str | None]]:
        """(task id, run id, started_at, outcome, error) of every task not done/archived,
        each task's oldest first, a page of tasks at a time (found through the status
        index, their runs through the runs' task index: a board's closed history is
        never scanned). Undecodable rows are skipped."""
        for ids in self._open_task_pages():
            for row in self._rows_of(
                "SELECT r.id, r.task_id, r.started_at, r.outcome, r.error FROM task_runs r "
                "WHERE r.task_id IN ({marks}) ORDER BY r.task_id, r.id",
                ids,
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

    def events_of_open_tasks(self, kinds: Iterable[str], upto: int) -> Iterator[EventRow]:
        """Events of the given kinds, with ids up to `upto`, of every task not done/archived,
        each task's oldest first, a page of tasks at a time; payloads only where a budget
        needs them. Undecodable rows are skipped."""
        kinds = tuple(kinds)
        kind_marks = ",".join("?" * len(kinds))
        for ids in self._open_task_pages():
            for row in self._rows_of(
                "SELECT e.id, e.task_id, e.kind, e.created_at, "
                "CASE WHEN e.kind IN ('unblocked', 'budget_warning', 'budget_malformed') "
                "THEN e.payload END, NULL, NULL, NULL, e.run_id "
                "FROM task_events e WHERE e.task_id IN ({marks}) AND e.id <= ? "
                f"AND e.kind IN ({kind_marks}) ORDER BY e.task_id, e.id",
                ids,
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

    def task_details(self, task_ids: Sequence[str]) -> dict[str, TaskDetail]:
        out: dict[str, TaskDetail] = {}
        for chunk, marks in _chunks(task_ids):
            for row in self._query(
                "SELECT id, title, body, status, assignee, "
                f"{self._col('provider_override')}, {self._col('branch_name')}, "
                f"{self._col('workspace_path')}, consecutive_failures, completed_at, created_at, "
                f"{self._col('model_override')} FROM tasks t WHERE id IN ({marks})",
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
                    )
                except _Malformed:
                    continue
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

    def top_task(self) -> tuple[int, str | None]:
        """The highest rowid of `tasks` and the id of the task there."""
        rows = self._query("SELECT rowid, id FROM tasks ORDER BY rowid DESC LIMIT 1")
        if not rows:
            return 0, None
        return int(rows[0][0]), rows[0][1] if isinstance(rows[0][1], str) else None

    def task_id_at_rowid(self, rowid: int) -> str | None:
        rows = self._query("SELECT id FROM tasks WHERE rowid = ?", (rowid,))
        return rows[0][0] if rows and isinstance(rows[0][0], str) else None

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

    # -- writes ----------------------------------------------------------------

    def apply(self, action: Action, now: int) -> bool:
        """Apply one action in one transaction. True when it committed; False when
        the row no longer matched what the decision read (someone else acted)."""
        if action.kind in (ActionKind.REAP, ActionKind.RECLAIM):
            return self._release_run(action, now)
        if action.kind is ActionKind.RESET:
            return self._reset(action, now)
        if action.kind is ActionKind.ESCALATE:
            return self._escalate(action, now)
        if action.kind is ActionKind.REASSIGN:
            return self._reassign(action, now)
        if action.kind is ActionKind.CARD:
            return self._write_card(action, now)
        if action.kind in (ActionKind.WARN, ActionKind.NOTE):
            return self._budget_notice(action, now)
        raise ValueError(f"unknown action kind {action.kind}")

    def _comment(self, conn: sqlite3.Connection, task_id: str, body: str, now: int) -> None:
        conn.execute(
            "INSERT INTO task_comments (task_id, author, body, created_at) VALUES (?, ?, ?, ?)",
            (task_id, AUTHOR, body, now),
        )
        # Hermes records every comment as an event too; its notifier tails events.
        insert_event(conn, task_id, "commented", {"author": AUTHOR, "len": len(body)}, now)

    def _release_run(self, action: Action, now: int) -> bool:
        e, p = action.expect, action.plan
        error = str(p["error"])[:ERROR_TEXT_LIMIT]
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE tasks SET status = ?, claim_lock = NULL, claim_expires = NULL, "
                "worker_pid = NULL, current_run_id = NULL, consecutive_failures = ?, "
                "last_failure_error = CASE WHEN ? THEN ? ELSE last_failure_error END "
                "WHERE id = ? AND status = 'running' AND claim_lock IS ? AND worker_pid IS ? "
                "AND current_run_id IS ? AND consecutive_failures = ?",
                (
                    p["new_status"],
                    p["failures"],
                    bool(p["record_error"]),
                    error,
                    action.task_id,
                    e["claim_lock"],
                    e["worker_pid"],
                    e["current_run_id"],
                    e["consecutive_failures"],
                ),
            )
            if cur.rowcount != 1:
                return False
            run_id = e["current_run_id"]
            metadata = {"by": AUTHOR, **p["metadata"]}
            if run_id is not None:
                conn.execute(
                    "UPDATE task_runs SET status = ?, outcome = ?, error = ?, metadata = ?, "
                    "ended_at = ?, claim_lock = NULL, claim_expires = NULL, worker_pid = NULL "
                    "WHERE id = ? AND ended_at IS NULL",
                    (p["outcome"], p["outcome"], error, json.dumps(metadata), now, run_id),
                )
            payload = {"by": AUTHOR, **p["event_payload"], "evidence": dict(action.evidence)}
            insert_event(conn, action.task_id, p["event_kind"], payload, now, run_id)
            if p.get("trip"):
                insert_event(
                    conn,
                    action.task_id,
                    "gave_up",
                    {
                        "by": AUTHOR,
                        "failures": p["failures"],
                        "effective_limit": p["effective_limit"],
                        "limit_source": p["limit_source"],
                        "error": error,
                        "trigger_outcome": p["outcome"],
                        **p["event_payload"],
                    },
                    now,
                )
        return True

    def _reset(self, action: Action, now: int) -> bool:
        e, p = action.expect, action.plan
        marks = ",".join("?" * len(STATE_CHANGE_KINDS))
        with self._write() as conn:
            row = conn.execute(
                "SELECT current_run_id FROM tasks WHERE id = ? AND status = 'blocked'",
                (action.task_id,),
            ).fetchone()
            if row is None:
                return False
            new_status = _unblocked_status(conn, action.task_id, p.get("lane", READY))
            cur = conn.execute(
                "UPDATE tasks SET status = ?, current_run_id = NULL, consecutive_failures = 0, "
                "last_failure_error = NULL "
                "WHERE id = ? AND status = 'blocked' AND consecutive_failures = ? "
                "AND NOT EXISTS (SELECT 1 FROM task_events "
                f"WHERE task_id = ? AND id > ? AND kind IN ({marks}))",
                (
                    new_status,
                    action.task_id,
                    e["consecutive_failures"],
                    action.task_id,
                    e["gave_up_event_id"],
                    *STATE_CHANGE_KINDS,
                ),
            )
            if cur.rowcount != 1:
                return False
            if row[0] is not None:  # keep Hermes's invariant: no open run outside `running`
                conn.execute(
                    "UPDATE task_runs SET status = 'reclaimed', outcome = 'reclaimed', "
                    "ended_at = ?, "
                    "summary = COALESCE(summary, 'closed by watchers on reset'), "
                    "claim_lock = NULL, claim_expires = NULL, worker_pid = NULL "
                    "WHERE id = ? AND ended_at IS NULL",
                    (now, row[0]),
                )
            payload = {
                "by": AUTHOR,
                "reset": p["reset_number"],
                "status": new_status,
                "reason": action.reason,
                "gave_up_event_id": e["gave_up_event_id"],
                "evidence": dict(action.evidence),
            }
            insert_event(conn, action.task_id, "unblocked", payload, now)
            self._comment(
                conn, action.task_id, str(p["comment"]).replace("{status}", new_status), now
            )
        return True

    def _escalate(self, action: Action, now: int) -> bool:
        e, p = action.expect, action.plan
        marks = ",".join("?" * len(STATE_CHANGE_KINDS))
        with self._write() as conn:
            cur = conn.execute(
                "SELECT 1 FROM tasks WHERE id = ? AND status = 'blocked' "
                # any escalation after the give-up is an escalation of this give-up
                f"AND NOT EXISTS (SELECT 1 FROM task_events WHERE task_id = ? AND id > ? "
                f"  AND kind IN ({marks}, ?))",
                (
                    action.task_id,
                    action.task_id,
                    e["gave_up_event_id"],
                    *STATE_CHANGE_KINDS,
                    ESCALATED,
                ),
            ).fetchone()
            if cur is None:
                return False
            payload = {
                "by": AUTHOR,
                "reason": action.reason,
                "gave_up_event_id": e["gave_up_event_id"],
                "evidence": dict(action.evidence),
            }
            insert_event(conn, action.task_id, ESCALATED, payload, now)
            self._comment(conn, action.task_id, str(p["comment"]), now)
        return True

    def _budget_notice(self, action: Action, now: int) -> bool:
        """A budget warning (once per attempt and budget) or a malformed-line report (once
        per line): an event and a comment, unless one was written already."""
        e = action.expect
        warn = action.kind is ActionKind.WARN
        kind = BUDGET_WARNING if warn else BUDGET_MALFORMED
        marker = json.dumps(
            {"budget": e["budget"]} if warn else {"line": e["line"]}, ensure_ascii=False
        )[1:-1]
        with self._write() as conn:
            seen = conn.execute(
                "SELECT 1 FROM task_events WHERE task_id = ? AND kind = ? AND run_id IS ? "
                "AND instr(payload, ?) > 0 LIMIT 1",
                (action.task_id, kind, e.get("run_id"), marker),
            ).fetchone()
            if seen is not None:
                return False
            payload = {
                "by": AUTHOR,
                "reason": action.reason,
                **({"budget": e["budget"]} if warn else {"line": e["line"]}),
                "evidence": dict(action.evidence),
            }
            insert_event(conn, action.task_id, kind, payload, now, e.get("run_id"))
            self._comment(conn, action.task_id, str(action.plan["comment"]), now)
        return True

    def _reassign(self, action: Action, now: int) -> bool:
        e, p = action.expect, action.plan
        with self._write() as conn:
            row = conn.execute(
                "SELECT status FROM tasks WHERE id = ? AND assignee IS ? AND status = ? "
                "AND status NOT IN ('running', 'done', 'archived')",
                (action.task_id, e["assignee"], e["status"]),
            ).fetchone()
            if row is None:
                return False
            new_status = row[0]
            if row[0] == "blocked":
                new_status = _unblocked_status(conn, action.task_id, p.get("lane", READY))
            # As Hermes's assign_task: a new profile starts with a fresh failure budget.
            conn.execute(
                "UPDATE tasks SET assignee = ?, status = ?, consecutive_failures = 0, "
                "last_failure_error = NULL WHERE id = ?",
                (p["to"], new_status, action.task_id),
            )
            insert_event(
                conn,
                action.task_id,
                "assigned",
                {
                    "assignee": p["to"],
                    "by": AUTHOR,
                    "from": p["from"],
                    "to": p["to"],
                    "from_provider": p["from_provider"],
                    "to_provider": p["to_provider"],
                    "reason": action.reason,
                    "evidence": dict(action.evidence),
                },
                now,
            )
            if row[0] == "blocked":
                insert_event(
                    conn, action.task_id, "unblocked", {"by": AUTHOR, "status": new_status}, now
                )
            self._comment(conn, action.task_id, str(p["comment"]), now)
        return True

    def _write_card(self, action: Action, now: int) -> bool:
        p = action.plan
        title = str(p["title"])
        with self._write() as conn:
            # One open card per (task, blocker type), whoever wrote it and however its
            # title is spaced: checked under the write lock, so a second daemon on the
            # same board finds the first one's card.
            wanted = parse_card_title(title)
            conn.text_factory = _lenient_text  # an undecodable title is not a card; no error
            try:
                titles = conn.execute(
                    "SELECT title FROM tasks WHERE instr(title, ?) > 0 "
                    "AND status NOT IN ('done', 'archived')",
                    (CARD_MARK,),
                ).fetchall()
            finally:
                conn.text_factory = str
            if any(
                isinstance(t, str)
                and not isinstance(t, _Undecodable)
                and parse_card_title(t) == wanted
                for (t,) in titles
            ):
                return False
            source = conn.execute(
                "SELECT status FROM tasks WHERE id = ? AND status NOT IN ('done', 'archived')",
                (action.task_id,),
            ).fetchone()
            if source is None:
                return False
            card_id = new_task_id(conn)
            columns = {
                "id": card_id,
                "title": title,
                "body": p["body"],
                "assignee": p["assignee"],
                "status": "ready",
                "priority": p["priority"],
                "created_by": AUTHOR,
                "created_at": now,
                "workspace_kind": "scratch",
                "idempotency_key": p["idempotency_key"],
            }
            # Newer Hermes fills these in its own create_task; a card must look the same.
            columns.update({k: v for k, v in NEWER_CARD_DEFAULTS.items() if k in self.task_columns})
            names = ", ".join(columns)
            conn.execute(
                f"INSERT INTO tasks ({names}) VALUES ({', '.join('?' * len(columns))})",
                tuple(columns.values()),
            )
            insert_event(
                conn,
                card_id,
                "created",
                {"assignee": p["assignee"], "status": "ready", "parents": [], "by": AUTHOR},
                now,
            )
            # The card is the source's parent: the source waits for the orchestrator. Like
            # Hermes's link, only a `ready` source is demoted; a running one is left alone.
            conn.execute(
                "INSERT OR IGNORE INTO task_links (parent_id, child_id) VALUES (?, ?)",
                (card_id, action.task_id),
            )
            conn.execute(
                "UPDATE tasks SET status = 'todo' WHERE id = ? AND status = 'ready'",
                (action.task_id,),
            )
            insert_event(
                conn,
                action.task_id,
                "linked",
                {"parent": card_id, "child": action.task_id, "by": AUTHOR},
                now,
            )
            self._comment(conn, action.task_id, str(p["comment"]).replace("{card}", card_id), now)
        return True


def _unblocked_status(conn: sqlite3.Connection, task_id: str, lane: object) -> str:
    """Where a blocked task goes when it is put back, as Hermes's unblock: `todo` while a
    parent is unfinished, else the lane its last attempt came from (`ready`, `review`)."""
    undone = conn.execute(
        "SELECT 1 FROM task_links l JOIN tasks p ON p.id = l.parent_id "
        "WHERE l.child_id = ? AND p.status != 'done' LIMIT 1",
        (task_id,),
    ).fetchone()
    if undone:
        return "todo"
    return lane if isinstance(lane, str) and lane in LANES else READY


def new_task_id(conn: sqlite3.Connection) -> str:
    """`t_` + 8 hex digits, as Hermes makes them, not yet on the board."""
    while True:
        candidate = "t_" + secrets.token_hex(4)
        if conn.execute("SELECT 1 FROM tasks WHERE id = ?", (candidate,)).fetchone() is None:
            return candidate


def insert_event(
    conn: sqlite3.Connection,
    task_id: str,
    kind: str,
    payload: Mapping[str, Any] | None,
    now: int,
    run_id: int | None = None,
) -> None:
    """Append to `task_events` as Hermes does: JSON payload or NULL, epoch seconds."""
    conn.execute(
        "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?, ?, ?, ?, ?)",
        (task_id, run_id, kind, json.dumps(payload, ensure_ascii=False) if payload else None, now),
    )


def _event_row(row: Sequence[Any], payload: dict[str, Any]) -> EventRow | None:
    """An EventRow from (id, task_id, kind, created_at, payload, profile, outcome, error,
    run_id) and its parsed payload; None when the row cannot be read (it cannot be acted
    on either)."""
    try:
        return EventRow(
            event_id=_req_int(row, 0, "task_events.id"),
            task_id=_task_id(row[1:]),
            kind=_opt_text(row, 2, "kind") or "",
            created_at=_req_int(row, 3, "created_at"),
            payload=payload,
            run_profile=_opt_text(row, 5, "profile"),
            run_outcome=_opt_text(row, 6, "outcome"),
            run_error=_opt_text(row, 7, "error"),
            run_id=_opt_int(row, 8, "run_id"),
        )
    except _Malformed:
        return None


MAX_JSON_CHARS = 65_536
"""A payload or metadata text longer than this is not parsed (Hermes writes a few hundred)."""
MAX_JSON_DEPTH = 32
"""Nor one nested deeper (Hermes nests two or three levels)."""


def _depth_ok(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def parse_json_object(raw: Any) -> tuple[dict[str, Any], str | None]:
    """A JSON object from untrusted text, bounded in size and depth: (object, problem).
    NULL, empty text and JSON that is not an object are simply empty; text that cannot be
    read within the bounds is empty too, with the problem named."""
    if raw is None or raw == "":
        return {}, None
    if not isinstance(raw, str) or isinstance(raw, _Undecodable):
        return {}, "not valid UTF-8 text"
    if len(raw) > MAX_JSON_CHARS:
        return {}, f"longer than {MAX_JSON_CHARS} characters"
    try:
        value = json.loads(raw)
    except RecursionError:
        return {}, f"nested deeper than {MAX_JSON_DEPTH} levels"
    except ValueError:
        return {}, "not valid JSON"
    if not _depth_ok(value):
        return {}, f"nested deeper than {MAX_JSON_DEPTH} levels"
    return (value, None) if isinstance(value, dict) else ({}, None)


def _payload(raw: Any) -> dict[str, Any]:
    return parse_json_object(raw)[0]


class PerBoard(Generic[_T]):
    """A watcher's memory of each board, kept for the file a store has open: a board
    replaced under the daemon (another file at the same path) starts from nothing, so no
    cursor or index of the old file is applied to the new one."""

    def __init__(self, make: Callable[[], _T]) -> None:
        self._make = make
        self._items: dict[Path, tuple[tuple[int, int] | None, _T]] = {}

    def of(self, store: BoardStore) -> _T:
        key = store.path.resolve()
        entry = self._items.get(key)
        if entry is None or entry[0] != store.identity:
            entry = (store.identity, self._make())
            self._items[key] = entry
        return entry[1]

    def peek(self, path: Path) -> _T | None:
        """The memory kept for `path`, if any (for reports and the benchmark)."""
        entry = self._items.get(Path(path).resolve())
        return entry[1] if entry is not None else None
