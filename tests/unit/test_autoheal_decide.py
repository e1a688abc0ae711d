"""auto-heal's pure decisions: snapshots in, actions out, time passed in."""

from __future__ import annotations

from dataclasses import replace

import pytest

from watchers.autoheal.backoff import compute_backoff
from watchers.autoheal.decide import decide, next_deadline
from watchers.model import (
    ActionKind,
    FailureRecord,
    GaveUpTask,
    HealSnapshot,
    Observation,
    RunningTask,
    Verdict,
)
from watchers.settings import AutoHealSettings

NOW = 1_800_000_000.0
HOST = "node-a"
S = AutoHealSettings()

GONE = Observation(Verdict.GONE, "no such process")
ALIVE = Observation(Verdict.ALIVE, "verified worker")


def running(task_id: str = "t_00000001", *, age: float = 60, **kw: object) -> RunningTask:
    fields: dict[str, object] = dict(
        task_id=task_id,
        assignee="alice",
        claim_lock=f"{HOST}:4242",
        claim_expires=int(NOW) + 900,
        worker_pid=1000 + int(task_id[-4:], 16),
        current_run_id=7,
        attempt_started_at=int(NOW - age),
        last_heartbeat_at=int(NOW - age),
        consecutive_failures=0,
        max_retries=None,
    )
    fields.update(kw)
    return RunningTask(**fields)  # type: ignore[arg-type]


def snap(
    *tasks: RunningTask, obs: dict[str, Observation] | None = None, gave_up=()
) -> HealSnapshot:
    return HealSnapshot(
        board="default",
        host=HOST,
        running=tasks,
        observations=obs if obs is not None else {t.task_id: GONE for t in tasks},
        gave_up=tuple(gave_up),
    )


def gave_up(
    *errors: str,
    outcome: str = "crashed",
    at: float = NOW - 3600,
    resets: tuple[int, ...] = (),
    escalated: bool = False,
) -> GaveUpTask:
    return GaveUpTask(
        task_id="t_0000beef",
        consecutive_failures=len(errors),
        gave_up_event_id=99,
        gave_up_at=int(at),
        failures=tuple(FailureRecord(i, outcome, e) for i, e in enumerate(errors)),
        reset_times=resets,
        escalated=escalated,
    )


# -- reaping dead workers -----------------------------------------------------------


def test_a_dead_worker_past_grace_goes_back_to_ready_with_one_failure_counted():
    """A gone worker's task returns to ready and its failure is counted as Hermes counts it."""
    [action] = decide(snap(running()), S, NOW)
    assert action.kind is ActionKind.REAP
    assert action.reason == "worker_gone"
    assert action.plan["new_status"] == "ready"
    assert action.plan["outcome"] == "crashed"
    assert action.plan["failures"] == 1 and not action.plan["trip"]
    assert action.plan["error"].startswith("pid 1001 not alive")
    assert action.expect == {
        "claim_lock": f"{HOST}:4242",
        "worker_pid": 1001,
        "current_run_id": 7,
        "consecutive_failures": 0,
    }


@pytest.mark.parametrize("verdict", [Verdict.GONE, Verdict.ZOMBIE, Verdict.REUSED])
def test_every_dead_verdict_is_reaped(verdict):
    """Gone, zombie and reused workers are all dead to the task."""
    task = running()
    [action] = decide(snap(task, obs={task.task_id: Observation(verdict, "x")}), S, NOW)
    assert action.reason == f"worker_{verdict.value}"


@pytest.mark.parametrize("verdict", [Verdict.ALIVE, Verdict.UNKNOWN])
def test_alive_and_unknown_workers_are_left_alone(verdict):
    """A worker we verified, or may not inspect, is never reaped."""
    task = running()
    assert decide(snap(task, obs={task.task_id: Observation(verdict, "x")}), S, NOW) == []


def test_a_worker_inside_the_start_grace_is_not_judged():
    """A fresh attempt gets start_grace_seconds before its worker is judged."""
    assert decide(snap(running(age=10)), S, NOW) == []
    assert len(decide(snap(running(age=10)), replace_s(start_grace_seconds=0), NOW)) == 1


