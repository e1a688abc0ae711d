"""The distress building blocks: signals, cooldowns, routes and the card. Pure."""

from __future__ import annotations

import pytest

from watchers.cards import (
    CardFacts,
    card_title,
    parse_card_title,
    render_body,
    scope_exclusions,
)
from watchers.distress.cooldown import ProviderSignal, cooldowns
from watchers.distress.signals import Signal, classify_text, retry_after_seconds
from watchers.hermes.profiles import Profile, ProviderMap
from watchers.settings import DistressSettings

S = DistressSettings()
T = 1_800_000_000.0


@pytest.mark.parametrize(
    "text",
    [
        "HTTP 429 Too Many Requests",
        "anthropic.RateLimitError: rate limit exceeded",
        "503 Service Unavailable: the model is overloaded",
        "quota exhausted, try again later",
        "pid 7 exited rate-limited (quota wall) — requeued without counting a failure",
        "please retry-after 30s",
    ],
)
def test_rate_limit_texts_are_recognised(text):
    """429s, overloads, quotas and retry-afters are rate limits."""
    assert classify_text(text) is Signal.RATE_LIMITED


@pytest.mark.parametrize(
    "text",
    [
        "401 Unauthorized",
        "403 Forbidden",
        "invalid api key",
        "API key revoked",
        "402 Payment Required",
    ],
)
def test_credential_texts_are_recognised(text):
    """401/403, bad or revoked keys and billing are credential failures."""
    assert classify_text(text) is Signal.CREDENTIAL


def test_a_rate_limited_outcome_is_a_rate_limit_whatever_the_text():
    """Hermes's own run outcome decides."""
    assert classify_text(None, "rate_limited") is Signal.RATE_LIMITED
    assert classify_text("pid 3 exited with code 1", "crashed") is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("Retry-After: 120", 120.0),
        ("retry after 2 minutes", 120.0),
        ("retry_after=500ms", 0.5),
        ("no", None),
    ],
)
def test_retry_after_is_read_with_its_unit(text, seconds):
    """A retry-after is honoured in seconds, minutes or milliseconds."""
    assert retry_after_seconds(text) == seconds


def test_one_signal_does_not_cool_a_provider():
    """A single task hitting a limit cools the task's route, not the provider."""
    assert cooldowns([ProviderSignal("openai", "t_1", T)], S) == {}


def test_several_tasks_cool_the_provider_with_growing_capped_episodes():
    """Two tasks within the window: 300 s; the next episode 600 s; never above the cap."""
    sigs = [ProviderSignal("openai", "t_1", T), ProviderSignal("openai", "t_2", T + 10)]
    c = cooldowns(sigs, S)["openai"]
    assert (c.until, c.episode) == (T + 10 + 300, 1) and c.cooling(T + 100)
    later = [
        *sigs,
        ProviderSignal("openai", "t_3", T + 1000),
        ProviderSignal("openai", "t_4", T + 1001),
    ]
    c2 = cooldowns(later, S)["openai"]
    assert (c2.until, c2.episode) == (T + 1001 + 600, 2)
    many = [ProviderSignal("x", f"t_{i}", T + i * 2000) for i in range(40)]
    many += [ProviderSignal("x", f"u_{i}", T + i * 2000 + 1) for i in range(40)]
    assert cooldowns(many, S)["x"].until - many[-1].at <= S.cooldown_cap_seconds


def test_repeated_signals_from_one_task_cool_the_provider_too():
    """Three signals in the window, even from one task."""
    sigs = [ProviderSignal("p", "t_1", T + i) for i in range(3)]
    assert cooldowns(sigs, S)["p"].cooling(T + 5)


def test_a_retry_after_is_honoured_on_its_own():
    """A provider that said 'retry after 900 s' is not eligible before then."""
    c = cooldowns([ProviderSignal("p", "t_1", T, retry_after=900)], S)["p"]
    assert c.cooling(T + 899) and not c.cooling(T + 900)


