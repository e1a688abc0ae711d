"""One connection to one board, and the guard every read and write goes through."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from watchers.errors import BoardError, WatchersError, classify_sqlite_error
from watchers.model import (
    KNOWN_STATUSES,
    SkippedRow,
    TaskStatus,
)
from watchers.store.rows import (
    CACHE_KIB,
    _identity,
    _lenient_text,
    board_slug,
    parse_json_object,
)
from watchers.store.schema import REQUIRED_TABLES, REQUIRED_TASK_COLUMNS


class Connection:
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

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        slug: str | None = None,
        busy_timeout: float = 2.0,
        readonly: bool = False,
    ) -> Self:
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

    def _col(self, name: str, alias: str = "t") -> str:
        return f"{alias}.{name}" if name in self.task_columns else "NULL"

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

    def _rows_of(
        self, sql: str, task_ids: list[str], params: Sequence[Any]
    ) -> list[tuple[Any, ...]]:
        """`sql` (taking the ids' marks as `{marks}`, then `params`) over one page of task
        ids, read leniently (an undecodable text is marked, not raised)."""
        marks = ",".join("?" * len(task_ids))
        return self._lenient_read(sql.format(marks=marks), (*task_ids, *params))

    def open_task_pages(self, page: int = 500) -> Iterator[list[str]]:
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
