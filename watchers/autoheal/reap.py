"""The actions auto-heal writes for a running task whose worker is gone: a reap (dead
worker: the run closed in Hermes's words: crashed, rate-limited, a protocol violation, or
a provider's refusal the worker exited 0 on) and a reclaim (a running row with no claim
or no PID). Pure."""

from __future__ import annotations

from typing import Any

from watchers.autoheal import WATCHER
from watchers.hermes.claims import attempt_age
from watchers.hermes.events import READY
from watchers.model import (
    Action,
    ActionKind,
    HealSnapshot,
    Observation,
    RunningTask,
    RunOutcome,
    TaskStatus,
    Verdict,
)
from watchers.settings import AutoHealSettings

RATE_LIMIT_EXIT_CODE = 75  # EX_TEMPFAIL: Hermes workers exit with it on a provider quota wall
PROTOCOL_VIOLATION_LIMIT = 3  # Hermes's bounded retry for clean exits without a terminal call


def _age(ts: int | None, now: float) -> float | None:
    return None if ts is None else round(max(0.0, now - ts), 1)


def _expect(task: RunningTask) -> dict[str, Any]:
    return {
        "claim_lock": task.claim_lock,
        "worker_pid": task.worker_pid,
        "current_run_id": task.current_run_id,
        "consecutive_failures": task.consecutive_failures,
    }


def _base_evidence(task: RunningTask, host: str, now: float) -> dict[str, Any]:
    return {
        "pid": task.worker_pid,
        "claimer": task.claim_lock,
        "host": host,
        "run_id": task.current_run_id,
        "assignee": task.assignee,
        "attempt_age_seconds": _age(task.attempt_started_at, now),
        "heartbeat_age_seconds": _age(task.last_heartbeat_at, now),
        "failures_before": task.consecutive_failures,
    }


def _death_text(pid: int, obs: Observation) -> str:
    """The run's error text, in the shapes Hermes writes, so its tools read it."""
    if obs.verdict is Verdict.ZOMBIE and obs.signal is not None:
        return f"pid {pid} killed by signal {obs.signal} (zombie, reaped by watchers)"
    if obs.verdict is Verdict.ZOMBIE and obs.exit_code is not None:
        return f"pid {pid} exited with code {obs.exit_code} (zombie, reaped by watchers)"
    return f"pid {pid} not alive: {obs.detail} (reaped by watchers)"


