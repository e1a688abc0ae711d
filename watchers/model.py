"""The vocabulary shared by the store, the probe, the decisions and the executor.

Everything here is a frozen record or an enum: decisions read snapshots and return
actions; nothing in this module does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TaskStatus(StrEnum):
    TRIAGE = "triage"
    TODO = "todo"
    SCHEDULED = "scheduled"
    READY = "ready"
    RUNNING = "running"
    BLOCKED = "blocked"
    REVIEW = "review"
    DONE = "done"
    ARCHIVED = "archived"


KNOWN_STATUSES = frozenset(s.value for s in TaskStatus)


class Verdict(StrEnum):
    """What the probe says about a running task's worker process.

    The layers, from most to least certain that the worker is dead:
    GONE (no such process) > ZOMBIE (exited, not yet reaped by its parent) >
    REUSED (the PID belongs to another process now) ; ALIVE (the verified worker);
    UNKNOWN (we may not look); REMOTE (claimed on another host: never judged by PID).
    """

    ALIVE = "alive"
    GONE = "gone"
    ZOMBIE = "zombie"
    REUSED = "reused"
    REMOTE = "remote"
    UNKNOWN = "unknown"


DEAD_VERDICTS = frozenset({Verdict.GONE, Verdict.ZOMBIE, Verdict.REUSED})


class RunOutcome(StrEnum):
    """Outcomes Hermes writes on `task_runs`; we only ever write these too."""

    COMPLETED = "completed"
    BLOCKED = "blocked"
    CRASHED = "crashed"
    RATE_LIMITED = "rate_limited"
    TIMED_OUT = "timed_out"
    RECLAIMED = "reclaimed"
    STALE = "stale"
    SPAWN_FAILED = "spawn_failed"
    GAVE_UP = "gave_up"
    SCHEDULED = "scheduled"


FAILURE_OUTCOMES = frozenset(
    {RunOutcome.CRASHED, RunOutcome.TIMED_OUT, RunOutcome.SPAWN_FAILED, RunOutcome.GAVE_UP}
)
"""Outcomes Hermes counts into `consecutive_failures`."""


@dataclass(frozen=True, slots=True)
class Observation:
    """The probe's finding for one worker PID."""

    verdict: Verdict
    detail: str
    exit_code: int | None = None  # from a zombie's /proc entry, when readable and non-zero
    signal: int | None = None  # likewise, when it was killed by a signal
    process_started_at: float | None = None

    def as_evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verdict": self.verdict.value, "seen": self.detail}
        if self.exit_code is not None:
            out["exit_code"] = self.exit_code
        if self.signal is not None:
            out["signal"] = self.signal
        if self.process_started_at is not None:
            out["process_started_at"] = round(self.process_started_at, 3)
        return out


@dataclass(frozen=True, slots=True)
class RunningTask:
    """A task in `running`, with the fields of its open attempt."""

    task_id: str
    assignee: str | None
    claim_lock: str | None
    claim_expires: int | None
    worker_pid: int | None
    current_run_id: int | None
    attempt_started_at: int | None  # the open run's claim time; else the task's first start
    last_heartbeat_at: int | None
    consecutive_failures: int
    max_retries: int | None
    worker_started_at: float | None = None  # newer Hermes: the worker's process start time

    @property
    def claimed(self) -> bool:
        """Claimed by someone: an empty or blank `claim_lock` is no claim at all."""
        lock = self.claim_lock
        if not lock:
            return False
        return not lock[0].isspace() or not lock.isspace()

    @property
    def claim_host(self) -> str | None:
        if not self.claim_lock or ":" not in self.claim_lock:
            return None
        return self.claim_lock.rsplit(":", 1)[0]


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """One failed attempt that led up to a give-up."""

    run_id: int | None
    outcome: str
    error: str


@dataclass(frozen=True, slots=True)
class GaveUpTask:
    """A `blocked` task whose latest status change was Hermes's breaker (`gave_up`)."""

    task_id: str
    consecutive_failures: int
    gave_up_event_id: int
    gave_up_at: int
    failures: tuple[FailureRecord, ...]
    reset_times: tuple[int, ...]  # when the watchers reset this task before (durable: events)
    escalated: bool  # an escalation was already recorded for this give-up
    lane: str = "ready"  # where its last attempt was claimed from: `ready`, or `review`


