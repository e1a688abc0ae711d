"""The board store: one public class the watchers use, made of one module per concern.

`connection` opens a board and guards every read (under Hermes's write lock) and write
(one short transaction); `task_reads`, `history_reads` and `dispatch_reads` read what
the watchers need; `writes` applies actions; `rows` reads Hermes's rows defensively.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from watchers.store.dispatch_reads import DispatchReads
from watchers.store.history_reads import HistoryReads
from watchers.store.rows import (
    AUTHOR,
    BUDGET_MALFORMED,
    BUDGET_WARNING,
    ESCALATED,
    BudgetRow,
    EventRow,
    ReadyRow,
    ResetHistory,
    StatusEvent,
    TaskDetail,
    board_slug,
    host_pid_max,
    parse_json_object,
)
from watchers.store.task_reads import TaskReads
from watchers.store.writes import Writes, insert_event, new_task_id

__all__ = [
    "AUTHOR",
    "BUDGET_MALFORMED",
    "BUDGET_WARNING",
    "ESCALATED",
    "BoardStore",
    "BudgetRow",
    "EventRow",
    "PerBoard",
    "ReadyRow",
    "ResetHistory",
    "StatusEvent",
    "TaskDetail",
    "board_slug",
    "host_pid_max",
    "insert_event",
    "new_task_id",
    "parse_json_object",
]

_T = TypeVar("_T")


class BoardStore(Writes, TaskReads, HistoryReads, DispatchReads):
    """A connection to one board, with every read and write the watchers use. Not
    shared between threads at the same time."""


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
