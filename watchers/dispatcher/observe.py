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
    held_back: Mapping[str, int] = field(default_factory=dict)  # why the others are not

    def oldest_age(self, now: float) -> float:
        """How long the longest-waiting dispatchable task has waited (0: none waits)."""
        return 0.0 if self.oldest_since is None else max(0.0, now - self.oldest_since)


def observe(
    store: BoardStore, rules: DispatchRules, *, claimed_after: float | None = None
) -> tuple[DispatchState, list[SkippedRow]]:
    """The board's DispatchState. With `claimed_after` (epoch seconds), a claim newer than
    that makes waiting times moot for the caller: they are then not looked up."""
    last_claim = store.last_claim_at()
    if claimed_after is not None and last_claim is not None and last_claim > claimed_after:
        # a recent claim: the dispatcher runs, whatever waits; nothing more is read (the
        # common case on a busy board, a fraction of a millisecond)
        return DispatchState(store.slug, last_claim, 0, 0, 0, exact=False), []
    ready, skipped = store.ready_rows()
    running_by = store.running_by_assignee()
    running = sum(running_by.values())
    held: dict[str, int] = {}
    dispatchable: list[ReadyRow] = []
    for row in ready:
        why = rules.held_back(row.assignee, running, running_by)
        if why is None:
            dispatchable.append(row)
        else:
            held[why] = held.get(why, 0) + 1
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


def oldest_wait(store: BoardStore, rows: list[ReadyRow]) -> tuple[int, str]:
    """The earliest (waiting since, task id) of `rows` (oldest created first, not empty).
    A task's wait begins no earlier than its creation, so the lookups stop at the first
    task created after the earliest wait found so far (or at LOOKUP_LIMIT)."""
    best: tuple[int, str] | None = None
    i = 0
    while i < len(rows) and i < LOOKUP_LIMIT:
        chunk = [r for r in rows[i : i + LOOKUP_CHUNK] if best is None or r.created_at < best[0]]
        if not chunk:
            break
        newest = store.newest_event_at([r.task_id for r in chunk])
        for r in chunk:
            since = max(r.created_at, newest.get(r.task_id, r.created_at))
            if best is None or since < best[0]:
                best = (since, r.task_id)
        i += LOOKUP_CHUNK
    return best if best is not None else (rows[0].created_at, rows[0].task_id)