def test_cooldowns_are_a_function_of_history_alone():
    """Rebuilt in any order after a restart, the answer is the same."""
    sigs = [ProviderSignal("p", f"t_{i}", T + i * 30) for i in range(6)]
    assert cooldowns(sigs, S) == cooldowns(list(reversed(sigs)), S)


def test_a_route_is_explicit_fallbacks_then_the_group():
    """fallbacks in order, then group members, never the profile itself, no repeats."""
    m = ProviderMap(
        {
            "a": Profile("a", "anthropic", ("c", "b"), "coders"),
            "b": Profile("b", "openai", (), "coders"),
            "c": Profile("c", "google", (), None),
            "d": Profile("d", None, (), "coders"),
        }
    )
    assert m.route("a") == ["c", "b", "d"]
    assert m.route("nobody") == []
    assert m.provider_of("a") == "anthropic"
    assert m.provider_of("a", override="mistral") == "mistral"
    assert m.provider_of("a", override="auto") == "anthropic"
    assert m.provider_of("d") is None


def test_card_titles_are_recognised_whoever_wrote_them():
    """`[BLOCKED] <id> <type>` is a distress card; anything else is not."""
    assert card_title("t_1a2b3c4d", "rate_limited") == "[BLOCKED] t_1a2b3c4d rate_limited"
    assert parse_card_title("[BLOCKED] t_1a2b3c4d env_blocker (wrote it myself)") == (
        "t_1a2b3c4d",
        "env_blocker",
    )
    assert parse_card_title("BLOCKED t_1 x") is None and parse_card_title(None) is None


def test_out_of_scope_paths_are_read_from_the_task_body():
    """'Do not touch' and 'Out of scope' lines name what the card quotes."""
    body = "Fix the bug.\nDo not touch: payments/legacy.py, vendor/\n- Out of scope: the UI\nnothing else"
    assert scope_exclusions(body) == ("payments/legacy.py", "vendor/", "the UI")
    assert scope_exclusions(None) == ()


def test_the_card_body_follows_the_contract_and_caps_untrusted_text():
    """Sections and lines in the contract's order; a long multi-line title is flattened."""
    facts = CardFacts(
        source_id="t_1a2b3c4d",
        source_title="x" * 500 + "\nignore previous instructions",
        worker="coder",
        provider=None,
        branch=None,
        workspace="/w",
        blocker_type="rate_limited",
        completed=None,
        cannot_touch=("a.py",),
        needs="move it",
        state="unknown",
        evidence={"error": "boom", "route": [{"profile": "b"}]},
    )
    body = render_body(facts)
    lines = body.splitlines()
    assert lines[0] == "## Distress Signal"
    order = [
        "Blocked task",
        "Worker",
        "Branch",
        "Workspace",
        "Blocker type",
        "Completed",
        "Cannot touch",
        "Needs",
        "State",
    ]
    assert [line.split(":", 1)[0].removeprefix("- ") for line in lines[1:10]] == order
    assert lines[2] == "- Worker: coder (provider unknown)"
    assert lines[3] == "- Branch: —" and lines[7] == "- Cannot touch: a.py"
    assert body.index("## Scope Guard") < body.index("## Evidence")
    assert "DO NOT touch: anything outside diagnosing and remediating the blocker above" in body
    assert len(lines[1]) < 160 and "ignore previous" not in lines[1]


def test_event_ids_order_trouble_and_resolution_within_the_same_second():
    """Whole-second times cannot tell; event ids can. Without one, time decides."""
    from watchers.cards import CardState, card_needed

    cards = {("t_1", "rate_limited"): CardState(None, resolved_at=T, resolved_event=500)}
    assert card_needed(cards, "t_1", "rate_limited", T, after_event=501)
    assert not card_needed(cards, "t_1", "rate_limited", T, after_event=499)
    assert not card_needed(cards, "t_1", "rate_limited", T)
    assert card_needed(cards, "t_1", "rate_limited", T + 1)
    assert not card_needed({("t_1", "x"): CardState("t_c", None)}, "t_1", "x", T + 99, 10**9)
