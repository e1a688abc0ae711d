"""distress decisions: reassign across providers when safe, card otherwise. Pure."""

from __future__ import annotations

from dataclasses import replace

from watchers.cards import CardState
from watchers.distress.cooldown import ProviderSignal
from watchers.distress.decide import (
    DistressSnapshot,
    EscalationCase,
    SignalCase,
    SourceTask,
    StuckCase,
    decide,
    next_deadline,
)
from watchers.distress.signals import Signal
from watchers.hermes.profiles import Profile, ProviderMap
from watchers.model import ActionKind
from watchers.settings import DistressSettings

NOW = 1_800_000_000.0
S = DistressSettings()
PROFILES = ProviderMap(
    {
        "claude": Profile("claude", "anthropic", ("claude-2", "mystery", "gpt")),
        "claude-2": Profile("claude-2", "anthropic"),
        "mystery": Profile("mystery", None),
        "gpt": Profile("gpt", "openai", ("claude",)),
        "gemini": Profile("gemini", "google"),
        "lonely": Profile("lonely", "openai"),
    }
)


def source(task_id="t_0000aaaa", assignee="claude", **kw) -> SourceTask:
    fields = dict(
        task_id=task_id,
        title="Fix the parser",
        status="ready",
        assignee=assignee,
        provider_override=None,
        branch="wt/t_0000aaaa",
        workspace="/tmp/ws",
        cannot_touch=("vendor/",),
        completed=None,
        state="unknown",
        consecutive_failures=0,
    )
    fields.update(kw)
    return SourceTask(**fields)


def case(signal=Signal.RATE_LIMITED, reassignments=0, at=NOW - 60, **kw) -> SignalCase:
    return SignalCase(
        source=source(**kw),
        signal=signal,
        at=at,
        text="HTTP 429 Too Many Requests",
        run_id=3,
        reassignments=reassignments,
        attempts=2,
    )


def snap(*cases: SignalCase, cards=None, signals=(), stuck=(), escalations=()) -> DistressSnapshot:
    return DistressSnapshot(
        board="default",
        providers=PROFILES,
        signals=tuple(signals),
        signal_cases=cases,
        stuck=tuple(stuck),
        escalations=tuple(escalations),
        cards=cards or {},
    )


def test_rate_limited_work_moves_to_the_first_profile_on_a_different_known_provider():
    """Same provider and unknown provider are skipped; the evidence says why."""
    [action] = decide(snap(case()), S, NOW)
    assert action.kind is ActionKind.REASSIGN
    assert (action.plan["from"], action.plan["to"]) == ("claude", "gpt")
    assert (action.plan["from_provider"], action.plan["to_provider"]) == ("anthropic", "openai")
    assert action.expect == {"assignee": "claude", "status": "ready"}
    why = {r["profile"]: r["why"] for r in action.evidence["route"]}
    assert why == {"claude-2": "same provider", "mystery": "unknown provider", "gpt": None}
    assert "300 s" in action.plan["comment"]


def test_a_cooling_provider_is_not_a_route():
    """When many tasks hit openai, openai is cooling: no work is sent there."""
    hot = [ProviderSignal("openai", "t_1", NOW - 30), ProviderSignal("openai", "t_2", NOW - 20)]
    [action] = decide(snap(case(), signals=hot), S, NOW)
    assert action.kind is ActionKind.CARD and action.plan["blocker_type"] == "rate_limited"
    assert "provider cooling" in str(action.evidence["route"])


def test_no_eligible_route_writes_the_standard_card_for_the_orchestrator():
    """Title, routing and body follow the contract."""
    [action] = decide(snap(case(assignee="lonely")), S, NOW)
    assert action.kind is ActionKind.CARD
    assert action.plan["title"] == "[BLOCKED] t_0000aaaa rate_limited"
    assert action.plan["assignee"] == "orchestrator" and action.plan["priority"] > 0
    body = action.plan["body"]
    assert body.startswith("## Distress Signal\n- Blocked task: t_0000aaaa — Fix the parser")
    assert "- Worker: lonely (provider openai)" in body and "- Cannot touch: vendor/" in body
    assert "no eligible fallback profile (none configured)" in body


