"""iteration-budget decisions: `decide(snapshot, settings, now) -> actions`. Pure.

For each task it weighs what was consumed against its budgets (see budgets.py):
  time        the running attempt's age        warn at `warn_fraction`, card at 100 %
  iterations  heartbeats in the running attempt warn at `warn_fraction`, card at 100 %
  attempts    attempts since the last completion                       card at 100 %
  repeats     failed attempts with one error fingerprint, `repeat_threshold` or more: card
  human       reset `auto_heal.max_resets` times, or re-blocked `block_recurrence_limit`
              times: card for `review_profile` saying human review is needed
One open `[BLOCKED] <id> iteration_budget` card per task and episode; a warning at most
once per attempt and budget; a malformed budget line reported once. Never touches a worker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from watchers.budget import WATCHER
from watchers.budget.budgets import Budgets
from watchers.budget.fingerprint import FAILURE_TEXT_KEPT
from watchers.budget.progress import Stall
from watchers.cards import (
    CardState,
    SourceTask,
    card_action,
    card_needed,
    card_owner,
    one_line,
    readable_time,
)
from watchers.model import Action, ActionKind
from watchers.settings import Settings

BLOCKER = "iteration_budget"


@dataclass(frozen=True, slots=True)
class Failure:
    fingerprint: str
    text: str
    at: float
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class BudgetTask:
    source: SourceTask
    provider: str | None
    budgets: Budgets
    problems: tuple[str, ...]  # malformed budget lines not reported yet
    running: bool
    run_id: int | None
    attempt_started_at: float | None
    heartbeats: int  # in the running attempt
    attempts: int  # since the last completion
    last_attempt_at: float | None
    failures: tuple[Failure, ...]  # since the last completion
    resets: int  # by auto-heal, since the last completion
    last_reset_at: float | None
    block_recurrences: int
    last_block_at: float | None
    warned: frozenset[tuple[int, str]] = frozenset()  # (run id, budget) already warned
    stall: Stall | None = None  # the running attempt shows no progress (budget.progress)
    stall_limit: tuple[float, str] | None = None  # no_progress_seconds and where it came from
    last_attempt_event: int | None = None
    last_reset_event: int | None = None
    heartbeat_event: int | None = None  # the running attempt's latest heartbeat
    scope_lines: tuple[str, ...] = ()
    touched: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    board: str
    tasks: tuple[BudgetTask, ...]
    cards: Mapping[tuple[str, str], CardState] = field(default_factory=dict)
    profiles: frozenset[str] = frozenset()  # Hermes profiles known here (cards.route)
    progress_until: float | None = None  # when the next attempt reaches no_progress_seconds


@dataclass(frozen=True, slots=True)
class Overrun:
    reason: str  # time_budget | iteration_budget | attempt_budget | repeated_failure | needs_human | no_progress
    since: float  # when it began (a resolved card after this answers it)
    evidence: dict[str, Any]
    event: int | None = None  # the event that brought it about, when there is one


def over_budget(t: BudgetTask, s: Settings, now: float) -> list[Overrun]:
    """Every budget the task has exhausted, most urgent first."""
    out: list[Overrun] = []
    if t.resets >= s.auto_heal.max_resets and t.resets > 0:
        out.append(
            Overrun(
                "needs_human",
                t.last_reset_at or now,
                {"resets": t.resets, "max_resets": s.auto_heal.max_resets},
                t.last_reset_event,
            )
        )
    elif t.block_recurrences >= s.budget.block_recurrence_limit:
        out.append(
            Overrun(
                "needs_human",
                t.last_block_at or now,
                {
                    "block_recurrences": t.block_recurrences,
                    "limit": s.budget.block_recurrence_limit,
                },
            )
        )
    if t.failures:
        counts = Counter(f.fingerprint for f in t.failures)
        fp, n = counts.most_common(1)[0]
        if n >= s.budget.repeat_threshold:
            same = [f for f in t.failures if f.fingerprint == fp]
            out.append(
                Overrun(
                    "repeated_failure",
                    max(f.at for f in same),
                    {
                        "fingerprint": fp,
                        "count": n,
                        "error": one_line(same[-1].text, FAILURE_TEXT_KEPT),
                    },
                    max((f.event_id for f in same if f.event_id is not None), default=None),
                )
            )
    b = t.budgets
    if t.running and b.time and t.attempt_started_at is not None:
        elapsed = now - t.attempt_started_at
        if elapsed >= b.time.value:
            out.append(
                Overrun(
                    "time_budget",
                    t.attempt_started_at + b.time.value,
                    _consumed("time", round(elapsed, 1), b.time.value, b.time.source),
                )
            )
    if t.running and b.iterations and t.heartbeats >= b.iterations.value:
        out.append(
            Overrun(
                "iteration_budget",
                t.attempt_started_at or now,
                _consumed("iterations", t.heartbeats, b.iterations.value, b.iterations.source),
                t.heartbeat_event,
            )
        )
    if t.running and t.stall is not None and t.stall_limit is not None:
        st = t.stall
        out.append(
            Overrun(
                "no_progress",
                t.attempt_started_at or st.since,  # one card per attempt
                {
                    "watched": list(st.watched),
                    "no_progress_seconds": round(now - st.since),
                    "since": readable_time(st.since),
                    "last_progress": st.last_progress,
                    "heartbeats_meanwhile": st.beats,
                    "workspace": st.workspace,
                    "limit": t.stall_limit[0],
                    "source": t.stall_limit[1],
                },
            )
        )
    if b.attempts and t.attempts >= b.attempts.value:
        out.append(
            Overrun(
                "attempt_budget",
                t.last_attempt_at or now,
                _consumed("attempts", t.attempts, b.attempts.value, b.attempts.source),
                t.last_attempt_event,
            )
        )
    return out


def unanswered(
    overruns: list[Overrun], cards: Mapping[tuple[str, str], CardState], task_id: str
) -> Overrun | None:
    """The most urgent overrun no card has answered yet (one card per task and episode)."""
    return next(
        (o for o in overruns if card_needed(cards, task_id, BLOCKER, o.since, o.event)), None
    )


def _consumed(budget: str, used: float, limit: float, source: str) -> dict[str, Any]:
    return {"budget": budget, "consumed": used, "limit": limit, "source": source}


def _warnings(t: BudgetTask, s: Settings, now: float, board: str) -> list[Action]:
    if not t.running or t.run_id is None or t.attempt_started_at is None:
        return []
    out = []
    checks = []
    if t.budgets.time:
        checks.append(
            ("time", now - t.attempt_started_at, t.budgets.time.value, t.budgets.time.source)
        )
    if t.budgets.iterations:
        b = t.budgets.iterations
        checks.append(("iterations", float(t.heartbeats), b.value, b.source))
    for budget, used, limit, source in checks:
        if not (s.budget.warn_fraction * limit <= used < limit) or (t.run_id, budget) in t.warned:
            continue
        shown = (
            f"{used:.0f}s of {limit:.0f}s"
            if budget == "time"
            else f"{used:.0f} of {limit:.0f} heartbeats"
        )
        out.append(
            Action(
                watcher=WATCHER,
                board=board,
                task_id=t.source.task_id,
                kind=ActionKind.WARN,
                reason=f"{budget}_budget_warning",
                evidence={**_consumed(budget, round(used, 1), limit, source), "run_id": t.run_id},
                expect={"run_id": t.run_id, "budget": budget},
                plan={
                    "comment": (
                        f"kanban-watchers: this attempt has used {shown} of its {budget} budget "
                        f"({source}). Wrap up, or split what is left into a new task."
                    )
                },
            )
        )
    return out


def _split_needs(t: BudgetTask, over: Overrun, human: bool) -> str:
    if human:
        head = "human review: this task keeps coming back; decide whether it is still worth doing, and how"
    elif over.reason == "no_progress":
        e = over.evidence
        head = (
            f"the worker of {t.source.task_id} looks like it is looping: alive and heartbeating "
            f"({e['heartbeats_meanwhile']} beats) but no progress for "
            f"{e['no_progress_seconds'] / 60:.0f} min (watched: {', '.join(e['watched'])}; last "
            f"progress: {e['last_progress']}). Split it into narrower tasks, or give it a "
            "smaller goal; the worker was not touched"
        )
    else:
        head = f"split {t.source.task_id} into narrower tasks ({over.reason.replace('_', ' ')})"
    parts = [head]
    if t.scope_lines:
        parts.append(
            "scope found in the task: "
            + "; ".join(f"[{i + 1}] {line}" for i, line in enumerate(t.scope_lines))
        )
    if t.touched:
        parts.append("files touched so far: " + ", ".join(t.touched))
    if not t.scope_lines and not t.touched:
        parts.append("one card per deliverable, each with its own budget")
    return "; ".join(parts)


def next_deadline(snapshot: BudgetSnapshot, s: Settings, now: float) -> float | None:
    """When a running attempt next crosses a line without any new event: its time
    budget's warning fraction (unless warned) or the budget itself. None when none."""
    due: list[float] = []
    for t in snapshot.tasks:
        if not t.running or t.attempt_started_at is None or not t.budgets.time:
            continue
        limit = t.budgets.time.value
        for at, warned in (
            (t.attempt_started_at + s.budget.warn_fraction * limit, (t.run_id, "time")),
            (t.attempt_started_at + limit, None),
        ):
            if at > now and (warned is None or warned not in t.warned):
                due.append(at)
    if snapshot.progress_until is not None and snapshot.progress_until > now:
        due.append(snapshot.progress_until)  # an attempt reaching no_progress_seconds
    return min(due) if due else None


