"""What the budget watcher remembers of a board's tasks between passes, and how a task's
memory is rebuilt from the board's history.

Held between passes: the running tasks and those with an overrun or a problem not yet
answered (see `observe`), heartbeats per running attempt and the event cursor. Every
other task is forgotten after a pass and recalled from its history (its runs, budget
fields and the events a budget counts, up to the cursor) when an event names it again,
so the watcher's memory follows the live part of a board, not its size or its past.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from watchers.budget.memo import Memo, Row, failure
from watchers.budget.progress import WORK_KINDS, ProgressTracker
from watchers.hermes.events import LANE_EPISODE_KINDS, STATE_KINDS_NEWER
from watchers.model import FAILURE_OUTCOMES
from watchers.store.board import (
    AUTHOR,
    BUDGET_MALFORMED,
    BUDGET_WARNING,
    BoardStore,
    EventRow,
)

FOLLOWED = (
    "created",
    "rate_limited",
    "claimed",
    "completed",
    "archived",
    "edited",
    "assigned",
    "blocked",
    "unblocked",
    "heartbeat",
    "crashed",
    "timed_out",
    "spawn_failed",
    "gave_up",
    BUDGET_WARNING,
    BUDGET_MALFORMED,
    *STATE_KINDS_NEWER,
    *WORK_KINDS,
)
_FAILURE_KINDS = ("crashed", "timed_out", "spawn_failed", "gave_up")
_RECALLED = (
    "unblocked",
    "blocked",
    "claimed",
    "rate_limited",
    *_FAILURE_KINDS,
    BUDGET_WARNING,
    BUDGET_MALFORMED,
    *LANE_EPISODE_KINDS,
)
"""The kinds a task's memo is rebuilt from (the rest only mark its row to read again)."""
NO_MEMO_KINDS = frozenset(("heartbeat", "completed", "archived", *WORK_KINDS))
"""Kinds that never need a task's memo (counted per run, or ending the task)."""