def test_an_unknown_source_provider_is_never_different_from_anything():
    """No reassignment away from a provider we do not know."""
    [action] = decide(snap(case(assignee="mystery")), S, NOW)
    assert action.kind is ActionKind.CARD


def test_a_provider_override_on_the_task_keeps_it_on_that_provider():
    """provider_override wins for the task, so another profile would not change provider."""
    [action] = decide(snap(case(provider_override="anthropic")), S, NOW)
    assert action.kind is ActionKind.CARD


def test_a_pinned_tasks_card_names_the_overrides_that_pin_it_and_what_to_change():
    """Needs says which override pins the provider and that it must change to route it."""
    pinned = case(provider_override="Anthropic", model_override="claude-opus-4")
    [action] = decide(snap(pinned), S, NOW)
    assert action.kind is ActionKind.CARD
    body = action.plan["body"]
    needs = next(line for line in body.splitlines() if line.startswith("- Needs: "))
    assert "pinned to provider anthropic by its provider_override" in needs
    assert "model_override claude-opus-4" in needs
    assert "Change or clear provider_override and model_override" in needs
    assert action.evidence["provider_override"] == "anthropic"
    assert action.evidence["model_override"] == "claude-opus-4"


def test_a_pinned_credential_failure_may_still_move_to_another_profiles_key():
    """Another profile has other credentials even on the pinned provider."""
    [action] = decide(snap(case(signal=Signal.CREDENTIAL, provider_override="anthropic")), S, NOW)
    assert action.kind is ActionKind.REASSIGN and action.plan["to"] == "claude-2"


def test_a_reassignment_of_a_reviewers_blocked_task_carries_its_lane():
    """The executor unblocks it into the lane its last attempt came from."""
    blocked = replace(case(status="blocked"), lane="review")
    [action] = decide(snap(blocked), S, NOW)
    assert action.kind is ActionKind.REASSIGN and action.plan["lane"] == "review"


def test_credential_failures_may_stay_on_the_same_provider():
    """A different profile (another key) is enough for a credential failure."""
    [action] = decide(snap(case(signal=Signal.CREDENTIAL)), S, NOW)
    assert action.kind is ActionKind.REASSIGN and action.plan["to"] == "claude-2"
    assert action.reason == "credential_failure"


def test_the_episodes_reassignment_budget_ends_in_a_card():
    """After max_reassignments the orchestrator decides."""
    [action] = decide(snap(case(reassignments=2)), S, NOW)
    assert action.kind is ActionKind.CARD and "2 reassignments already" in action.plan["body"]


def test_orchestrator_mode_never_reassigns():
    """distress.reassign = orchestrator: always the card."""
    s = S.model_copy(update={"reassign": "orchestrator"})
    [action] = decide(snap(case()), s, NOW)
    assert action.kind is ActionKind.CARD


def test_an_open_card_of_any_author_suppresses_a_new_one():
    """One open card per (task, blocker type)."""
    cards = {("t_0000aaaa", "rate_limited"): CardState("t_0000c4d5", None)}
    assert decide(snap(case(assignee="lonely"), cards=cards), S, NOW) == []


def test_a_resolved_card_is_not_reopened_but_a_later_failure_gets_a_new_one():
    """Resolved before the signal: new episode. Resolved after it: already answered."""
    answered = {("t_0000aaaa", "rate_limited"): CardState(None, NOW - 10)}
    assert decide(snap(case(assignee="lonely", at=NOW - 60), cards=answered), S, NOW) == []
    [action] = decide(snap(case(assignee="lonely", at=NOW - 5), cards=answered), S, NOW)
    assert action.kind is ActionKind.CARD


def test_a_stuck_worker_gets_an_env_blocker_card():
    """Alive (or remote) but silent past stuck_after_seconds."""
    stuck = StuckCase(source(status="running"), NOW - 1300, "alive", 4242, "host:1", NOW - 2000)
    [action] = decide(snap(stuck=[stuck]), S, NOW)
    assert action.kind is ActionKind.CARD and action.plan["blocker_type"] == "env_blocker"
    assert action.evidence["heartbeat_age_seconds"] == 1300
    assert decide(snap(stuck=[replace(stuck, since=NOW - 60)]), S, NOW) == []