def decide(snapshot: BudgetSnapshot, s: Settings, now: float) -> list[Action]:
    actions: list[Action] = []
    for t in snapshot.tasks:
        for problem in t.problems:
            actions.append(
                Action(
                    watcher=WATCHER,
                    board=snapshot.board,
                    task_id=t.source.task_id,
                    kind=ActionKind.NOTE,
                    reason="malformed_budget",
                    evidence={"line": problem},
                    expect={"line": problem},
                    plan={
                        "comment": f"kanban-watchers ignored a budget line it could not read: {problem}."
                    },
                )
            )
        overruns = over_budget(t, s, now)
        first = unanswered(overruns, snapshot.cards, t.source.task_id)
        if first is None:
            # nothing over budget, or every overrun already answered by a card: the
            # running attempt may still be worth a warning
            actions.extend(_warnings(t, s, now, snapshot.board))
            continue
        human = first.reason == "needs_human"
        owner = card_owner(
            s.cards.route, t.source, s.distress.orchestrator_profile, snapshot.profiles
        )
        evidence: dict[str, Any] = {
            "reason_class": first.reason,
            **first.evidence,
            "all": [{"reason": o.reason, **o.evidence} for o in overruns[1:]],
            "attempts": t.attempts,
            "failures": len(t.failures),
            "resets": t.resets,
            "heartbeats": t.heartbeats,
        }
        actions.append(
            card_action(
                watcher=WATCHER,
                board=snapshot.board,
                source=t.source,
                provider=t.provider,
                blocker=BLOCKER,
                needs=_split_needs(t, first, human),
                evidence=evidence,
                reason=first.reason,
                now=now,
                since=first.since,
                assignee=(s.budget.review_profile or owner) if human else owner,
                priority=s.distress.card_priority,
            )
        )
    return actions
