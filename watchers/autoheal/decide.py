"""auto-heal decisions: `decide(snapshot, settings, now) -> actions`. Pure: no SQL,
no psutil, no clock. Every action carries the state it was decided on (`expect`), so
the executor can apply it as a compare-and-swap.

Transitions written (Hermes's own terms); `ready` below is the lane the attempt was
claimed from: `review` for a reviewer's attempt on boards with a review lane:
  running --reap (worker gone/zombie/reused)--> ready    run: crashed, event: crashed
  running --reap, failures reach the limit-->   blocked  ... plus event: gave_up
  running --reap (zombie exited 75)-->          ready    run: rate_limited, no failure counted
  running --reap (exited 0, no terminal call)--> ready   run: crashed, event: protocol_violation
                                                         (counted once the streak hits its limit)
  running --reap (exited 0 right after a 429)--> ready   run: rate_limited, no failure counted
  running --reap (exited 0 right after a 401)--> ready   run: crashed, no failure counted
  running --reclaim (no claim / no PID)-->      ready    run: reclaimed, no failure counted
  blocked --reset (gave_up on infra failures)--> ready   event: unblocked, counter cleared
  blocked --escalate (too many resets)-->       blocked  event: escalated
"""

from __future__ import annotations

import math
from typing import Any

from watchers.autoheal import WATCHER
from watchers.autoheal.backoff import compute_backoff
from watchers.autoheal.reap import (
    reap_action,
    reclaim_action,
)
from watchers.autoheal.rules import Classifier, all_infra, classifier_for
from watchers.hermes.claims import attempt_age, is_host_local
from watchers.hermes.events import READY
from watchers.model import (
    DEAD_VERDICTS,
    Action,
    ActionKind,
    GaveUpTask,
    HealSnapshot,
    RunningTask,
)
from watchers.settings import AutoHealSettings

EVIDENCE_TEXT_LIMIT = 240
GUARD = "guard"


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
                actions.append(reclaim_action(task, "no_claim", snap, now))
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
            actions.append(reclaim_action(task, "no_pid", snap, now))
            continue
        if obs is not None:
            reaps.append(reap_action(task, obs, snap, s, now))
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