def test_the_grace_counts_from_the_attempts_claim_not_the_tasks_first_start():
    """attempt_started_at is the open run's claim time; an old task with a new attempt waits."""
    task = running(age=5)
    assert decide(snap(task), S, NOW) == []


def test_a_remote_claim_is_never_judged_by_pid():
    """A claim from another host says nothing about PIDs here."""
    task = running(claim_lock="node-b:77")
    assert decide(snap(task), S, NOW) == []


def test_a_host_alias_counts_as_this_host():
    """host_aliases lets a container judge claims written under the node's name."""
    task = running(claim_lock="node-b:77")
    assert len(decide(snap(task), replace_s(host_aliases=("node-b",)), NOW)) == 1


def test_the_breaker_trips_at_the_failure_limit():
    """At failure_limit the task goes to blocked with a gave_up event planned."""
    [action] = decide(snap(running(consecutive_failures=1)), S, NOW)
    assert action.plan["new_status"] == "blocked"
    assert action.plan["trip"] and action.plan["failures"] == 2
    assert action.plan["effective_limit"] == 2 and action.plan["limit_source"] == "watchers"


def test_a_tasks_max_retries_wins_over_the_failure_limit():
    """max_retries on the task is the limit, as in Hermes."""
    [action] = decide(snap(running(max_retries=1)), S, NOW)
    assert action.plan["trip"] and action.plan["limit_source"] == "task"
    [action] = decide(snap(running(max_retries=5, consecutive_failures=2)), S, NOW)
    assert not action.plan["trip"]


def test_a_zombie_that_exited_rate_limited_is_requeued_without_a_failure():
    """Exit 75 is a provider quota wall, not the task's failure."""
    task = running(consecutive_failures=1)
    obs = Observation(Verdict.ZOMBIE, "zombie", exit_code=75)
    [action] = decide(snap(task, obs={task.task_id: obs}), S, NOW)
    assert action.plan["outcome"] == "rate_limited"
    assert action.plan["failures"] == 1 and action.plan["new_status"] == "ready"


def test_a_zombie_killed_by_sigkill_is_written_in_hermess_words():
    """The error text keeps Hermes's shape, so infra rules and Hermes's tools read it."""
    task = running()
    obs = Observation(Verdict.ZOMBIE, "zombie", signal=9)
    [action] = decide(snap(task, obs={task.task_id: obs}), S, NOW)
    assert action.plan["error"].startswith("pid 1001 killed by signal 9")


def test_running_rows_with_no_claim_or_no_pid_are_reclaimed_after_the_grace():
    """No claim, or a claim whose worker PID never arrived, is reclaimed without a failure."""
    no_claim = running("t_00000001", claim_lock=None, worker_pid=None)
    no_pid = running("t_00000002", worker_pid=None)
    actions = decide(snap(no_claim, no_pid, obs={}), S, NOW)
    assert [(a.kind, a.reason) for a in actions] == [
        (ActionKind.RECLAIM, "no_claim"),
        (ActionKind.RECLAIM, "no_pid"),
    ]
    assert all(a.plan["outcome"] == "reclaimed" and a.plan["failures"] == 0 for a in actions)
    young = running("t_00000003", worker_pid=None, age=3)
    assert decide(snap(young, obs={}), S, NOW) == []


def test_a_remote_claim_without_a_pid_is_left_to_its_own_host():
    """A remote dispatcher may still be spawning; only its host can tell."""
    task = running(claim_lock="node-b:1", worker_pid=None)
    assert decide(snap(task, obs={}), S, NOW) == []


# -- the blast-radius guard -----------------------------------------------------------


def _many(dead: int, alive: int) -> HealSnapshot:
    tasks = [running(f"t_{i:08x}") for i in range(1, dead + alive + 1)]
    obs = {t.task_id: (GONE if i < dead else ALIVE) for i, t in enumerate(tasks)}
    return snap(*tasks, obs=obs)


def test_the_guard_holds_every_reap_when_too_many_workers_look_dead():
    """Six of ten looking dead is a namespace problem, not six crashes."""
    actions = decide(_many(6, 4), S, NOW)
    assert len(actions) == 6
    assert all(a.held and a.held.startswith("guard") for a in actions)


