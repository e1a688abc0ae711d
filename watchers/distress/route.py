"""Where distress sends a task: the first eligible fallback profile, or a card. Pure.

Shared by the signal decisions (a rate limit or a refused key) and the parked ones (a
task Hermes keeps deferring): the same route, the same reassignment, the same card.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from watchers.cards import SourceTask, card_action, card_owner, one_line
from watchers.distress import WATCHER
from watchers.distress.cooldown import Cooldown
from watchers.distress.signals import Signal
from watchers.hermes.profiles import ProviderMap
from watchers.model import Action, ActionKind
from watchers.settings import DistressSettings


def route_target(
    providers: ProviderMap,
    src: SourceTask,
    signal: Signal,
    table: Mapping[str, Cooldown],
    now: float,
) -> tuple[str | None, list[dict[str, Any]]]:
    """The first eligible fallback of the task's profile (None: none), and why each
    fallback was or was not eligible: a rate limit needs a different, known provider; a
    credential failure any other profile; neither goes to a cooling provider."""
    src_provider = providers.provider_of(src.assignee, src.provider_override)
    considered: list[dict[str, Any]] = []
    target: str | None = None
    for profile in providers.route(src.assignee):
        provider = providers.provider_of(profile, src.provider_override)
        cooling = provider is not None and table.get(provider) is not None
        cooling = cooling and table[provider or ""].cooling(now)
        if signal is Signal.RATE_LIMITED:
            ok = provider is not None and src_provider is not None and provider != src_provider
            why = (
                "unknown provider"
                if provider is None or src_provider is None
                else ("same provider" if provider == src_provider else "")
            )
        else:
            ok, why = profile != src.assignee, ""
        if ok and cooling:
            ok, why = False, "provider cooling"
        considered.append(
            {"profile": profile, "provider": provider, "eligible": ok, "why": why or None}
        )
        if ok and target is None:
            target = profile
    return target, considered


def reassign_action(
    *,
    board: str,
    s: DistressSettings,
    providers: ProviderMap,
    src: SourceTask,
    target: str,
    reason: str,
    evidence: dict[str, Any],
    lane: str,
    reassignments: int,
    why: str,
) -> Action:
    """Move `src` to `target` (its lane kept), in Hermes's terms, saying why."""
    src_provider = providers.provider_of(src.assignee, src.provider_override)
    to_provider = providers.provider_of(target, src.provider_override)
    return Action(
        watcher=WATCHER,
        board=board,
        task_id=src.task_id,
        kind=ActionKind.REASSIGN,
        reason=reason,
        evidence=evidence,
        expect={"assignee": src.assignee, "status": src.status},
        plan={
            "lane": lane,
            "to": target,
            "from": src.assignee,
            "from_provider": src_provider,
            "to_provider": to_provider,
            "comment": (
                f"kanban-watchers reassigned this task from {src.assignee} "
                f"(provider {src_provider or 'unknown'}) to {target} (provider "
                f"{to_provider or 'unknown'}): {reason.replace('_', ' ')} — "
                f"{one_line(why, 160)}. Reassignment {reassignments + 1} "
                f"of at most {s.max_reassignments} this episode. Hermes may still "
                "hold the respawn for up to 300 s after a rate-limited attempt."
            ),
        },
    )


def distress_card(
    *,
    board: str,
    s: DistressSettings,
    providers: ProviderMap,
    src: SourceTask,
    blocker: str,
    needs: str,
    evidence: dict[str, Any],
    reason: str,
    now: float,
    since: float,
    card_route: str,
) -> Action:
    """The `[BLOCKED]` card for `src`, to whoever `cards.route` names."""
    return card_action(
        watcher=WATCHER,
        board=board,
        source=src,
        provider=providers.provider_of(src.assignee, src.provider_override),
        blocker=blocker,
        needs=needs,
        evidence=evidence,
        reason=reason,
        now=now,
        since=since,
        assignee=card_owner(card_route, src, s.orchestrator_profile, providers.profiles),
        priority=s.card_priority,
    )
