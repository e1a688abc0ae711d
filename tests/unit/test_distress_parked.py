"""Tasks Hermes keeps deferring: moved when a route helps, else carded with the deferrals. Pure."""

from __future__ import annotations

from dataclasses import replace

from tests.unit.test_distress_decide import NOW, PROFILES, S, snap, source
from watchers.cards import CardState
from watchers.distress.decide import decide, next_deadline
from watchers.distress.parked import Deferral, Episode, ParkedCase, follow_deferrals
from watchers.model import ActionKind
from watchers.store.board import EventRow


def parked(reasons: dict[str, int], since: float = NOW - 4000, **kw) -> ParkedCase:
    count = sum(reasons.values())
    recent = tuple(
        Deferral(int(since) + 60 * i, "respawn_guarded", r) for i, r in enumerate(reasons)
    )
    fields = dict(
        source=source(**kw.pop("src", {})),
        since=since,
        count=count,
        reasons=reasons,
        recent=recent,
        reassignments=0,
    )
    fields.update(kw)
    return ParkedCase(**fields)


def with_parked(*cases: ParkedCase, until: float | None = None, cards=None):
    return replace(snap(cards=cards), parked=cases, parked_until=until)


def test_a_task_parked_on_a_quota_moves_to_another_provider_when_one_is_free():
    """Rate-limit cooldowns for an hour: claude (anthropic) -> gpt (openai), reason parked."""
    [action] = decide(with_parked(parked({"rate_limit_cooldown": 40, "rate_limited": 3})), S, NOW)
    assert (action.kind, action.reason, action.plan["to"]) == (ActionKind.REASSIGN, "parked", "gpt")
    assert action.evidence["deferrals"] == 43 and action.evidence["reason_class"] == "parked"


def test_without_a_route_a_parked_task_gets_a_card_listing_its_deferrals():
    """No fallback on another provider: a rate_limited card whose Evidence lists the deferrals."""
    case = parked({"rate_limit_cooldown": 12}, src={"assignee": "lonely"})
    [card] = decide(with_parked(case), S, NOW)
    assert (card.kind, card.reason, card.plan["blocker_type"]) == (
        ActionKind.CARD,
        "parked",
        "rate_limited",
    )
    assert card.evidence["by_reason"] == {"rate_limit_cooldown": 12}
    assert card.evidence["latest"][0]["reason"] == "rate_limit_cooldown"
    assert "deferred it 12 times" in card.plan["body"]


def test_a_task_held_by_an_open_pull_request_gets_an_env_blocker_card():
    """Not a quota: nothing to reroute; the card says what holds it."""
    [card] = decide(with_parked(parked({"active_pr": 30, "blocker_auth": 5})), S, NOW)
    assert (card.reason, card.plan["blocker_type"]) == ("parked", "env_blocker")
    assert "open pull request" in card.plan["body"]


def test_nothing_before_parked_seconds_and_nothing_twice():
    """Younger than parked_seconds: nothing (the deadline says when); an open card: nothing."""
    young = parked({"active_pr": 30}, since=NOW - 600)
    assert decide(with_parked(young, until=NOW - 600 + S.parked_seconds), S, NOW) == []
    assert next_deadline(with_parked(until=NOW + 3000), S, NOW) == NOW + 3000
    open_card = {(source().task_id, "env_blocker"): CardState("t_card", None)}
    assert decide(with_parked(parked({"active_pr": 30}), cards=open_card), S, NOW) == []


def test_deferrals_are_counted_until_the_task_runs_to_an_end_or_moves():
    """respawn_guarded, reclaim_deferred and rate-limited requeues count; completion ends it."""
    book: dict[str, Episode] = {}

    def ev(kind: str, at: int, reason: str | None = None) -> EventRow:
        payload = {"reason": reason} if reason else {}
        return EventRow(at, "t_0000aaaa", kind, at, payload, "claude", None, None, None)

    for i, (kind, reason) in enumerate(
        [("respawn_guarded", "rate_limit_cooldown"), ("rate_limited", None), ("claimed", None)]
        + [("respawn_guarded", "blocker_auth")] * 12
    ):
        follow_deferrals(book, ev(kind, 1000 + i, reason))
    episode = book["t_0000aaaa"]
    assert (episode.first_at, episode.count) == (1000, 14)
    assert episode.reasons == {"rate_limit_cooldown": 1, "rate_limited": 1, "blocker_auth": 12}
    assert len(episode.recent) == 10
    follow_deferrals(book, ev("assigned", 2000))
    assert book == {}
    assert PROFILES.provider_of("gpt") == "openai"