def test_the_guard_needs_a_minimum_count_before_it_trips():
    """Four of four dead is below guard_min_tasks: they are reaped."""
    actions = decide(_many(4, 0), S, NOW)
    assert len(actions) == 4 and not any(a.held for a in actions)


def test_the_guard_allows_up_to_its_share():
    """Exactly half dead is not more than guard_max_share."""
    assert not any(a.held for a in decide(_many(5, 5), S, NOW))


def test_settings_override_the_guard():
    """guard_max_share = 1 switches it off."""
    assert not any(a.held for a in decide(_many(10, 0), replace_s(guard_max_share=1.0), NOW))


# -- resetting infrastructure crash loops ---------------------------------------------------


INFRA = "pid 12 killed by signal 9"
TASK = "pid 12 exited with code 1"


def test_an_infrastructure_crash_loop_is_reset_after_its_backoff():
    """Two SIGKILLs that tripped the breaker: reset once the backoff has passed."""
    task = gave_up(INFRA, "pid 13 exited with code 137", at=NOW - 60)
    [action] = decide(snap(gave_up=[task]), S, NOW)
    assert action.kind is ActionKind.RESET
    assert action.plan["reset_number"] == 1
    assert action.expect == {"consecutive_failures": 2, "gave_up_event_id": 99}
    assert [f["rule"] for f in action.evidence["failed_runs"]] == ["sigkill", "exit-137"]


def test_no_reset_before_the_backoff_has_passed():
    """The first backoff is at least 75 % of reset_backoff_base_seconds."""
    task = gave_up(INFRA, at=NOW - 30)
    assert decide(snap(gave_up=[task]), S, NOW) == []


def test_task_caused_or_mixed_failures_are_never_reset():
    """One task-caused failure among the recent ones keeps the task blocked."""
    assert decide(snap(gave_up=[gave_up(TASK, TASK)]), S, NOW) == []
    assert decide(snap(gave_up=[gave_up(INFRA, TASK)]), S, NOW) == []
    trace = "Traceback (most recent call last): ... Connection refused"
    assert decide(snap(gave_up=[gave_up(trace)]), S, NOW) == []


def test_the_backoff_grows_with_each_reset_in_the_window():
    """The second reset waits about twice as long as the first."""
    one_reset = (int(NOW - 7200),)
    task = gave_up(INFRA, at=NOW - 80, resets=one_reset)
    assert decide(snap(gave_up=[task]), S, NOW) == []  # the delay is 90..120 s
    assert len(decide(snap(gave_up=[task]), S, NOW + 41)) == 1


def test_too_many_resets_in_the_window_escalate_once():
    """After max_resets in the window the task stays blocked and is escalated, once."""
    resets = tuple(int(NOW - 600 * i) for i in range(1, 4))
    [action] = decide(snap(gave_up=[gave_up(INFRA, resets=resets)]), S, NOW)
    assert action.kind is ActionKind.ESCALATE and action.reason == "reset_limit"
    assert decide(snap(gave_up=[gave_up(INFRA, resets=resets, escalated=True)]), S, NOW) == []


def test_resets_outside_the_window_do_not_count():
    """Old resets age out of reset_window_seconds."""
    old = tuple(int(NOW - 90_000 - i) for i in range(3))
    [action] = decide(snap(gave_up=[gave_up(INFRA, resets=old)]), S, NOW)
    assert action.kind is ActionKind.RESET


def test_backoff_is_capped_deterministic_and_jittered_downwards():
    """Same key, same delay; never above the cap; never below 75 % of it."""
    assert compute_backoff(0, 60, 3600, "a") == compute_backoff(0, 60, 3600, "a")
    for attempt in range(12):
        delay = compute_backoff(attempt, 60, 3600, f"k{attempt}")
        ceiling = min(3600, 60 * 2**attempt)
        assert 0.75 * ceiling <= delay <= ceiling
    assert compute_backoff(500, 60, 3600, "x") <= 3600


def replace_s(**kw: object) -> AutoHealSettings:
    return S.model_copy(update=kw)


def test_decide_does_not_depend_on_order_of_running_tasks():
    """The same board read in another order gives the same actions."""
    tasks = [running(f"t_{i:08x}") for i in range(1, 4)]
    a = {x.task_id for x in decide(snap(*tasks), S, NOW)}
    b = {x.task_id for x in decide(snap(*reversed(tasks)), S, NOW)}
    assert a == b


