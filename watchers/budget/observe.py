"""Builds the iteration-budget snapshot of a board: the I/O half of a tick.

Per board it keeps, for every task not done: its budget fields (re-read when an event
says the task changed), attempts and failure fingerprints since its last completion,
auto-heal's resets, its re-blocks, and the warnings and notes already written. The
first tick reads them from one consistent snapshot of the board; later ticks follow
the event log from there, and heartbeats are counted per attempt as they arrive.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import replace

from watchers.budget.budgets import NO_BODY_BUDGETS, Budgets, resolve
from watchers.budget.decide import BudgetSnapshot, BudgetTask, over_budget, unanswered
from watchers.budget.memo import Memo, Row, failure, scope_lines
from watchers.budget.progress import WORK_KINDS, ProgressTracker, Stall, no_progress_limit
from watchers.cards import CardIndex, SourceTask
from watchers.hermes.events import LANE_EPISODE_KINDS, STATE_KINDS_NEWER
from watchers.hermes.profiles import ProfileReader, hermes_root
from watchers.hermes.workspace import touched_files, workspace_fingerprint, workspace_state
from watchers.model import FAILURE_OUTCOMES, RunningTask, SkippedRow
from watchers.process import trim_heap
from watchers.settings import Settings
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


class BudgetObserver:
    """Tasks are weighed again only when something may have changed for them: an event
    touched them, one of their overruns is still unanswered, or their running attempt
    is near a warning threshold. Everything else costs nothing per tick."""

    def __init__(self) -> None:
        self.cursor: int | None = None
        self.memos: dict[str, Memo] = {}
        self.heartbeats: dict[int, int] = {}  # run id -> heartbeats so far
        self.heartbeat_events: dict[int, int] = {}  # run id -> its latest heartbeat event
        self.dirty: set[str] = set()  # rows to read again
        self.touched: set[str] = set()  # to weigh again
        self.pending: set[str] = set()  # an overrun or a problem not answered yet
        self.cards = CardIndex()
        self.progress = ProgressTracker()
        self.reader: ProfileReader | None = None
        self._settings: tuple[object, object] | None = None

    # -- memory ------------------------------------------------------------------

    def _memo(self, task_id: str) -> Memo:
        memo = self.memos.get(task_id)
        if memo is None:
            memo = self.memos[task_id] = Memo()
            self.dirty.add(task_id)
        self.touched.add(task_id)
        return memo

    def _load(self, store: BoardStore, running: list[RunningTask]) -> None:
        restarted: set[str] = set()
        # No snapshot held across the load (a long read would cut Hermes's checkpoints
        # short): the event cursor is taken first and the events read are bounded by it;
        # what changes meanwhile is replayed from the cursor by the next tick, and every
        # step below is idempotent for a row read twice.
        cursor = store.max_event_id()
        for task_id, run_id, started, outcome, error in store.runs_of_open_tasks():
            memo = self.memos.get(task_id) or self.memos.setdefault(task_id, Memo())
            if outcome == "completed":
                memo.restart_episode()
                continue
            if outcome != "rate_limited":  # a quota wall is not the task burning its budget
                memo.attempted(run_id)
            memo.last_attempt_at = started
            if outcome in FAILURE_OUTCOMES and error:
                memo.fail(run_id, failure(error, float(started)))
        for r in store.budget_rows(budget_bodies_only=True):
            row = Row.of(r)
            if r.task_id in self.memos:
                self.memos[r.task_id].row = row
            elif row.worth_following:
                self.memos[r.task_id] = Memo(row=row)
        for ev in store.events_of_open_tasks(
            (
                "unblocked",
                "blocked",
                "claimed",
                "rate_limited",
                *_FAILURE_KINDS,
                BUDGET_WARNING,
                BUDGET_MALFORMED,
                *LANE_EPISODE_KINDS,
            ),
            cursor,
        ):
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
            self._apply(ev, counting_attempts=ev.task_id in restarted)
        runs = [t.current_run_id for t in running if t.current_run_id is not None]
        counted = store.heartbeat_counts(runs, cursor) if runs else {}
        self.heartbeats = {r: n for r, (n, _) in counted.items()}
        self.heartbeat_events = {r: last for r, (_, last) in counted.items()}
        self.cursor = cursor
        self.dirty = {t for t, m in self.memos.items() if m.row is None}
        self.touched = set(self.memos)
        gc.collect()  # the first load read every open task once: give that memory back
        trim_heap()

    def _apply(self, ev: EventRow, *, counting_attempts: bool = True) -> None:
        self.progress.event(ev)
        if ev.kind in WORK_KINDS:
            return
        if ev.kind == "heartbeat":
            if ev.run_id is not None:
                self.heartbeats[ev.run_id] = self.heartbeats.get(ev.run_id, 0) + 1
                self.heartbeat_events[ev.run_id] = ev.event_id
            return
        if ev.kind in ("completed", "archived"):
            self.memos.pop(ev.task_id, None)
            self.dirty.discard(ev.task_id)
            self.touched.discard(ev.task_id)
            self.pending.discard(ev.task_id)
            return
        memo = self._memo(ev.task_id)
        if ev.kind == "claimed":
            memo.last_attempt_event = ev.event_id
            if counting_attempts:
                memo.last_attempt_at = ev.created_at
                if ev.run_id is not None:
                    memo.attempted(ev.run_id)
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

    def _budgets(self, memo: Memo, s: Settings) -> Budgets:
        if memo.budgets is None:
            row = memo.row
            profile = s.profiles.get(row.assignee or "") if row else None
            memo.budgets = resolve(
                max_runtime_seconds=row.max_runtime_seconds if row else None,
                goal_max_turns=row.goal_max_turns if row else None,
                max_retries=row.max_retries if row else None,
                body=row.body if row else NO_BODY_BUDGETS,
                profile=row.assignee if row else None,
                profile_time=profile.time_budget_seconds if profile else None,
                profile_iterations=profile.iteration_budget if profile else None,
                profile_attempts=profile.attempt_budget if profile else None,
                global_time=s.budget.time_budget_seconds,
                global_iterations=s.budget.iteration_budget,
                global_attempts=s.budget.attempt_budget,
            )
        return memo.budgets

    # -- the snapshot ---------------------------------------------------------------

    def snapshot(
        self, store: BoardStore, s: Settings, now: float
    ) -> tuple[BudgetSnapshot, list[SkippedRow]]:
        running, skipped = store.running_tasks()
        self.progress.sync(running, now)
        if self.cursor is None:
            self._load(store, running)
        else:
            for ev in store.events_with_runs_after(self.cursor, FOLLOWED):
                self.cursor = max(self.cursor, ev.event_id)
                self._apply(ev)
        if self.dirty:
            found = {r.task_id: r for r in store.budget_rows(sorted(self.dirty))}
            for task_id in self.dirty:
                r = found.get(task_id)
                memo = self.memos.get(task_id)
                if r is None or r.status in ("done", "archived"):
                    self.memos.pop(task_id, None)
                elif memo is not None:
                    memo.row, memo.budgets = Row.of(r), None
                    self.touched.add(task_id)
            self.dirty.clear()
        if (
            self._settings is None
            or self._settings[0] is not s.budget
            or self._settings[1] is not s.profiles
        ):
            self._settings = (s.budget, s.profiles)  # a reload: resolve every budget again
            for memo in self.memos.values():
                memo.budgets = None
            self.touched |= set(self.memos)
        cards = self.cards.refresh(store)
        live_runs = {t.current_run_id for t in running}
        if len(self.heartbeats) > len(live_runs):
            self.heartbeats = {r: n for r, n in self.heartbeats.items() if r in live_runs}
            self.heartbeat_events = {
                r: e for r, e in self.heartbeat_events.items() if r in live_runs
            }

        stalls = self._stalls(store, s, now)
        weigh = (self.touched | self.pending | stalls.keys()) & self.memos.keys()
        by_running: dict[str, RunningTask] = {}
        for t in running:
            memo = self.memos.get(t.task_id)
            if memo is None:
                continue
            by_running[t.task_id] = t
            if t.task_id not in weigh and self._near(t, memo, s, now):
                weigh.add(t.task_id)
        tasks: list[BudgetTask] = []
        enrich: list[int] = []
        self.pending = set()
        for task_id in sorted(weigh):
            memo = self.memos[task_id]
            run = by_running.get(task_id)
            problems = (
                tuple(p for p in memo.row.body.problems if p not in (memo.reported or ()))
                if memo.row
                else ()
            )
            weighed = self._task(task_id, memo, run, problems, s)
            if run is not None and task_id in stalls:
                assignee = memo.row.assignee if memo.row else None
                weighed = replace(
                    weighed, stall=stalls[task_id], stall_limit=no_progress_limit(assignee, s)
                )
            if unanswered(over_budget(weighed, s, now), cards, task_id) is not None:
                enrich.append(len(tasks))
                self.pending.add(task_id)
            elif problems:
                self.pending.add(task_id)
            elif run is None:
                continue  # nothing to warn about, nothing to card
            tasks.append(weighed)
        self.touched.clear()
        known: frozenset[str] = frozenset()
        if enrich:
            tasks = self._enrich(store, s, tasks, enrich)
            if self.reader is not None:
                known = frozenset(self.reader.read(s.profiles).profiles)
        progress_until = self.progress.next_due(self._limit_of(s), now)
        return BudgetSnapshot(
            board=store.slug,
            tasks=tuple(tasks),
            cards=cards,
            profiles=known,
            progress_until=progress_until,
        ), skipped

    # -- progress (budget.progress) ----------------------------------------------------

    def _limit_of(self, s: Settings) -> Callable[[str], float | None]:
        def limit(task_id: str) -> float | None:
            memo = self.memos.get(task_id)
            found = no_progress_limit(memo.row.assignee if memo and memo.row else None, s)
            return found[0] if found else None

        return limit

    def _stalls(self, store: BoardStore, s: Settings, now: float) -> dict[str, Stall]:
        """Running attempts with no sign of progress for their limit; the workspaces of
        new attempts are read here once, as a baseline."""
        timeout = s.budget.git_timeout_seconds

        def fingerprint(path: str | None) -> tuple[str, str] | None:
            return workspace_fingerprint(path, timeout)

        new = self.progress.needing_baseline()
        if new:
            details = store.task_details(new)
            self.progress.baseline(
                {t: (d.workspace if (d := details.get(t)) else None) for t in new}, fingerprint
            )
        return self.progress.stalls(self._limit_of(s), fingerprint, now)

    def _near(self, t: RunningTask, memo: Memo, s: Settings, now: float) -> bool:
        """Is the running attempt at or past a warning threshold of its budgets?"""
        b = self._budgets(memo, s)
        share = s.budget.warn_fraction
        started, run = t.attempt_started_at, t.current_run_id
        if b.time and started is not None and now - started >= share * b.time.value:
            return True
        return bool(
            b.iterations
            and run is not None
            and self.heartbeats.get(run, 0) >= share * b.iterations.value
        )

    def _task(
        self,
        task_id: str,
        memo: Memo,
        run: RunningTask | None,
        problems: tuple[str, ...],
        s: Settings,
    ) -> BudgetTask:
        row = memo.row
        assignee = run.assignee if run else (row.assignee if row else None)
        source = SourceTask(
            task_id=task_id,
            title="",
            status=row.status if row else "running",
            assignee=assignee,
            provider_override=None,
            branch=None,
            workspace=None,
            cannot_touch=(),
            completed=None,
            state="unknown",
            consecutive_failures=run.consecutive_failures if run else 0,
        )
        return BudgetTask(
            source=source,
            provider=None,
            budgets=self._budgets(memo, s),
            problems=problems,
            running=run is not None,
            run_id=run.current_run_id if run else None,
            attempt_started_at=float(run.attempt_started_at)
            if run and run.attempt_started_at
            else None,
            heartbeats=self.heartbeats.get(run.current_run_id or -1, 0) if run else 0,
            attempts=memo.attempts,
            last_attempt_at=float(memo.last_attempt_at) if memo.last_attempt_at else None,
            failures=tuple(sorted((memo.failures or {}).values(), key=lambda f: f.at)),
            resets=memo.resets,
            last_reset_at=float(memo.last_reset_at) if memo.last_reset_at else None,
            block_recurrences=row.block_recurrences if row else 0,
            last_block_at=float(memo.last_block_at) if memo.last_block_at else None,
            warned=frozenset(memo.warned or ()),
            last_attempt_event=memo.last_attempt_event,
            last_reset_event=memo.last_reset_event,
            heartbeat_event=self.heartbeat_events.get(run.current_run_id or -1) if run else None,
        )

    def _enrich(
        self, store: BoardStore, s: Settings, tasks: list[BudgetTask], which: list[int]
    ) -> list[BudgetTask]:
        """What a card needs (title, branch, workspace state, summaries, scope, touched
        files), read only for the tasks that will get one."""
        if self.reader is None:
            self.reader = ProfileReader(hermes_root(s.distress.hermes_home))
        providers = self.reader.read(s.profiles)
        details = store.task_details([tasks[i].source.task_id for i in which])
        out = list(tasks)
        for i in which:
            t = tasks[i]
            d = details.get(t.source.task_id)
            if d is None:
                continue
            summaries, _ = store.run_summaries(d.task_id)
            state = workspace_state(d.workspace, s.budget.git_timeout_seconds)
            source = SourceTask.of(d, summaries, state)
            out[i] = replace(
                t,
                source=source,
                provider=providers.provider_of(d.assignee, d.provider_override),
                scope_lines=scope_lines(d.body),
                touched=touched_files(d.workspace, s.budget.git_timeout_seconds),
            )
        return out