def reap_action(
    task: RunningTask, obs: Observation, snap: HealSnapshot, s: AutoHealSettings, now: float
) -> Action:
    assert task.worker_pid is not None
    lane = snap.lanes.get(task.task_id, READY)
    evidence = {**_base_evidence(task, snap.host, now), **obs.as_evidence()}
    if lane != READY:
        evidence["lane"] = lane
    rate_limited = obs.verdict is Verdict.ZOMBIE and obs.exit_code == RATE_LIMIT_EXIT_CODE
    clean_exit = obs.verdict is Verdict.ZOMBIE and obs.exit_code == 0
    provider = snap.provider_errors.get(task.task_id) if clean_exit else None
    extra: dict[str, Any] = {}
    plan: dict[str, Any]
    if provider is not None:
        # Exit 0 right after a provider error: a quota wall or a refused key, not a
        # protocol violation (Hermes would count it towards giving the task up). Booked
        # in Hermes's own terms, with the provider's words, so the distress watcher (and
        # Hermes's respawn guard, for a rate limit) answer it as such.
        signal, line = provider
        evidence["provider_error"] = {"signal": signal, "line": line}
        extra = {"provider_error": signal}
        if signal == RunOutcome.RATE_LIMITED.value:
            plan = {
                "new_status": lane,
                "outcome": RunOutcome.RATE_LIMITED.value,
                "event_kind": "rate_limited",
                "error": f"pid {task.worker_pid} exited 0 right after a provider rate limit "
                f"({line}) — requeued without counting a failure",
                "failures": task.consecutive_failures,
                "record_error": True,
                "trip": False,
            }
        else:
            plan = {
                "new_status": lane,
                "outcome": RunOutcome.CRASHED.value,
                "event_kind": "crashed",
                "error": f"pid {task.worker_pid} exited 0 right after a provider credential "
                f"failure ({line}) — not counted as the task's failure",
                "failures": task.consecutive_failures,
                "record_error": True,
                "trip": False,
            }
    elif clean_exit:
        # Exit 0 while still `running`: the worker never called kanban_complete/kanban_block.
        # Hermes gives such protocol violations a bounded retry of their own: they are not
        # counted until the streak of them reaches the task's max_retries, else 3.
        streak = snap.violation_streaks.get(task.task_id, 0) + 1
        if task.max_retries is not None:
            limit, source = task.max_retries, "task"
        else:
            limit, source = PROTOCOL_VIOLATION_LIMIT, "protocol_violation"
        trip = streak >= limit
        failures = task.consecutive_failures + (1 if trip else 0)
        plan = {
            "new_status": TaskStatus.BLOCKED.value if trip else lane,
            "outcome": RunOutcome.CRASHED.value,
            "event_kind": "protocol_violation",
            "error": f"pid {task.worker_pid} exited cleanly (rc=0) without calling kanban_complete "
            "or kanban_block — protocol violation (zombie, reaped by watchers). If the work is "
            "done, verify it and report it with kanban_complete.",
            "failures": failures,
            "record_error": True,
            "trip": trip,
            "effective_limit": limit,
            "limit_source": source,
        }
        extra = {"protocol_violation": True}
        if trip:
            extra.update(protocol_violations=streak, protocol_violation_limit=limit)
        evidence.update(protocol_violations=streak, protocol_violation_limit=limit)
    elif rate_limited:
        # A quota wall is not the task's failure: Hermes requeues without counting it.
        plan = {
            "new_status": lane,
            "outcome": RunOutcome.RATE_LIMITED.value,
            "event_kind": "rate_limited",
            "error": f"pid {task.worker_pid} exited rate-limited (quota wall) — "
            "requeued without counting a failure",
            "failures": task.consecutive_failures,
            "record_error": True,
            "trip": False,
        }
    else:
        failures = task.consecutive_failures + 1
        if task.max_retries is not None:
            limit, source = task.max_retries, "task"
        else:
            limit, source = s.failure_limit, "watchers"
        trip = failures >= limit
        plan = {
            "new_status": TaskStatus.BLOCKED.value if trip else lane,
            "outcome": RunOutcome.CRASHED.value,
            "event_kind": "crashed",
            "error": _death_text(task.worker_pid, obs),
            "failures": failures,
            "record_error": True,
            "trip": trip,
            "effective_limit": limit,
            "limit_source": source,
        }
        evidence["failures"] = failures
        evidence["failure_limit"] = limit
    plan["event_payload"] = {"pid": task.worker_pid, "claimer": task.claim_lock, **extra}
    plan["metadata"] = {
        "pid": task.worker_pid,
        "claimer": task.claim_lock,
        **obs.as_evidence(),
        **extra,
    }
    if obs.exit_code is not None:
        plan["event_payload"]["exit_code"] = obs.exit_code
    if obs.signal is not None:
        plan["event_payload"]["signal"] = obs.signal
    return Action(
        watcher=WATCHER,
        board=snap.board,
        task_id=task.task_id,
        kind=ActionKind.REAP,
        reason=f"worker_{obs.verdict.value}",
        evidence=evidence,
        expect=_expect(task),
        plan=plan,
    )


def reclaim_action(task: RunningTask, reason: str, snap: HealSnapshot, now: float) -> Action:
    age = attempt_age(task, now)
    lane = snap.lanes.get(task.task_id, READY)
    shown = "an unknown time" if age is None else f"{age:.0f}s"
    if reason == "no_claim":
        error = f"running with no claim for {shown} (reclaimed by watchers)"
    else:
        error = f"no worker pid recorded {shown} after the claim (reclaimed by watchers)"
    return Action(
        watcher=WATCHER,
        board=snap.board,
        task_id=task.task_id,
        kind=ActionKind.RECLAIM,
        reason=reason,
        evidence=_base_evidence(task, snap.host, now) | ({"lane": lane} if lane != READY else {}),
        expect=_expect(task),
        plan={
            "new_status": lane,
            "outcome": RunOutcome.RECLAIMED.value,
            "event_kind": "reclaimed",
            "error": error,
            "failures": task.consecutive_failures,
            "record_error": False,
            "trip": False,
            "event_payload": {"reason": reason, "prev_lock": task.claim_lock},
            "metadata": {"reason": reason},
        },
    )