def test_replace_helper_keeps_types():
    """Sanity: settings copies keep validation types."""
    assert replace_s(start_grace_seconds=0).start_grace_seconds == 0
    assert replace(running(), worker_pid=5).worker_pid == 5


# -- clean exits without a terminal call (protocol violations) ------------------------------

CLEAN = Observation(Verdict.ZOMBIE, "zombie: exited with code 0", exit_code=0)


def test_a_clean_exit_is_a_protocol_violation_retried_without_counting_a_failure():
    """Below Hermes's bound of 3 the task goes back to ready and the counter stays."""
    task = running(consecutive_failures=1)
    [action] = decide(snap(task, obs={task.task_id: CLEAN}), S, NOW)
    assert action.plan["event_kind"] == "protocol_violation"
    assert action.plan["new_status"] == "ready" and action.plan["failures"] == 1
    assert action.plan["metadata"]["protocol_violation"] is True
    assert "protocol violation" in action.plan["error"]


def test_the_third_violation_in_a_row_trips_the_breaker_and_counts():
    """At the bound: blocked, gave_up, and the failure counted as Hermes's forced trip does."""
    task = running(consecutive_failures=0)
    s = snap(task, obs={task.task_id: CLEAN})
    s = replace(s, violation_streaks={task.task_id: 2})
    [action] = decide(s, S, NOW)
    assert action.plan["trip"] and action.plan["new_status"] == "blocked"
    assert action.plan["failures"] == 1 and action.plan["limit_source"] == "protocol_violation"
    assert action.plan["event_payload"]["protocol_violations"] == 3


def test_a_tasks_max_retries_bounds_violations_too():
    """max_retries=1: the first clean exit trips."""
    task = running(max_retries=1)
    [action] = decide(snap(task, obs={task.task_id: CLEAN}), S, NOW)
    assert action.plan["trip"] and action.plan["limit_source"] == "task"


# -- the lane an attempt came from (boards with a review lane) ------------------------


def review_lane(*tasks: RunningTask, obs: dict[str, Observation] | None = None) -> HealSnapshot:
    """Every task's attempt was a reviewer's, claimed from `review`."""
    base = snap(*tasks, obs=obs)
    return replace(base, lanes={t.task_id: "review" for t in tasks})


def test_a_reviewers_dead_worker_goes_back_to_review_not_to_ready():
    """Sending it to ready would make the dispatcher run the implementer again."""
    [action] = decide(review_lane(running()), S, NOW)
    assert action.kind is ActionKind.REAP
    assert action.plan["new_status"] == "review"
    assert action.plan["outcome"] == "crashed" and action.plan["failures"] == 1
    assert action.evidence["lane"] == "review"


def test_a_reviewers_rate_limited_or_clean_exit_also_returns_to_review():
    """Exit 75 and a protocol violation requeue into the lane the attempt came from."""
    for obs in (
        Observation(Verdict.ZOMBIE, "zombie", exit_code=75),
        Observation(Verdict.ZOMBIE, "zombie", exit_code=0),
    ):
        task = running()
        [action] = decide(review_lane(task, obs={task.task_id: obs}), S, NOW)
        assert action.plan["new_status"] == "review"


def test_a_reviewers_row_without_a_pid_is_reclaimed_into_review():
    """A reclaim returns the task to its lane as well."""
    [action] = decide(review_lane(running(worker_pid=None), obs={}), S, NOW)
    assert (action.kind, action.plan["new_status"]) == (ActionKind.RECLAIM, "review")


def test_the_breaker_still_blocks_a_reviewers_task_at_the_limit():
    """Failure counting is the same in every lane: at the limit the task is blocked."""
    [action] = decide(review_lane(running(consecutive_failures=1)), S, NOW)
    assert action.plan["new_status"] == "blocked" and action.plan["trip"]


def test_tasks_without_a_recorded_lane_go_back_to_ready_as_today():
    """Only the tasks the snapshot names as reviewers' go to review."""
    first, second = running("t_00000001"), running("t_00000002")
    base = snap(first, second)
    actions = decide(replace(base, lanes={"t_00000002": "review"}), S, NOW)
    assert {a.task_id: a.plan["new_status"] for a in actions} == {
        "t_00000001": "ready",
        "t_00000002": "review",
    }


