"""The iteration-budget watcher's pure parts: budget lines, fingerprints, decisions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from watchers.budget.budgets import BodyBudgets, parse_body, parse_duration, resolve
from watchers.budget.decide import BudgetSnapshot, BudgetTask, Failure, decide, next_deadline
from watchers.budget.fingerprint import fingerprint, normalize
from watchers.budget.memo import SMALL, Memo
from watchers.cards import CardState, SourceTask
from watchers.model import ActionKind
from watchers.settings import Settings

NOW = 1_800_000_000.0
S = Settings()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("45m", 2700), ("2h", 7200), ("1h30m", 5400), ("120", 120), ("1.5h", 5400)],
)
def test_durations_take_seconds_minutes_and_hours(text, seconds):
    """The documented duration syntax."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "0", "-5m", "5 parsecs", "m5"])
def test_anything_else_is_not_a_duration(text):
    """No guessing."""
    assert parse_duration(text) is None


def test_budget_lines_are_read_from_anywhere_in_the_body():
    """Case-insensitive, optionally bulleted; the first of each kind wins."""
    body = "Do the thing.\n- time budget: 45m\nIteration Budget: 40\n* Attempt budget: 3\nTime budget: 9h\n"
    assert parse_body(body) == BodyBudgets(2700.0, 40, 3, ())


def test_malformed_budget_lines_are_named_and_ignored():
    """A bad line is reported (quoted) and the next source decides."""
    found = parse_body("Time budget: soon\nAttempt budget: three\nIteration budget: 0\n")
    assert found.time_seconds is None and found.attempts is None and found.iterations is None
    assert len(found.problems) == 3
    assert "'Time budget: soon': not a duration" in found.problems[0]


def test_hermes_columns_win_then_the_body_then_the_profile_then_the_defaults():
    """First match wins, and each budget says where it came from."""
    b = resolve(
        max_runtime_seconds=600,
        goal_max_turns=None,
        max_retries=None,
        body=BodyBudgets(2700.0, 40, None),
        profile="coder",
        profile_time=60.0,
        profile_iterations=9,
        profile_attempts=7,
        global_time=7200.0,
        global_iterations=None,
        global_attempts=5,
    )
    assert (b.time.value, b.time.source) == (600, "hermes:max_runtime_seconds")
    assert (b.iterations.value, b.iterations.source) == (40, "body")
    assert (b.attempts.value, b.attempts.source) == (7, "profile:coder")


def test_fingerprints_ignore_numbers_pids_paths_hex_ids_and_timestamps():
    """The same failure on another run, path, task and minute has the same fingerprint."""
    a = "pid 4123 exited with code 1: KeyError in /w/t_1a2b3c4d/src/app.py at 2026-11-21T10:00:00Z (0xdeadbeef)"
    b = "pid 17 exited with code 1: KeyError in /tmp/q/t_99998888/src/app.py at 2026-11-22T11:01:02Z (0x1)"
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint("pid 1 exited with code 1: ValueError")
    assert normalize(a).startswith("pid <n> exited with code <n>: keyerror in <path> at <ts>")


def source(task_id="t_0000b0b0", **kw) -> SourceTask:
    fields = dict(
        task_id=task_id,
        title="Big task",
        status="running",
        assignee="coder",
        provider_override=None,
        branch=None,
        workspace=None,
        cannot_touch=(),
        completed=None,
        state="unknown",
        consecutive_failures=0,
    )
    fields.update(kw)
    return SourceTask(**fields)


def task(**kw) -> BudgetTask:
    budgets = resolve(
        max_runtime_seconds=None,
        goal_max_turns=None,
        max_retries=None,
        body=BodyBudgets(),
        profile="coder",
        profile_time=None,
        profile_iterations=None,
        profile_attempts=None,
        global_time=1000.0,
        global_iterations=100,
        global_attempts=4,
    )
    fields = dict(
        source=source(),
        provider="anthropic",
        budgets=budgets,
        problems=(),
        running=True,
        run_id=7,
        attempt_started_at=NOW - 100,
        heartbeats=10,
        attempts=1,
        last_attempt_at=NOW - 100,
        failures=(),
        resets=0,
        last_reset_at=None,
        block_recurrences=0,
        last_block_at=None,
    )
    fields.update(kw)
    return BudgetTask(**fields)


def run(*tasks: BudgetTask, cards=None):
    return decide(BudgetSnapshot("default", tasks, cards or {}), S, NOW)


def test_a_task_well_inside_its_budgets_gets_nothing():
    """Quiet when nothing is near a limit."""
    assert run(task()) == []


def test_at_eighty_percent_of_the_time_budget_one_warning_per_attempt():
    """A warning, not a card; already warned for this run: nothing."""
    [w] = run(task(attempt_started_at=NOW - 850))
    assert (w.kind, w.reason) == (ActionKind.WARN, "time_budget_warning")
    assert w.expect == {"run_id": 7, "budget": "time"}
    assert run(task(attempt_started_at=NOW - 850, warned=frozenset({(7, "time")}))) == []


def test_past_the_time_budget_a_split_card():
    """100 % of the time budget: an iteration_budget card naming the budget and its source."""
    t = task(attempt_started_at=NOW - 1200, scope_lines=("parser", "docs"), touched=("a.py",))
    [card] = run(t)
    assert card.kind is ActionKind.CARD and card.reason == "time_budget"
    assert card.plan["title"] == "[BLOCKED] t_0000b0b0 iteration_budget"
    assert card.evidence["source"] == "global" and card.evidence["limit"] == 1000.0
    assert "[1] parser; [2] docs" in card.plan["body"] and "a.py" in card.plan["body"]


