"""Builds the iteration-budget snapshot of a board: the I/O half of a tick.

The first pass weighs every open task once, a page of tasks at a time, and keeps what
a later pass needs (`memory`): the running tasks and the overruns not answered yet.
Later passes follow the event log from the cursor; a task an event names is recalled
from its history first, and heartbeats are counted per attempt as they arrive.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping
from dataclasses import replace

from watchers.budget.budgets import NO_BODY_BUDGETS, Budgets, resolve
from watchers.budget.decide import BudgetSnapshot, BudgetTask, over_budget, unanswered
from watchers.budget.memo import Memo, Row, scope_lines
from watchers.budget.memory import FOLLOWED, NO_MEMO_KINDS, BudgetMemory
from watchers.budget.progress import Stall, no_progress_limit
from watchers.cards import CardIndex, CardState, SourceTask
from watchers.hermes.profiles import ProfileReader, hermes_root
from watchers.hermes.workspace import touched_files, workspace_fingerprint, workspace_state
from watchers.model import RunningTask, SkippedRow
from watchers.process import trim_heap
from watchers.settings import Settings
from watchers.store.board import BoardStore


class BudgetObserver(BudgetMemory):
    """Tasks are weighed again only when something may have changed for them: an event
    touched them, one of their overruns is still unanswered, or their running attempt
    is near a warning threshold. Everything else costs nothing per tick."""

    def __init__(self) -> None:
        super().__init__()
        self.cards = CardIndex()
        self.reader: ProfileReader | None = None
        self._settings: tuple[object, object] | None = None

    def _load(
        self,
        store: BoardStore,
        running: list[RunningTask],
        s: Settings,
        now: float,
        cards: Mapping[tuple[str, str], CardState],
    ) -> None:
        """The first pass: every open task is weighed once, a page of tasks at a time, and
        only what a later pass needs is kept (running tasks, unanswered overruns):
        memory follows the live part of the board, not its history."""
        # No snapshot held across the load (a long read would cut Hermes's checkpoints
        # short): the event cursor is taken first and the events read are bounded by it;
        # what changes meanwhile is replayed from the cursor by the next tick, and every
        # step of `_recall` is idempotent for a row read twice.
        cursor = store.max_event_id()
        live = {t.task_id for t in running}
        for ids in store.open_task_pages():
            self._recall(store, ids, cursor, hold=live)
            for task_id in ids:
                memo = self.memos.get(task_id)
                if memo is None or task_id in live:
                    continue
                if self._cold(task_id, memo, s, now, cards):
                    self._forget(task_id)
        runs = [t.current_run_id for t in running if t.current_run_id is not None]
        counted = store.heartbeat_counts(runs, cursor) if runs else {}
        self.heartbeats = {r: n for r, (n, _) in counted.items()}
        self.heartbeat_events = {r: last for r, (_, last) in counted.items()}
        self.cursor = cursor
        self.touched = set(self.memos)
        gc.collect()  # the first load read every open task once: give that memory back
        trim_heap()

    def _problems(self, memo: Memo) -> tuple[str, ...]:
        if memo.row is None:
            return ()
        return tuple(p for p in memo.row.body.problems if p not in (memo.reported or ()))

    def _cold(
        self,
        task_id: str,
        memo: Memo,
        s: Settings,
        now: float,
        cards: Mapping[tuple[str, str], CardState],
    ) -> bool:
        """Not running, and nothing to answer: nothing a later pass needs from its memo
        until an event names the task again (and then it is recalled)."""
        if memo.row is None or self._problems(memo):
            return False
        weighed = self._task(task_id, memo, None, (), s)
        return unanswered(over_budget(weighed, s, now), cards, task_id) is None

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
        if self._settings is not None and self._settings != (s.budget, s.profiles):
            self._restart()  # new budgets: a task forgotten may be over them
        self._settings = (s.budget, s.profiles)
        cards = self.cards.refresh(store)
        if self.cursor is None:
            self._load(store, running, s, now, cards)
        else:
            events = store.events_with_runs_after(self.cursor, FOLLOWED)
            named = {e.task_id for e in events if e.kind not in NO_MEMO_KINDS} - self.memos.keys()
            if named:
                self._recall(store, sorted(named), self.cursor)  # history before these events
            for ev in events:
                self.cursor = max(self.cursor, ev.event_id)
                self._apply(ev)
        missing = [t.task_id for t in running if t.task_id not in self.memos]
        if missing and self.cursor is not None:  # claimed since, and forgotten meanwhile
            self._recall(store, missing, self.cursor, hold=missing)
            self.touched.update(missing)
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
            problems = self._problems(memo)
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
        live = {t.task_id for t in running}
        for task_id in [t for t in self.memos if t not in live and t not in self.pending]:
            del self.memos[task_id]  # recalled from the board when an event names it again
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
