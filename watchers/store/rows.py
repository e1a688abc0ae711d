"""A board's rows as Hermes writes them and agents may have mangled them: typed
accessors that report instead of raising, the shapes the reads return, bounded JSON,
and the vocabulary (authors, event kinds, limits) the store's modules share."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchers.model import (
    RunningTask,
)

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


SHARED_MAX = 2048
"""Texts the sharing table holds at most; emptied when full."""

SHARED_MAX_CHARS = 256
"""Longer texts are never shared (a failure is quoted to 240 characters)."""

_shared: dict[str, str] = {}


def shared(text: str) -> str:
    """One string object per value for texts a board repeats by the thousand (statuses,
    profiles, event kinds, failure texts), so what is kept between passes stays small.
    Boards are untrusted and may make up any number of such texts: the table is bounded
    in entries and length and emptied when full (what holds a text keeps it). Not
    `sys.intern`, whose strings Python 3.12 never frees."""
    if len(text) > SHARED_MAX_CHARS:
        return text
    found = _shared.get(text)
    if found is not None:
        return found
    if len(_shared) >= SHARED_MAX:
        _shared.clear()
    _shared[text] = text
    return text


def _opt_name(row: Sequence[Any], index: int, name: str) -> str | None:
    """`_opt_text` of a text a board repeats (a status, a profile, an event kind), shared."""
    value = _opt_text(row, index, name)
    return None if value is None else shared(value)


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
        assignee=None if assignee is None else shared(assignee),
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
    created_by: str | None = None  # who made the task (a profile, a person, a tool)


@dataclass(frozen=True, slots=True)
class ReadyRow:
    """A `ready` task no one has claimed, as the dispatcher would see it."""

    task_id: str
    assignee: str | None
    created_at: int


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


def _event_row(row: Sequence[Any], payload: dict[str, Any]) -> EventRow | None:
    """An EventRow from (id, task_id, kind, created_at, payload, profile, outcome, error,
    run_id) and its parsed payload; None when the row cannot be read (it cannot be acted
    on either)."""
    try:
        return EventRow(
            event_id=_req_int(row, 0, "task_events.id"),
            task_id=_task_id(row[1:]),
            kind=_opt_name(row, 2, "kind") or "",
            created_at=_req_int(row, 3, "created_at"),
            payload=payload,
            run_profile=_opt_name(row, 5, "profile"),
            run_outcome=_opt_name(row, 6, "outcome"),
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
