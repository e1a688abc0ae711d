"""What the dispatcher check decides on: one frozen DispatchState read from a board.

A ready task is dispatchable when Hermes's dispatcher would spawn it now: someone to run
it (its assignee, else `kanban.default_assignee`) who is an existing Hermes profile, no
global cap reached (`kanban.max_in_progress`, `kanban.max_spawn`: running tasks on the
board), and its assignee below `kanban.max_in_progress_per_profile`. It has been waiting
since the later of its creation and its newest event (a crash that put it back, a
promotion, a respawn guard's deferral...), looked up per task through the events' index,
oldest created first, and only as far as can change the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from watchers.hermes.dispatching import DispatchRules
from watchers.model import SkippedRow
from watchers.store.board import BoardStore, ReadyRow

SCAN_CHUNK = 25
"""Ready tasks read at a time by the check's own read (see _until_stalled)."""
LOOKUP_CHUNK = 100
LOOKUP_LIMIT = 500
"""At most this many ready tasks' newest events are looked up per read (the oldest
created first; a task created later than the oldest wait found cannot be older)."""


@dataclass(frozen=True, slots=True)
class DispatchState:
    """A board as Hermes's dispatcher should see it."""

    board: str
    last_claim_at: int | None  # the newest claim (epoch seconds); None: no claim ever
    ready: int  # unclaimed ready tasks
    dispatchable: int  # of those, the ones Hermes would spawn now
    running: int
    oldest_since: int | None = None  # when the longest-waiting dispatchable task began waiting
    oldest_task: str | None = None
    exact: bool = True  # False: a recent claim made the rest moot, so it was not read
    complete: bool = True  # False: the scan stopped once a stall was certain: `ready` counts
    #   the status index, `dispatchable` and the oldest wait what was read up to then
    held_back: Mapping[str, int] = field(default_factory=dict)  # why the others are not

    def oldest_age(self, now: float) -> float:
        """How long the longest-waiting dispatchable task has waited (0: none waits)."""
        return 0.0 if self.oldest_since is None else max(0.0, now - self.oldest_since)


def observe(
    store: BoardStore, rules: DispatchRules, *, claimed_after: float | None = None
) -> tuple[DispatchState, list[SkippedRow]]:
    """The board's DispatchState. With `claimed_after` (epoch seconds; the check's own
    read): a claim newer than that makes the rest moot (nothing more is read); without
    one, ready tasks are read only until a stall is certain (see _until_stalled). Without
    `claimed_after` (status, metrics): every ready task, exact counts."""
    last_claim = store.last_claim_at()
    if claimed_after is not None and last_claim is not None and last_claim > claimed_after:
        # a recent claim: the dispatcher runs, whatever waits; nothing more is read (the
        # common case on a busy board, a fraction of a millisecond)
        return DispatchState(store.slug, last_claim, 0, 0, 0, exact=False), []
    if claimed_after is not None:
        return _until_stalled(store, rules, last_claim, claimed_after)
    ready, skipped = store.ready_rows()
    running, running_by = _running(store, rules)
    held: dict[str, int] = {}
    dispatchable = _dispatchable(ready, rules, running, running_by, held)
    state = DispatchState(
        board=store.slug,
        last_claim_at=last_claim,
        ready=len(ready),
        dispatchable=len(dispatchable),
        running=running,
        held_back=held,
    )
    if not dispatchable:
        return state, skipped
    since, task = oldest_wait(store, dispatchable)
    return replace(state, oldest_since=since, oldest_task=task), skipped


def _running(store: BoardStore, rules: DispatchRules) -> tuple[int, dict[str | None, int]]:
    """Running tasks, and per assignee when a per-profile cap needs that (reading every
    running row); otherwise the total alone, from the status index."""
    if rules.max_in_progress_per_profile is None:
        return store.running_count(), {}
    running_by = store.running_by_assignee()
    return sum(running_by.values()), running_by


def _dispatchable(
    rows: list[ReadyRow],
    rules: DispatchRules,
    running: int,
    running_by: dict[str | None, int],
    held: dict[str, int],
) -> list[ReadyRow]:
    """The rows Hermes would spawn now; why the others are not is counted into `held`."""
    out = []
    for row in rows:
        why = rules.held_back(row.assignee, running, running_by)
        if why is None:
            out.append(row)
        else:
            held[why] = held.get(why, 0) + 1
    return out


def _earliest(
    store: BoardStore, rows: list[ReadyRow], best: tuple[int, str] | None
) -> tuple[int, str] | None:
    """The earliest (waiting since, task id) of `best` and `rows`: a row's wait begins at
    the later of its creation and its newest event (looked up only for rows created
    before `best`, the others cannot have waited longer)."""
    rows = [r for r in rows if best is None or r.created_at < best[0]]
    if not rows:
        return best
    newest = store.newest_event_at([r.task_id for r in rows])
    for r in rows:
        since = max(r.created_at, newest.get(r.task_id, r.created_at))
        if best is None or since < best[0]:
            best = (since, r.task_id)
    return best


def _until_stalled(
    store: BoardStore, rules: DispatchRules, last_claim: int | None, claimed_after: float
) -> tuple[DispatchState, list[SkippedRow]]:
    """The check's own read when nothing was claimed since `claimed_after`: ready tasks in
    rowid order (Hermes's insertion order: the oldest created first), a chunk at a time,
    their waits looked up as it goes; it stops at the end of the first chunk that holds
    a dispatchable task waiting since before `claimed_after`: the stall is certain then.
    The state says so (`complete` false): its counts and its longest wait are what was
    read up to there (the longest wait at least that long); `watchers status` and the
    metrics read every task. On a stalled board that is one chunk, not every ready task."""
    running, running_by = _running(store, rules)
    held: dict[str, int] = {}
    skipped: list[SkippedRow] = []
    seen = 0
    best: tuple[int, str] | None = None
    after, complete = 0, True
    while True:
        chunk, bad = store.ready_rows_after(after, SCAN_CHUNK)
        skipped += bad
        if not chunk:
            break
        after = chunk[-1][0]
        dispatchable = _dispatchable([row for _, row in chunk], rules, running, running_by, held)
        seen += len(dispatchable)
        best = _earliest(store, dispatchable, best)
        if best is not None and best[0] < claimed_after and len(chunk) == SCAN_CHUNK:
            complete = False  # stalled for certain; what follows could only add to it
            break
    ready = store.ready_count() if not complete else seen + sum(held.values())
    return DispatchState(
        board=store.slug,
        last_claim_at=last_claim,
        ready=ready,
        dispatchable=seen,
        running=running,
        oldest_since=best[0] if best else None,
        oldest_task=best[1] if best else None,
        held_back=held,
        complete=complete,
    ), skipped


def oldest_wait(store: BoardStore, rows: list[ReadyRow]) -> tuple[int, str]:
    """The earliest (waiting since, task id) of `rows` (oldest created first, not empty).
    A task's wait begins no earlier than its creation, so the lookups stop at the first
    task created after the earliest wait found so far (or at LOOKUP_LIMIT)."""
    best: tuple[int, str] | None = None
    for i in range(0, min(len(rows), LOOKUP_LIMIT), LOOKUP_CHUNK):
        chunk = rows[i : i + LOOKUP_CHUNK]
        if best is not None and all(r.created_at >= best[0] for r in chunk):
            break
        best = _earliest(store, chunk, best)
    return best if best is not None else (rows[0].created_at, rows[0].task_id)