class BudgetMemory:
    """The memos of one board's tasks, and the event log they follow."""

    def __init__(self) -> None:
        self.cursor: int | None = None
        self.memos: dict[str, Memo] = {}
        self.heartbeats: dict[int, int] = {}  # run id -> heartbeats so far
        self.heartbeat_events: dict[int, int] = {}  # run id -> its latest heartbeat event
        self.dirty: set[str] = set()  # rows to read again
        self.touched: set[str] = set()  # to weigh again
        self.pending: set[str] = set()  # an overrun or a problem not answered yet
        self.progress = ProgressTracker()

    def _memo(self, task_id: str) -> Memo:
        memo = self.memos.get(task_id)
        if memo is None:
            memo = self.memos[task_id] = Memo()
            self.dirty.add(task_id)
        self.touched.add(task_id)
        return memo

    def _recall(
        self,
        store: BoardStore,
        task_ids: Sequence[str],
        upto: int,
        hold: Collection[str] = (),
    ) -> None:
        """The memos of `task_ids` rebuilt from the board's history up to event `upto`:
        their runs, budget fields and the events a budget counts. A task forgotten
        between passes is recalled this way when an event names it again. A task in
        `hold` (a running one) gets a memo even when its history gives none."""
        restarted: set[str] = set()
        for task_id, run_id, started, outcome, error in store.runs_of_tasks(task_ids):
            memo = self.memos.get(task_id) or self.memos.setdefault(task_id, Memo())
            if outcome == "completed":
                memo.restart_episode()
                continue
            if outcome != "rate_limited":  # a quota wall is not the task burning its budget
                memo.attempted(run_id)
            memo.last_attempt_at = started
            if outcome in FAILURE_OUTCOMES and error:
                memo.fail(run_id, failure(error, float(started)))
        for r in store.budget_rows(task_ids, budget_bodies_only=True):
            if r.status in ("done", "archived"):
                self._forget(r.task_id)
                continue
            row = Row.of(r)
            if r.task_id in self.memos:
                self.memos[r.task_id].row = row
            elif row.worth_following:
                self.memos[r.task_id] = Memo(row=row)
        for ev in store.events_of_tasks(task_ids, _RECALLED, upto):
            followed = self.memos.get(ev.task_id)
            if followed is None:
                continue  # nothing this watcher follows
            if ev.kind in LANE_EPISODE_KINDS:
                restarted.add(ev.task_id)  # the runs read above were of another episode
            elif ev.kind in _FAILURE_KINDS and ev.task_id not in restarted:
                # the runs gave the text; the event gives the order
                if followed.failures and ev.run_id in followed.failures:
                    known = followed.failures[ev.run_id]
                    followed.failures[ev.run_id] = replace(known, event_id=ev.event_id)
                continue
            self._apply(ev, counting_attempts=ev.task_id in restarted, history=True)
        for task_id in task_ids:  # the rows were just read: only a missing one is read again
            recalled = self.memos.get(task_id)
            if recalled is None and task_id in hold:
                recalled = self.memos[task_id] = Memo()
            if recalled is not None and recalled.row is None:
                self.dirty.add(task_id)
            else:
                self.dirty.discard(task_id)

    def _forget(self, task_id: str) -> None:
        self.memos.pop(task_id, None)
        self.dirty.discard(task_id)
        self.touched.discard(task_id)
        self.pending.discard(task_id)

    def _restart(self) -> None:
        self.cursor = None
        self.memos, self.dirty, self.touched, self.pending = {}, set(), set(), set()

    def _apply(
        self, ev: EventRow, *, counting_attempts: bool = True, history: bool = False
    ) -> None:
        if not history:  # an event recalled was seen by the tracker when it was new
            self.progress.event(ev)
        if ev.kind in WORK_KINDS:
            return
        if ev.kind == "heartbeat":
            if ev.run_id is not None:
                self.heartbeats[ev.run_id] = self.heartbeats.get(ev.run_id, 0) + 1
                self.heartbeat_events[ev.run_id] = ev.event_id
            return
        if ev.kind in ("completed", "archived"):
            self._forget(ev.task_id)
            return
        memo = self._memo(ev.task_id)
        if ev.kind == "claimed":
            memo.last_attempt_event = ev.event_id
            if counting_attempts:
                memo.last_attempt_at = ev.created_at
                if ev.run_id is not None:
                    memo.attempted(ev.run_id)
                    if not history:  # the run's heartbeats are counted apart
                        self.heartbeats[ev.run_id] = 0
        elif ev.kind == "rate_limited":
            if ev.run_id is not None:
                memo.not_attempted(ev.run_id)
        elif ev.kind in _FAILURE_KINDS:
            text = ev.run_error or str(ev.payload.get("error") or "")
            if ev.run_id is not None and text:
                memo.fail(ev.run_id, failure(text, float(ev.created_at), ev.event_id))
        elif ev.kind == "unblocked":
            if ev.payload.get("by") == AUTHOR and ev.payload.get("reset"):
                memo.resets += 1
                memo.last_reset_at = ev.created_at
                memo.last_reset_event = ev.event_id
            self.dirty.add(ev.task_id)
        elif ev.kind == "blocked":
            memo.last_block_at = ev.created_at
            self.dirty.add(ev.task_id)
        elif ev.kind == BUDGET_WARNING:
            if ev.payload.get("by") == AUTHOR and ev.run_id is not None:
                memo.warned = (memo.warned or set()) | {(ev.run_id, str(ev.payload.get("budget")))}
        elif ev.kind == BUDGET_MALFORMED:
            if ev.payload.get("by") == AUTHOR:
                memo.reported = (memo.reported or set()) | {str(ev.payload.get("line"))}
        elif ev.kind in LANE_EPISODE_KINDS:
            # into or out of review (newer Hermes): what follows is another episode
            memo.restart_episode()
            self.dirty.add(ev.task_id)
        else:  # created, edited, assigned, newer state changes: the fields may have changed
            self.dirty.add(ev.task_id)