def test_heartbeats_are_the_iteration_budget():
    """80 % of the heartbeats warns; all of them cards."""
    [w] = run(task(heartbeats=85))
    assert w.reason == "iterations_budget_warning"
    [c] = run(task(heartbeats=100))
    assert c.reason == "iteration_budget"


def test_attempts_without_completion_have_a_budget():
    """Four attempts against an attempt budget of four."""
    [c] = run(task(running=False, run_id=None, attempt_started_at=None, attempts=4))
    assert c.reason == "attempt_budget" and c.evidence["consumed"] == 4


def test_the_same_failure_three_times_asks_for_a_split():
    """Three failures with one fingerprint; the evidence carries it and the count."""
    fs = tuple(Failure("abc123", f"boom {i}", NOW - 100 + i) for i in range(3))
    [c] = run(task(running=False, attempts=3, failures=fs))
    assert c.reason == "repeated_failure"
    assert (c.evidence["fingerprint"], c.evidence["count"]) == ("abc123", 3)
    two = (*fs[:2], Failure("other", "x", NOW))
    assert run(task(running=False, attempts=3, failures=two)) == []


def test_repeated_resets_or_re_blocks_need_a_human():
    """After max_resets resets the card goes to the review profile and says so."""
    s_reset = task(running=False, attempts=1, resets=3, last_reset_at=NOW - 5)
    [c] = run(s_reset)
    assert c.reason == "needs_human" and "human review" in c.plan["body"]
    assert c.plan["assignee"] == "orchestrator"
    s = S.model_copy(update={"budget": S.budget.model_copy(update={"review_profile": "alice"})})
    [c2] = decide(BudgetSnapshot("default", (s_reset,), {}), s, NOW)
    assert c2.plan["assignee"] == "alice"
    [c3] = run(task(running=False, attempts=1, block_recurrences=2, last_block_at=NOW - 5))
    assert c3.reason == "needs_human"


def test_one_open_card_per_task_and_episode():
    """An open card stops the next; one resolved after the overrun began, too."""
    t = task(attempt_started_at=NOW - 1200)
    assert run(t, cards={("t_0000b0b0", "iteration_budget"): CardState("t_c", None)}) == []
    assert run(t, cards={("t_0000b0b0", "iteration_budget"): CardState(None, NOW - 10)}) == []
    newer = replace(t, attempt_started_at=NOW - 1005)  # a new attempt, overrun since NOW-5
    assert (
        len(run(newer, cards={("t_0000b0b0", "iteration_budget"): CardState(None, NOW - 10)})) == 1
    )


def test_a_malformed_line_is_reported():
    """A NOTE action per unreported problem."""
    [note, *_] = run(task(problems=("'Time budget: soon': not a duration",)))
    assert note.kind is ActionKind.NOTE and note.expect == {
        "line": "'Time budget: soon': not a duration"
    }


def test_the_next_deadline_is_the_warning_line_then_the_budget_itself():
    """Time budget 1000 s, warned at 80 %: 100 s in, the warning is due at 800 s; warned
    already, the budget's end; past it (a card answers that), or idle: nothing."""
    snap = BudgetSnapshot("default", (task(),), {})
    assert next_deadline(snap, S, NOW) == NOW - 100 + 0.8 * 1000
    warned = task(warned=frozenset({(7, "time")}))
    assert next_deadline(BudgetSnapshot("default", (warned,), {}), S, NOW) == NOW - 100 + 1000
    late = task(attempt_started_at=NOW - 1200)
    assert next_deadline(BudgetSnapshot("default", (late,), {}), S, NOW) is None
    idle = task(running=False)
    assert next_deadline(BudgetSnapshot("default", (idle,), {}), S, NOW) is None


def test_with_route_creator_the_card_goes_to_the_creating_profile_when_known():
    """cards.route = creator: a known creator gets the card; an unknown one, the orchestrator."""
    s = S.model_copy(update={"cards": S.cards.model_copy(update={"route": "creator"})})
    late = task(attempt_started_at=NOW - 1200, source=source(created_by="lead"))
    known = BudgetSnapshot("default", (late,), {}, profiles=frozenset({"lead", "coder"}))
    [card] = decide(known, s, NOW)
    assert card.plan["assignee"] == "lead"
    [card] = decide(replace(known, profiles=frozenset({"coder"})), s, NOW)
    assert card.plan["assignee"] == "orchestrator"
    [card] = decide(known, S, NOW)  # the default route
    assert card.plan["assignee"] == "orchestrator"


def test_a_memo_counts_each_attempt_once_whether_few_or_many():
    memo = Memo()
    for run in (1, 2, 2, 3):
        memo.attempted(run)
    memo.not_attempted(2)
    memo.not_attempted(99)
    assert memo.attempts == 2
    for run in range(100, 100 + 2 * SMALL):
        memo.attempted(run)
    memo.attempted(100)
    memo.not_attempted(1)
    assert memo.attempts == 1 + 2 * SMALL
    single = Memo()
    single.attempted(7)
    single.not_attempted(7)
    assert single.attempts == 0
