"""Tasks Hermes parks: deferred again and again, never run to an end. Pure decisions.

Hermes's dispatcher defers a ready task while its respawn guard holds (a rate-limit
cooldown, a quota or auth error in its last failure, a recent success, an open pull
request), writing `respawn_guarded` each tick; it defers reclaims (`reclaim_deferred`);
a quota-limited task is requeued on the same provider again and again. None of these
counts a failure, so nothing ever gives the task up. After `distress.parked_seconds` of
that, a task is moved to a profile on another provider when the deferrals were rate
limits and a route exists, else it gets a card that lists the deferrals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from watchers.cards import SourceTask, card_needed, one_line, readable_time
from watchers.distress.cooldown import Cooldown
from watchers.distress.route import distress_card, reassign_action, route_target
from watchers.distress.signals import Signal
from watchers.hermes.events import STATE_KINDS_NEWER
from watchers.model import Action
from watchers.settings import DistressSettings

if TYPE_CHECKING:
    from watchers.distress.decide import DistressSnapshot
    from watchers.store.board import EventRow

PARKING_KINDS = ("respawn_guarded", "reclaim_deferred")
"""Events Hermes writes when it defers a task (besides a rate-limited requeue)."""
RATE_REASONS = frozenset({"rate_limit_cooldown", "rate_limited"})
"""Deferral reasons that are a provider's quota, not the task's or the host's business."""
PARK_ENDS = ("completed", "assigned", "archived", "blocked", "unblocked", *STATE_KINDS_NEWER)
"""What ends a parked episode: the task ran to an end, moved, or someone acted on it."""
DEFERRALS_KEPT = 10
PARKED_TASKS_KEPT = 20_000


@dataclass(frozen=True, slots=True)
class Deferral:
    at: int
    kind: str  # respawn_guarded | reclaim_deferred | rate_limited
    reason: str


@dataclass(slots=True)
class Episode:
    """A task's deferrals since it last ran to an end, moved, or was acted on."""

    first_at: int
    count: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    recent: list[Deferral] = field(default_factory=list)  # the latest DEFERRALS_KEPT


def follow_deferrals(parked: dict[str, Episode], ev: EventRow) -> None:
    """Count Hermes's deferrals of a task (by task id in `parked`) until something ends
    the episode."""
    if ev.kind in PARK_ENDS:
        parked.pop(ev.task_id, None)
        return
    if ev.kind in PARKING_KINDS:
        reason = one_line(str(ev.payload.get("reason") or ev.kind), 80)
    elif ev.kind == "rate_limited":
        reason = "rate_limited"
    else:
        return
    episode = parked.get(ev.task_id)
    if episode is None:
        if len(parked) >= PARKED_TASKS_KEPT:
            return  # a board this sick is somebody's already
        episode = parked[ev.task_id] = Episode(ev.created_at)
    episode.count += 1
    episode.reasons[reason] = episode.reasons.get(reason, 0) + 1
    episode.recent.append(Deferral(ev.created_at, ev.kind, reason))
    del episode.recent[:-DEFERRALS_KEPT]


@dataclass(frozen=True, slots=True)
class ParkedCase:
    source: SourceTask
    since: float  # the first deferral of this episode
    count: int  # deferrals since
    reasons: Mapping[str, int]  # how many of each
    recent: tuple[Deferral, ...]  # the latest, oldest first
    reassignments: int  # by the watchers since the task last completed
    lane: str = "ready"

    @property
    def rate_limited(self) -> bool:
        """Were the deferrals (mostly) a provider's quota?"""
        rate = sum(n for r, n in self.reasons.items() if r in RATE_REASONS)
        return rate * 2 >= self.count

    @property
    def blocker(self) -> str:
        return Signal.RATE_LIMITED.value if self.rate_limited else "env_blocker"


def _evidence(case: ParkedCase, s: DistressSettings, now: float) -> dict[str, Any]:
    return {
        "reason_class": "parked",
        "parked_seconds": round(now - case.since),
        "parked_after_seconds": s.parked_seconds,
        "first_deferral_at": readable_time(case.since),
        "deferrals": case.count,
        "by_reason": dict(sorted(case.reasons.items())),
        "latest": [
            {"at": readable_time(d.at), "kind": d.kind, "reason": d.reason} for d in case.recent
        ],
        "reassignments": case.reassignments,
    }


def parked_decisions(
    snap: DistressSnapshot,
    s: DistressSettings,
    table: Mapping[str, Cooldown],
    now: float,
    card_route: str,
) -> list[Action]:
    actions: list[Action] = []
    for case in snap.parked:
        if now - case.since < s.parked_seconds:
            continue
        src = case.source
        if not card_needed(snap.cards, src.task_id, case.blocker, case.since):
            continue
        evidence = _evidence(case, s, now)
        reasons = ", ".join(f"{r} ×{n}" for r, n in sorted(case.reasons.items()))
        why = (
            f"Hermes deferred it {case.count} times over {(now - case.since) / 60:.0f} min "
            f"({reasons}) and never ran it to an end"
        )
        if case.rate_limited and s.reassign == "auto" and case.reassignments < s.max_reassignments:
            target, considered = route_target(snap.providers, src, Signal.RATE_LIMITED, table, now)
            evidence["route"] = considered
            if target is not None:
                actions.append(
                    reassign_action(
                        board=snap.board,
                        s=s,
                        providers=snap.providers,
                        src=src,
                        target=target,
                        reason="parked",
                        evidence=evidence,
                        lane=case.lane,
                        reassignments=case.reassignments,
                        why=why,
                    )
                )
                continue
        if case.rate_limited:
            needs = (
                f"{src.task_id} is parked on a provider quota: {why}. Move it to a profile on "
                "another provider, raise the quota, or hold it on purpose"
            )
        else:
            needs = (
                f"{src.task_id} is parked: {why}. Look at the reasons (a quota or auth error in "
                "its last failure, a recent success awaiting review, an open pull request) and "
                "clear the one that holds it, or close the task"
            )
        actions.append(
            distress_card(
                board=snap.board,
                s=s,
                providers=snap.providers,
                src=src,
                blocker=case.blocker,
                needs=needs,
                evidence=evidence,
                reason="parked",
                now=now,
                since=case.since,
                card_route=card_route,
            )
        )
    return actions
