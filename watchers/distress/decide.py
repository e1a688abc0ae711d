"""distress decisions: `decide(snapshot, settings, now) -> actions`. Pure.

For each task whose latest attempt hit a rate limit or a credential failure (and that
is not running): reassign it to the first eligible fallback profile, or, when no safe
route exists (or the episode's reassignments are spent, or `reassign = "orchestrator"`),
write the `[BLOCKED]` card. Stuck workers and auto-heal's escalations get an
`env_blocker` card; tasks Hermes keeps deferring are moved or carded (distress.parked). Never a second open card per (task, blocker type).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from watchers.cards import (
    CardState,
    SourceTask,
    card_needed,
    one_line,
    readable_time,
)
from watchers.distress.cooldown import Cooldown, ProviderSignal, cooldowns
from watchers.distress.parked import ParkedCase, parked_decisions
from watchers.distress.route import distress_card, reassign_action, route_target
from watchers.distress.signals import Signal
from watchers.hermes.profiles import ProviderMap, normalize_provider
from watchers.model import Action
from watchers.settings import DistressSettings


@dataclass(frozen=True, slots=True)
class SignalCase:
    source: SourceTask
    signal: Signal
    at: float
    text: str
    run_id: int | None
    reassignments: int  # by the watchers in this episode
    attempts: int
    event_id: int | None = None  # the signal's event
    lane: str = "ready"  # where a blocked task goes when reassigned: its last attempt's lane


@dataclass(frozen=True, slots=True)
class StuckCase:
    source: SourceTask
    since: float  # last heartbeat, or the attempt's start if it never beat
    verdict: str  # alive | remote
    pid: int | None
    claim_lock: str | None
    process_started_at: float | None


@dataclass(frozen=True, slots=True)
class EscalationCase:
    source: SourceTask
    at: float
    evidence: Mapping[str, Any]
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class DistressSnapshot:
    board: str
    providers: ProviderMap
    signals: tuple[ProviderSignal, ...] = ()
    signal_cases: tuple[SignalCase, ...] = ()
    stuck: tuple[StuckCase, ...] = ()
    escalations: tuple[EscalationCase, ...] = ()
    cards: Mapping[tuple[str, str], CardState] = field(default_factory=dict)
    silent_until: float | None = None  # when the next silent running worker becomes stuck
    parked: tuple[ParkedCase, ...] = ()  # parked at least `parked_seconds`
    parked_until: float | None = None  # when the next deferred task will have been parked so long


def _cooling_text(table: Mapping[str, Cooldown], provider: str | None, now: float) -> str:
    c = table.get(provider or "")
    if c is None or not c.cooling(now):
        return "not cooling"
    return f"cooling until {readable_time(c.until)} ({c.until - now:.0f}s from now; {c.reason})"


def _card(snap: DistressSnapshot, s: DistressSettings, card_route: str, **card: Any) -> Action:
    """A card for the snapshot's board (`card`: distress_card's source-specific fields)."""
    return distress_card(
        board=snap.board, s=s, providers=snap.providers, card_route=card_route, **card
    )


def _signal_decisions(
    snap: DistressSnapshot,
    s: DistressSettings,
    table: Mapping[str, Cooldown],
    now: float,
    card_route: str,
) -> list[Action]:
    actions = []
    for case in snap.signal_cases:
        src = case.source
        blocker = case.signal.value
        if not card_needed(snap.cards, src.task_id, blocker, case.at, case.event_id):
            continue
        src_provider = snap.providers.provider_of(src.assignee, src.provider_override)
        route = snap.providers.route(src.assignee)
        target, considered = route_target(snap.providers, src, case.signal, table, now)
        evidence: dict[str, Any] = {
            "reason_class": blocker,
            "error": one_line(case.text, 300),
            "run_id": case.run_id,
            "signal_at": case.at,
            "attempts": case.attempts,
            "failures": src.consecutive_failures,
            "reassignments": case.reassignments,
            "max_reassignments": s.max_reassignments,
            "provider": src_provider,
            "provider_cooldown": _cooling_text(table, src_provider, now),
            "route": considered,
        }
        budget_left = case.reassignments < s.max_reassignments
        if s.reassign == "auto" and budget_left and target is not None:
            actions.append(
                reassign_action(
                    board=snap.board,
                    s=s,
                    providers=snap.providers,
                    src=src,
                    target=target,
                    reason=blocker,
                    evidence=evidence,
                    lane=case.lane,
                    reassignments=case.reassignments,
                    why=case.text,
                )
            )
            continue
        if s.reassign == "orchestrator":
            why = "reassignment is left to the orchestrator (distress.reassign = orchestrator)"
        elif not budget_left:
            why = f"{case.reassignments} reassignments already this episode (max {s.max_reassignments})"
        else:
            why = "no eligible fallback profile" + (
                f" among {', '.join(route)}" if route else " (none configured)"
            )
        pinned = normalize_provider(src.provider_override)
        if pinned is not None:
            evidence["provider_override"] = pinned
            evidence["model_override"] = src.model_override
        if pinned is not None and case.signal is Signal.RATE_LIMITED:
            needs = (
                f"{src.task_id} is pinned to provider {pinned} by its provider_override "
                f"(model_override {src.model_override or '—'}): moving it to another profile "
                f"keeps it on {pinned}. Change or clear provider_override and model_override to "
                f"route it to another provider ({_cooling_text(table, src_provider, now)}), or "
                f"hold it until the quota resets; {why}"
            )
        elif case.signal is Signal.RATE_LIMITED:
            needs = (
                f"move {src.task_id} to a profile on a provider other than {src_provider or 'its (unknown) provider'}"
                f" ({_cooling_text(table, src_provider, now)}), or hold it until the quota resets; {why}"
            )
        else:
            pin = (
                f" ({src.task_id} is pinned to it by provider_override; model_override "
                f"{src.model_override or '—'})"
                if pinned is not None
                else ""
            )
            needs = (
                f"fix or rotate the credentials of profile {src.assignee} (provider "
                f"{src_provider or 'unknown'}{pin}) or reassign {src.task_id}; {why}"
            )
        actions.append(
            _card(
                snap,
                s,
                card_route,
                src=src,
                blocker=blocker,
                needs=needs,
                evidence=evidence,
                reason=blocker,
                now=now,
                since=case.at,
            )
        )
    return actions


def _env_blockers(
    snap: DistressSnapshot, s: DistressSettings, now: float
) -> list[tuple[SourceTask, str, dict[str, Any], str, float]]:
    """(source, needs, evidence, reason, since) of every env_blocker card due: workers
    silent for `stuck_after_seconds`, and auto-heal's escalations."""
    out: list[tuple[SourceTask, str, dict[str, Any], str, float]] = []
    for case in snap.stuck:
        if now - case.since < s.stuck_after_seconds:
            continue
        if not card_needed(snap.cards, case.source.task_id, "env_blocker", case.since):
            continue
        silent = now - case.since
        evidence = {
            "reason_class": "stuck",
            "verdict": case.verdict,
            "pid": case.pid,
            "claimer": case.claim_lock,
            "process_started_at": case.process_started_at,
            "heartbeat_age_seconds": round(silent, 1),
            "stuck_after_seconds": s.stuck_after_seconds,
        }
        needs = (
            f"the worker of {case.source.task_id} ({case.verdict}, pid {case.pid or '—'}) has been "
            f"silent for {silent:.0f}s: reclaim it (hermes kanban reclaim), split the task, or "
            "reassign it"
        )
        out.append((case.source, needs, evidence, "stuck", case.since))
    for esc in snap.escalations:
        if not card_needed(snap.cards, esc.source.task_id, "env_blocker", esc.at, esc.event_id):
            continue
        needs = (
            f"the environment keeps killing {esc.source.task_id} (auto-heal reset it "
            "repeatedly after infrastructure failures): fix the host, or move the task elsewhere"
        )
        evidence = {"reason_class": "infra_resets_exhausted", **esc.evidence}
        out.append((esc.source, needs, evidence, "escalation", esc.at))
    return out


