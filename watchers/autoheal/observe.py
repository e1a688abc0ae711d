"""Builds auto-heal's snapshot of a board: the I/O half of a tick.

It remembers, per board, an event cursor and the tasks whose latest state change is
Hermes's breaker (`gave_up`), so a steady-state tick reads only new events instead
of a board's whole history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from watchers.autoheal import WATCHER
from watchers.autoheal.decide import quiet_until
from watchers.autoheal.rules import classifier_for
from watchers.hermes.claims import attempt_age, is_host_local
from watchers.hermes.events import READY, STATE_CHANGE_KINDS
from watchers.hermes.provider_errors import provider_error_line
from watchers.hermes.worker_log import worker_log_tail
from watchers.model import (
    DEAD_VERDICTS,
    FAILURE_OUTCOMES,
    FailureRecord,
    GaveUpTask,
    HealSnapshot,
    RunningTask,
    RunOutcome,
    SkippedRow,
    Verdict,
)
from watchers.probe import Probe, WorkerRef, board_scope
from watchers.settings import AutoHealSettings
from watchers.store.board import (
    ESCALATED,
    BoardStore,
    ResetHistory,
    StatusEvent,
)

STATUS_CHECK_SECONDS = 300.0
"""Unknown statuses are looked for on the first pass, then every 5 minutes (a scan of
the status index costs a few milliseconds on a large board; nothing acts on them)."""
_HISTORY_SLACK = 10  # closed runs read beyond the failure count (neutral outcomes in between)


@dataclass(slots=True)
class _History:
    failures: tuple[FailureRecord, ...]
    resets: ResetHistory
    lane: str


@dataclass(slots=True)
class BoardObserver:
    cursor: int | None = None
    candidates: dict[str, StatusEvent] = field(default_factory=dict)
    history: dict[tuple[str, int], _History] = field(default_factory=dict)
    reported: set[tuple[str, str]] = field(default_factory=set)  # unknown statuses told
    statuses_checked: float | None = None  # when unknown statuses were last looked for
    # give-ups that need nothing until a time (inf: never) unless an event arrives for
    # their task: neither read nor decided again until then (see decide.quiet_until)
    quiet: dict[str, tuple[int, float]] = field(default_factory=dict)
    rows: dict[tuple[object, ...], RunningTask] = field(default_factory=dict)  # parsed rows
    # their workers, by the parsed row's object (kept alive here, so ids are not reused)
    refs: dict[int, tuple[RunningTask, WorkerRef | None, bool]] = field(default_factory=dict)

    def snapshot(
        self,
        store: BoardStore,
        probe: Probe,
        settings: AutoHealSettings,
        host: str,
        now: float,
    ) -> tuple[HealSnapshot, list[SkippedRow]]:
        running, skipped = store.running_tasks(self.rows)
        if self.statuses_checked is None or now - self.statuses_checked >= STATUS_CHECK_SECONDS:
            self.statuses_checked = now
            self.quiet.clear()  # and every quiet give-up is looked at again
            skipped.extend(self._unknown_statuses(store))
        observations = probe.observe(
            self._refs(running, settings, host, now),
            settings.spawn_slack_seconds,
            board_scope(WATCHER, store.path),
        )
        clean_exits = [
            task_id
            for task_id, obs in observations.items()
            if obs.verdict is Verdict.ZOMBIE and obs.exit_code == 0
        ]
        streaks = {task_id: store.protocol_violation_streak(task_id) for task_id in clean_exits}
        provider_errors = self._provider_errors(store.path, running, clean_exits)
        gave_up = self._gave_up(store, settings, now)
        # The lane matters only to what may be released now: dead workers, running rows
        # without a claim or a PID, and give-ups (read with their history, below).
        releasable = [
            t.task_id
            for t in running
            if not t.claimed
            or t.worker_pid is None
            or ((obs := observations.get(t.task_id)) is not None and obs.verdict in DEAD_VERDICTS)
        ]
        lanes = store.claimed_lanes(releasable) if releasable else {}
        return (
            HealSnapshot(
                board=store.slug,
                host=host,
                running=tuple(running),
                observations=observations,
                gave_up=gave_up,
                violation_streaks=streaks,
                lanes=lanes,
                provider_errors=provider_errors,
            ),
            skipped,
        )

    @staticmethod
    def _provider_errors(
        board: Path, running: list[RunningTask], clean_exits: list[str]
    ) -> dict[str, tuple[str, str]]:
        """What the last output of each cleanly exited worker says about its provider: a
        worker that gives up after a 429 or a 401 may still exit 0 (Hermes then books a
        protocol violation and, after three, gives the task up)."""
        if not clean_exits:
            return {}
        started = {t.task_id: t.attempt_started_at for t in running}
        out: dict[str, tuple[str, str]] = {}
        for task_id in clean_exits:
            found = provider_error_line(worker_log_tail(board, task_id, started.get(task_id)))
            if found is not None:
                out[task_id] = (found[0].value, found[1])
        return out

    def _unknown_statuses(self, store: BoardStore) -> list[SkippedRow]:
        """Tasks in a status no Hermes release writes: reported once each, never touched."""
        found = store.unknown_status_tasks()
        new = [(t, s) for t, s in found if (t, s) not in self.reported]
        if len(self.reported) > 10_000:
            self.reported.clear()
        self.reported.update(new)
        return [
            SkippedRow(store.slug, "tasks", task_id, f"unknown status {status}")
            for task_id, status in new
        ]

    def _refs(
        self, running: list[RunningTask], s: AutoHealSettings, host: str, now: float
    ) -> list[WorkerRef]:
        """The host-local workers past their start grace. A task seen last pass keeps its
        WorkerRef object (the probe recognises an unchanged list by its objects)."""
        known, self.refs = self.refs, {}
        refs = []
        grace = s.start_grace_seconds
        for task in running:
            entry = known.get(id(task))
            if entry is not None and entry[0] is task:
                ref, ripe = entry[1], entry[2]
            else:
                ref, ripe = None, False
                if task.worker_pid is not None and is_host_local(
                    task.claim_lock, host, s.host_aliases
                ):
                    ref = WorkerRef(
                        task_id=task.task_id,
                        pid=task.worker_pid,
                        run_id=task.current_run_id,
                        claimed_at=task.attempt_started_at,
                        worker_started_at=task.worker_started_at,
                    )
            if ref is not None and not ripe:
                age = attempt_age(task, now)  # once past the grace, a row stays past it
                ripe = age is None or age >= grace
            if entry is None or entry[0] is not task or entry[2] is not ripe:
                entry = (task, ref, ripe)
            self.refs[id(task)] = entry  # an unchanged entry is kept, not made again
            if ref is not None and ripe:
                refs.append(ref)
        return refs

    def _follow_events(self, store: BoardStore) -> None:
        if self.cursor is None:
            cursor = store.max_event_id()
            for ev in store.latest_status_event_of_blocked(STATE_CHANGE_KINDS):
                if ev.kind == "gave_up":
                    self.candidates[ev.task_id] = ev
            self.cursor = cursor
        for ev in store.status_events_after(self.cursor, (*STATE_CHANGE_KINDS, ESCALATED)):
            self.cursor = max(self.cursor, ev.event_id)
            for key in [k for k in self.history if k[0] == ev.task_id]:
                del self.history[key]
            self.quiet.pop(ev.task_id, None)
            if ev.kind == ESCALATED:
                continue
            if ev.kind == "gave_up":
                self.candidates[ev.task_id] = ev
            else:
                self.candidates.pop(ev.task_id, None)

    def quiet_end(self, now: float) -> float | None:
        """The earliest time a quiet give-up needs looking at again (None: none does)."""
        ends = [until for _, until in self.quiet.values() if now < until < math.inf]
        return min(ends) if ends else None

    def _gave_up(
        self, store: BoardStore, s: AutoHealSettings, now: float
    ) -> tuple[GaveUpTask, ...]:
        self._follow_events(store)
        if not self.candidates:
            return ()
        live = {
            task_id: ev
            for task_id, ev in self.candidates.items()
            if (q := self.quiet.get(task_id)) is None or q[0] != ev.event_id or q[1] <= now
        }
        if not live:
            return ()
        states = store.task_states(list(live))
        classifier = classifier_for(s)
        out = []
        for task_id, ev in live.items():
            state = states.get(task_id)
            if state is None:  # deleted
                self.candidates.pop(task_id, None)
                self.quiet.pop(task_id, None)
                continue
            status, failures = state
            if status != "blocked":
                continue
            key = (task_id, ev.event_id)
            hist = self.history.get(key)
            if hist is None:
                hist = _History(
                    failures=self._failures(store, task_id, failures),
                    resets=store.reset_history(
                        task_id, int(ev.created_at - s.reset_window_seconds), ev.event_id
                    ),
                    lane=store.claimed_lanes([task_id]).get(task_id, READY),
                )
                self.history[key] = hist
            loop = GaveUpTask(
                task_id=task_id,
                consecutive_failures=failures,
                gave_up_event_id=ev.event_id,
                gave_up_at=ev.created_at,
                failures=hist.failures,
                reset_times=hist.resets.reset_times,
                escalated=hist.resets.escalated,
                lane=hist.lane,
            )
            until = quiet_until(loop, s, now, classifier)
            if until == math.inf:
                # the task's own failures: nothing to do until an event names it, so its
                # history is not held (read again at the periodic look, if still blocked)
                self.history.pop(key, None)
            if until > now:
                self.quiet[task_id] = (ev.event_id, until)
            else:
                out.append(loop)
        return tuple(out)

    @staticmethod
    def _failures(store: BoardStore, task_id: str, counted: int) -> tuple[FailureRecord, ...]:
        """The failed attempts behind the give-up: newest first, as many as Hermes
        counted, stopping at a completion."""
        needed = max(counted, 1)
        found: list[FailureRecord] = []
        for run in store.failure_history(task_id, needed + _HISTORY_SLACK):
            if run.outcome == RunOutcome.COMPLETED:
                break
            if run.outcome in FAILURE_OUTCOMES:
                found.append(run)
                if len(found) >= needed:
                    break
        if not found:
            text = store.last_failure_error(task_id)
            if text:
                found.append(
                    FailureRecord(run_id=None, outcome=RunOutcome.GAVE_UP.value, error=text)
                )
        return tuple(found)
