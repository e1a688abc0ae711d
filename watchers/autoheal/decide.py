"""auto-heal decisions: `decide(snapshot, settings, now) -> actions`. Pure: no SQL,
no psutil, no clock. Every action carries the state it was decided on (`expect`), so
the executor can apply it as a compare-and-swap.

Transitions written (Hermes's own terms); `ready` below is the lane the attempt was
claimed from: `review` for a reviewer's attempt on boards with a review lane:
  running --reap (worker gone/zombie/reused)--> ready    run: crashed, event: crashed
  running --reap, failures reach the limit-->   blocked  ... plus event: gave_up
  running --reap (zombie exited 75)-->          ready    run: rate_limited, no failure counted
  running --reclaim (no claim / no PID)-->      ready    run: reclaimed, no failure counted
  blocked --reset (gave_up on infra failures)--> ready   event: unblocked, counter cleared
  blocked --escalate (too many resets)-->       blocked  event: escalated
"""

from __future__ import annotations

import math
from typing import Any

from watchers.autoheal import WATCHER
from watchers.autoheal.backoff import compute_backoff
from watchers.autoheal.rules import Classifier, all_infra, classifier_for
from watchers.hermes.claims import attempt_age, is_host_local
from watchers.hermes.events import READY
from watchers.model import (
    DEAD_VERDICTS,
    Action,
    ActionKind,
    GaveUpTask,
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
EVIDENCE_TEXT_LIMIT = 240
GUARD = "guard"


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


def _reap(
    task: RunningTask, obs: Observation, snap: HealSnapshot, s: AutoHealSettings, now: float
) -> Action:
    assert task.worker_pid is not None
    lane = snap.lanes.get(task.task_id, READY)
    evidence = {**_base_evidence(task, snap.host, now), **obs.as_evidence()}
    if lane != READY:
        evidence["lane"] = lane
    rate_limited = obs.verdict is Verdict.ZOMBIE and obs.exit_code == RATE_LIMIT_EXIT_CODE
    clean_exit = obs.verdict is Verdict.ZOMBIE and obs.exit_code == 0
    extra: dict[str, Any] = {}
    if clean_exit:
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
        plan: dict[str, Any] = {
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


def _reclaim(task: RunningTask, reason: str, snap: HealSnapshot, now: float) -> Action:
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


def _past_grace(task: RunningTask, s: AutoHealSettings, now: float) -> bool:
    age = attempt_age(task, now)
    return age is None or age >= s.start_grace_seconds


def _reap_decisions(snap: HealSnapshot, s: AutoHealSettings, now: float) -> list[Action]:
    actions: list[Action] = []
    reaps: list[Action] = []
    host_local = 0
    observations = snap.observations
    local: dict[str, bool] = {}  # claim lock -> host-local (most claims share a dispatcher)
    for task in snap.running:
        if not task.claimed:
            if _past_grace(task, s, now):
                actions.append(_reclaim(task, "no_claim", snap, now))
            continue
        lock = task.claim_lock or ""  # claimed: never empty
        is_local = local.get(lock)
        if is_local is None:
            is_local = local[lock] = is_host_local(lock, snap.host, s.host_aliases)
        if not is_local:
            continue  # remote: never judged by PID
        host_local += 1
        obs = observations.get(task.task_id)
        if task.worker_pid is not None and (obs is None or obs.verdict not in DEAD_VERDICTS):
            continue  # alive (or not judged yet): nothing to do, whatever its age
        if not _past_grace(task, s, now):
            continue
        if task.worker_pid is None:
            actions.append(_reclaim(task, "no_pid", snap, now))
            continue
        if obs is not None:
            reaps.append(_reap(task, obs, snap, s, now))
    if reaps and len(reaps) >= s.guard_min_tasks and len(reaps) > s.guard_max_share * host_local:
        why = (
            f"{GUARD}: {len(reaps)} of {host_local} host-local running tasks look dead "
            f"(more than {s.guard_max_share:.0%}); holding every reap. Is the daemon in another "
            "PID namespace than the workers?"
        )
        reaps = [r.with_hold(why) for r in reaps]
    return actions + reaps


def _backoff(loop: GaveUpTask, resets: int, s: AutoHealSettings) -> float:
    """How long after its give-up a crash loop with `resets` recent resets waits."""
    return compute_backoff(
        resets,
        s.reset_backoff_base_seconds,
        s.reset_backoff_cap_seconds,
        key=f"{loop.task_id}:{loop.gave_up_event_id}",
    )


def _crash_loop_decisions(snap: HealSnapshot, s: AutoHealSettings, now: float) -> list[Action]:
    actions: list[Action] = []
    classifier = classifier_for(s)
    for task in snap.gave_up:
        infra, found = all_infra(task.failures, classifier)
        if not infra:
            continue  # task-caused (or unknown) failures are never reset
        recent = [t for t in task.reset_times if now - t < s.reset_window_seconds]
        evidence: dict[str, Any] = {
            "failures": task.consecutive_failures,
            "failed_runs": [
                {
                    "run_id": f.run_id,
                    "outcome": f.outcome,
                    "error": f.error[:EVIDENCE_TEXT_LIMIT],
                    "rule": c.rule,
                }
                for f, c in zip(task.failures, found, strict=True)
            ],
            "resets_in_window": len(recent),
            **({"lane": task.lane} if task.lane != READY else {}),
            "reset_window_seconds": s.reset_window_seconds,
            "gave_up_at": task.gave_up_at,
        }
        expect = {
            "consecutive_failures": task.consecutive_failures,
            "gave_up_event_id": task.gave_up_event_id,
        }
        if len(recent) >= s.max_resets:
            if task.escalated:
                continue
            evidence["max_resets"] = s.max_resets
            actions.append(
                Action(
                    watcher=WATCHER,
                    board=snap.board,
                    task_id=task.task_id,
                    kind=ActionKind.ESCALATE,
                    reason="reset_limit",
                    evidence=evidence,
                    expect=expect,
                    plan={
                        "comment": (
                            f"kanban-watchers reset this task {len(recent)} times within "
                            f"{s.reset_window_seconds:.0f}s after infrastructure failures "
                            f"({', '.join(sorted({c.rule or '?' for c in found}))}) and it gave up "
                            "again. It stays blocked: the environment needs a person."
                        )
                    },
                )
            )
            continue
        delay = _backoff(task, len(recent), s)
        due = task.gave_up_at + delay
        if now < due:
            continue
        evidence["backoff_seconds"] = round(delay, 1)
        evidence["due_at"] = round(due, 1)
        number = len(recent) + 1
        rules = ", ".join(sorted({c.rule or "?" for c in found}))
        actions.append(
            Action(
                watcher=WATCHER,
                board=snap.board,
                task_id=task.task_id,
                kind=ActionKind.RESET,
                reason="infra_crash_loop",
                evidence=evidence,
                expect=expect,
                plan={
                    "reset_number": number,
                    "lane": task.lane,
                    "comment": (
                        f"kanban-watchers reset this task to {{status}} (reset {number} of at most "
                        f"{s.max_resets} per {s.reset_window_seconds:.0f}s): its last "
                        f"{len(task.failures)} failure(s) were infrastructure ({rules}), not the "
                        f"task. Waited {delay:.0f}s after the give-up."
                    ),
                },
            )
        )
    return actions


def quiet_until(
    loop: GaveUpTask, s: AutoHealSettings, now: float, classifier: Classifier | None = None
) -> float:
    """Until when a give-up certainly needs no action while no new event arrives for its
    task: forever when its failures were the task's own; the end of its backoff; for an
    escalated loop, the time the reset window lets go of enough resets. `now`: act now."""
    infra, _ = all_infra(loop.failures, classifier or classifier_for(s))
    if not infra:
        return math.inf
    recent = sorted(t for t in loop.reset_times if now - t < s.reset_window_seconds)
    if len(recent) >= s.max_resets:
        if not loop.escalated:
            return now
        return recent[len(recent) - s.max_resets] + s.reset_window_seconds
    return max(now, loop.gave_up_at + _backoff(loop, len(recent), s))


def next_deadline(snap: HealSnapshot, s: AutoHealSettings, now: float) -> float | None:
    """When something on this board next becomes decidable without any new event: a
    start grace that ends (a worker that died inside it is judged then, on time), a crash
    loop's backoff that runs out, or an escalated loop whose resets leave the window.
    None when nothing is waiting."""
    due: list[float] = []
    young = now - s.start_grace_seconds  # attempts started after this are in their grace
    for task in snap.running:
        started = task.attempt_started_at
        if started is None or started <= young:
            continue  # judged at once (most rows: this test alone)
        if task.claimed and not is_host_local(task.claim_lock, snap.host, s.host_aliases):
            continue  # never judged by PID here
        due.append(started + s.start_grace_seconds)
    classifier = classifier_for(s)
    for loop in snap.gave_up:
        until = quiet_until(loop, s, now, classifier)
        if now < until < math.inf:
            due.append(until)
    return min(due) if due else None


def decide(snapshot: HealSnapshot, settings: AutoHealSettings, now: float) -> list[Action]:
    """Every auto-heal action for one board at `now`."""
    return _reap_decisions(snapshot, settings, now) + _crash_loop_decisions(snapshot, settings, now)