def _env_blocker_decisions(
    snap: DistressSnapshot, s: DistressSettings, now: float, card_route: str
) -> list[Action]:
    return [
        _card(
            snap,
            s,
            card_route,
            src=src,
            blocker="env_blocker",
            needs=needs,
            evidence=evidence,
            reason=reason,
            now=now,
            since=since,
        )
        for src, needs, evidence, reason, since in _env_blockers(snap, s, now)
    ]


def next_deadline(snap: DistressSnapshot, s: DistressSettings, now: float) -> float | None:
    """When something on this board next becomes decidable without any new event: a
    silent worker that reaches `stuck_after_seconds`, a provider cooldown that ends
    (a held reassignment may go ahead then), or a deferred task reaching `parked_seconds`.
    None when nothing is waiting."""
    due = [
        case.since + s.stuck_after_seconds
        for case in snap.stuck
        if case.since + s.stuck_after_seconds > now
    ]
    if snap.silent_until is not None and snap.silent_until > now:
        due.append(snap.silent_until)
    if snap.signal_cases:
        due.extend(c.until for c in cooldowns(snap.signals, s).values() if c.until > now)
    if snap.parked_until is not None and snap.parked_until > now:
        due.append(snap.parked_until)  # a deferred task that will have been parked long enough
    return min(due) if due else None


def decide(
    snapshot: DistressSnapshot,
    settings: DistressSettings,
    now: float,
    *,
    route: str = "orchestrator",
) -> list[Action]:
    """Every distress action for one board at `now`; `route` is `cards.route`."""
    table = cooldowns(snapshot.signals, settings)
    return (
        _signal_decisions(snapshot, settings, table, now, route)
        + _env_blocker_decisions(snapshot, settings, now, route)
        + parked_decisions(snapshot, settings, table, now, route)
    )