@dataclass(frozen=True, slots=True)
class HealSnapshot:
    """What the auto-heal decision sees of one board at one moment."""

    board: str
    host: str
    running: tuple[RunningTask, ...]
    observations: Mapping[str, Observation]  # by task id; only host-local workers past grace
    gave_up: tuple[GaveUpTask, ...] = ()
    violation_streaks: Mapping[str, int] = field(default_factory=dict)
    """For workers that exited cleanly: the task's trailing protocol violations so far."""
    lanes: Mapping[str, str] = field(default_factory=dict)
    """By task id, for running tasks whose attempt was claimed from a lane other than
    `ready` (a reviewer's, from `review`); a task not listed goes back to `ready`."""
    provider_errors: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """For workers that exited cleanly: the provider signal (`rate_limited`,
    `credential_failure`) their last output ended on, and that line (masked)."""


class ActionKind(StrEnum):
    REAP = "reap"  # dead worker: close the run as crashed, count the failure
    RECLAIM = "reclaim"  # running row with no claim or no PID: close as reclaimed
    RESET = "reset"  # infrastructure crash loop: back to ready, counter cleared
    ESCALATE = "escalate"  # too many resets: stays blocked, someone must look
    REASSIGN = "reassign"  # rate-limited/credential-failed work to another profile
    CARD = "card"  # a [BLOCKED] card for the orchestrator, linked to its source
    WARN = "warn"  # a budget nearly spent: an event and a comment, once per attempt
    NOTE = "note"  # a budget line that could not be read: reported once


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """A decision about one task. `expect` is the state the decision read; the
    executor applies the action only if the row still matches it (compare-and-swap)."""

    watcher: str
    board: str
    task_id: str
    kind: ActionKind
    reason: str
    evidence: Mapping[str, Any]
    expect: Mapping[str, Any]
    plan: Mapping[str, Any] = field(default_factory=dict)
    held: str | None = None  # why a guard held it back, if one did

    def with_hold(self, why: str) -> Action:
        return Action(
            watcher=self.watcher,
            board=self.board,
            task_id=self.task_id,
            kind=self.kind,
            reason=self.reason,
            evidence=self.evidence,
            expect=self.expect,
            plan=self.plan,
            held=why,
        )


class Result(StrEnum):
    APPLIED = "applied"
    DRY_RUN = "dry_run"
    HELD = "held"  # a guard held it back
    RACE_LOST = "race_lost"  # the row changed since it was read; someone else acted
    FAILED = "failed"  # the write failed (e.g. the board was locked); the next tick retries


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one action. Logs, output and (later) metrics hang off these."""

    action: Action
    result: Result
    detail: str = ""
    transient: bool = False  # a failed write the next tick may not see (a locked board)

    @property
    def applied(self) -> bool:
        return self.result is Result.APPLIED

    def as_record(self) -> dict[str, Any]:
        a = self.action
        rec: dict[str, Any] = {
            "watcher": a.watcher,
            "board": a.board,
            "task_id": a.task_id,
            "action": a.kind.value,
            "reason": a.reason,
            "evidence": dict(a.evidence),
            "applied": self.applied,
            "result": self.result.value,
        }
        if a.held:
            rec["held"] = a.held
        if self.detail:
            rec["detail"] = self.detail
        return rec


@dataclass(frozen=True, slots=True)
class SkippedRow:
    """A row the store could not read; reported, never fatal."""

    board: str
    table: str
    task_id: str | None
    problem: str


@dataclass(frozen=True, slots=True)
class TickReport:
    """One watcher's pass over one board: the seam for logs, output and metrics."""

    watcher: str
    board: str
    started_at: float
    duration_seconds: float
    outcomes: tuple[Outcome, ...] = ()
    skipped: tuple[SkippedRow, ...] = ()
    error: str | None = None  # the tick failed as a whole
    transient: bool = False  # ... in a way the next tick may not see (a locked board)
    unchanged: bool = False  # the board had not changed and nothing was due: no scans

    @property
    def ok(self) -> bool:
        return self.error is None
