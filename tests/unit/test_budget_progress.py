"""Progress of a running attempt: events, heartbeat notes, the workspace. Pure (a fake
clock and a fake workspace reader)."""

from __future__ import annotations

from watchers.budget.decide import BudgetSnapshot, decide, next_deadline
from watchers.budget.progress import ProgressTracker, Stall
from watchers.model import RunningTask
from watchers.settings import Settings
from watchers.store.board import EventRow

T0 = 1_800_000_000.0
S = Settings()


def attempt(task_id: str = "t_0000aaaa", run_id: int = 7, started: float = T0) -> RunningTask:
    return RunningTask(
        task_id=task_id,
        assignee="coder",
        claim_lock="host:1",
        claim_expires=None,
        worker_pid=100,
        current_run_id=run_id,
        attempt_started_at=int(started),
        last_heartbeat_at=None,
        consecutive_failures=0,
        max_retries=None,
    )


def ev(kind: str, at: float, payload: dict | None = None, task_id="t_0000aaaa", run_id=7):
    return EventRow(int(at), task_id, kind, int(at), payload or {}, "coder", None, None, run_id)


def limit(_task_id: str) -> float:
    return 1800.0


class Workspace:
    """A fake workspace reader: the digest it returns, and how often it was read."""

    def __init__(self, digest: str | None = "abc") -> None:
        self.digest, self.reads = digest, 0

    def __call__(self, path: str | None) -> tuple[str, str] | None:
        self.reads += 1
        return None if self.digest is None else (self.digest, f"HEAD {self.digest}")


def tracked(ws: Workspace, started: float = T0, path: str | None = "/w") -> ProgressTracker:
    tracker = ProgressTracker()
    tracker.sync([attempt(started=started)], started)
    tracker.baseline({t: path for t in tracker.needing_baseline()}, ws)
    return tracker


def test_heartbeats_alone_are_no_progress_and_a_stall_is_found_at_the_limit():
    """Beats without notes keep nothing moving; 1800 s later it is a stall, not before."""
    ws = Workspace()
    tracker = tracked(ws)
    for i in range(30):
        tracker.event(ev("heartbeat", T0 + 60 * i))
    assert tracker.stalls(limit, ws, T0 + 1799) == {}
    assert tracker.next_due(limit, T0 + 10) == T0 + 1800
    [(_task_id, stall)] = tracker.stalls(limit, ws, T0 + 1800).items()
    assert stall == Stall(
        since=T0,
        beats=30,
        watched=("events", "heartbeat notes", "workspace (git HEAD, diff --stat, untracked files)"),
        last_progress="the attempt's start",
        workspace="HEAD abc",
    )


def test_a_worker_event_or_a_new_note_is_progress_but_the_daemons_own_events_are_not():
    """A comment, then a new note, each restart the clock; our budget_warning does not."""
    ws = Workspace()
    tracker = tracked(ws)
    tracker.event(ev("commented", T0 + 600))
    tracker.event(ev("heartbeat", T0 + 900, {"note": "step 2"}))
    tracker.event(ev("heartbeat", T0 + 950, {"note": "step 2"}))  # the same note again
    tracker.event(ev("budget_warning", T0 + 1000, {"by": "watchers"}))
    tracker.event(ev("commented", T0 + 1000, task_id="t_other"))
    assert tracker.stalls(limit, ws, T0 + 2600) == {}
    [stall] = tracker.stalls(limit, ws, T0 + 2700).values()
    assert (stall.since, stall.last_progress, stall.beats) == (
        T0 + 900,
        "a heartbeat with a new note",
        1,
    )


def test_a_changed_workspace_is_progress_found_when_due_and_read_again_only_every_5_min():
    """The digest is compared at the limit; a stalled one is not re-read on every pass."""
    ws = Workspace()
    tracker = tracked(ws)
    assert ws.reads == 1  # the baseline
    ws.digest = "def"
    assert tracker.stalls(limit, ws, T0 + 1800) == {}  # moved: found now
    assert tracker.next_due(limit, T0 + 1800) == T0 + 3600
    assert tracker.stalls(limit, ws, T0 + 3600) != {}
    reads = ws.reads
    assert tracker.stalls(limit, ws, T0 + 3660) != {}
    assert ws.reads == reads  # within 5 min of the last reading
    tracker.stalls(limit, ws, T0 + 3900)
    assert ws.reads == reads + 1


def test_a_plain_directory_counts_events_only_and_attempts_running_at_the_first_look_start_then():
    """Not a repository: no workspace watched; an attempt older than the daemon is timed
    from the first look (what came before is unknown)."""
    ws = Workspace(digest=None)
    tracker = tracked(ws, started=T0)
    tracker.sync([attempt(started=T0)], T0)
    [stall] = tracker.stalls(limit, ws, T0 + 1800).values()
    assert stall.watched == ("events", "heartbeat notes") and stall.workspace is None
    late = ProgressTracker()
    late.sync([attempt(started=T0 - 7200)], T0)
    assert late.next_due(limit, T0) == T0 + 1800


def test_a_stall_is_one_iteration_budget_card_per_attempt_whose_needs_say_it_loops():
    """Evidence: what was watched and for how long; Needs: looping, a split; one per attempt."""
    from tests.unit.test_budget import task
    from watchers.budget.budgets import BodyBudgets, resolve

    unlimited = resolve(
        max_runtime_seconds=None,
        goal_max_turns=None,
        max_retries=None,
        body=BodyBudgets(),
        profile="coder",
        profile_time=None,
        profile_iterations=None,
        profile_attempts=None,
        global_time=None,
        global_iterations=None,
        global_attempts=None,
    )
    stall = Stall(T0, 40, ("events", "heartbeat notes"), "the attempt's start", None)
    t = task(
        attempt_started_at=T0 - 100,
        budgets=unlimited,
        stall=stall,
        stall_limit=(1800.0, "global"),
    )
    now = T0 + 1900
    [card] = decide(BudgetSnapshot("default", (t,)), S, now)
    assert (card.reason, card.plan["blocker_type"]) == ("no_progress", "iteration_budget")
    assert card.evidence["watched"] == ["events", "heartbeat notes"]
    assert card.evidence["no_progress_seconds"] == 1900
    assert "looks like it is looping" in card.plan["body"] and "Split it" in card.plan["body"]
    from watchers.cards import CardState

    answered = {(t.source.task_id, "iteration_budget"): CardState(None, T0 - 50)}
    assert decide(BudgetSnapshot("default", (t,), answered), S, now) == []
    assert next_deadline(BudgetSnapshot("default", (), progress_until=T0 + 5), S, T0) == T0 + 5


def test_no_progress_seconds_comes_from_the_profile_else_the_global_setting():
    """Per profile, like the other budgets; unset everywhere: not watched."""
    from watchers.budget.progress import no_progress_limit
    from watchers.settings import ProfileSettings

    s = S.model_copy(update={"profiles": {"coder": ProfileSettings(no_progress_seconds=600)}})
    assert no_progress_limit("coder", s) == (600, "profile:coder")
    assert no_progress_limit("writer", s) == (1800.0, "global")
    off = s.model_copy(update={"budget": s.budget.model_copy(update={"no_progress_seconds": None})})
    assert no_progress_limit("writer", off) is None