def test_a_reviewers_infrastructure_crash_loop_is_reset_into_review():
    """The reset carries the lane of the attempt that gave up."""
    task = replace(gave_up(INFRA, "pid 13 exited with code 137", at=NOW - 60), lane="review")
    [action] = decide(snap(gave_up=[task]), S, NOW)
    assert action.kind is ActionKind.RESET
    assert action.plan["lane"] == "review" and action.evidence["lane"] == "review"


# -- deadlines: when the board next needs a pass without any new event ---------------


def test_the_next_deadline_is_the_earliest_end_of_a_start_grace():
    """Workers inside their grace are judged when it ends; older ones are no deadline."""
    young = running("t_00000001", age=3)
    younger = running("t_00000002", age=1)
    old = running("t_00000003", age=60)
    snapshot = snap(young, younger, old, obs={})
    assert next_deadline(snapshot, S, NOW) == NOW - 3 + S.start_grace_seconds


def test_remote_workers_set_no_deadline_but_unclaimed_rows_do():
    """A remote claim is never judged here; an unclaimed young row is reclaimed on time."""
    remote = running("t_00000001", age=1, claim_lock="node-b:1")
    assert next_deadline(snap(remote, obs={}), S, NOW) is None
    unclaimed = running("t_00000002", age=1, claim_lock=None, worker_pid=None)
    assert next_deadline(snap(unclaimed, obs={}), S, NOW) == NOW - 1 + S.start_grace_seconds


def test_a_crash_loops_backoff_end_is_a_deadline_until_the_resets_run_out():
    """Due when its backoff ends; none once max_resets is reached (escalation is now)."""
    task = gave_up(INFRA, at=NOW - 1)
    due = next_deadline(snap(gave_up=[task]), S, NOW)
    assert due is not None and NOW < due <= NOW - 1 + S.reset_backoff_base_seconds
    spent = gave_up(INFRA, at=NOW - 1, resets=tuple(int(NOW) - 10 for _ in range(S.max_resets)))
    assert next_deadline(snap(gave_up=[spent]), S, NOW) is None


def test_nothing_waiting_is_no_deadline():
    """An idle board sleeps until its interval."""
    assert next_deadline(snap(), S, NOW) is None


def test_a_clean_exit_right_after_a_rate_limit_is_requeued_as_a_rate_limit():
    """Exit 0 after a 429 is a quota wall: no protocol violation, no failure counted."""
    task = running(consecutive_failures=1)
    obs = Observation(Verdict.ZOMBIE, "zombie", exit_code=0)
    said = ("rate_limited", "openai.RateLimitError: Error code: 429")
    base = snap(task, obs={task.task_id: obs})
    [action] = decide(replace(base, provider_errors={task.task_id: said}), S, NOW)
    assert (action.plan["outcome"], action.plan["event_kind"]) == ("rate_limited", "rate_limited")
    assert (action.plan["failures"], action.plan["new_status"], action.plan["trip"]) == (
        1,
        "ready",
        False,
    )
    assert "429" in action.plan["error"] and "protocol_violation" not in action.plan["metadata"]
    assert action.evidence["provider_error"] == {"signal": "rate_limited", "line": said[1]}


def test_a_clean_exit_right_after_a_refused_key_is_a_credential_failure_not_counted():
    """Exit 0 after a 401: a crash in the provider's words, for distress to route."""
    task = running(consecutive_failures=1)
    obs = Observation(Verdict.ZOMBIE, "zombie", exit_code=0)
    said = ("credential_failure", "AuthenticationError: 401 Unauthorized")
    base = snap(task, obs={task.task_id: obs})
    [action] = decide(replace(base, provider_errors={task.task_id: said}), S, NOW)
    assert (action.plan["outcome"], action.plan["event_kind"]) == ("crashed", "crashed")
    assert (action.plan["failures"], action.plan["trip"]) == (1, False)
    assert "401 Unauthorized" in action.plan["error"]
    assert action.plan["event_payload"]["provider_error"] == "credential_failure"