def test_an_auto_heal_escalation_becomes_an_env_blocker_card():
    """Too many infrastructure resets: the orchestrator gets the card."""
    esc = EscalationCase(source(status="blocked"), NOW - 5, {"resets_in_window": 3})
    [action] = decide(snap(escalations=[esc]), S, NOW)
    assert action.plan["title"] == "[BLOCKED] t_0000aaaa env_blocker"
    assert action.reason == "escalation" and action.evidence["resets_in_window"] == 3


def test_the_next_deadline_is_when_a_silent_worker_becomes_stuck():
    """Silent for 60 s of 1200: due in 1140 s; already past it: nothing more to wait for."""
    stuck = StuckCase(source(status="running"), NOW - 60, "alive", 4242, "host:1", NOW - 2000)
    assert next_deadline(snap(stuck=[stuck]), S, NOW) == NOW - 60 + S.stuck_after_seconds
    assert next_deadline(snap(stuck=[replace(stuck, since=NOW - 1300)]), S, NOW) is None
    assert next_deadline(snap(), S, NOW) is None


def test_the_next_deadline_is_when_a_provider_cooldown_ends_while_a_signal_waits():
    """A retry-after signal cools its provider; a waiting case is decided again when the
    cooldown ends. Without a waiting case the cooldown's end changes nothing."""
    sig = ProviderSignal("openai", "t_0000aaaa", NOW - 10, retry_after=120.0)
    assert next_deadline(snap(case(), signals=[sig]), S, NOW) == NOW - 10 + 120.0
    assert next_deadline(snap(signals=[sig]), S, NOW) is None


def test_the_next_deadline_includes_the_moment_a_silent_worker_would_become_stuck():
    """Not stuck yet (the observer says when it would be): that moment is the deadline."""
    assert next_deadline(replace(snap(), silent_until=NOW + 90), S, NOW) == NOW + 90
    assert next_deadline(replace(snap(), silent_until=NOW - 1), S, NOW) is None


def test_cards_and_their_needs_give_times_in_iso_8601_utc():
    """Evidence times (`*_at`, `*_until`) and a cooldown's end read as a person reads them."""
    from watchers.cards import readable_time, render_body

    assert readable_time(NOW) == "2027-01-15T08:00:00Z"
    [action] = decide(
        snap(case(), signals=[ProviderSignal("anthropic", "t_0000aaaa", NOW - 10, 3600.0)]),
        S.model_copy(update={"max_reassignments": 0}),
        NOW,
    )
    body = action.plan["body"]
    assert "cooling until 2027-01-15T08:59:50Z" in body
    assert f"{int(NOW)}" not in body.replace(action.evidence["tick"], "")
    facts_body = render_body(
        replace(_facts(), evidence={"gave_up_at": int(NOW), "resets_in_window": 2})
    )
    assert "- gave_up_at: 2027-01-15T08:00:00Z" in facts_body
    assert "- resets_in_window: 2" in facts_body


def _facts():
    from watchers.cards import CardFacts

    return CardFacts(
        source_id="t_0000aaaa",
        source_title="Fix the parser",
        worker="claude",
        provider="anthropic",
        branch=None,
        workspace=None,
        blocker_type="rate_limited",
        completed=None,
        cannot_touch=(),
        needs="x",
        state="unknown",
        evidence={},
    )


def test_with_route_creator_a_card_goes_to_the_creating_profile_when_it_is_known():
    """Known creator: theirs; a person or the daemon itself: the orchestrator's."""
    lonely = case(assignee="lonely", created_by="gpt")
    [action] = decide(snap(lonely), S, NOW, route="creator")
    assert action.plan["assignee"] == "gpt"
    assert "for gpt" in action.plan["comment"]
    [action] = decide(snap(lonely), S, NOW)
    assert action.plan["assignee"] == S.orchestrator_profile
    for creator in ("alice", "watchers", None):
        [action] = decide(
            snap(case(assignee="lonely", created_by=creator)), S, NOW, route="creator"
        )
        assert action.plan["assignee"] == S.orchestrator_profile
