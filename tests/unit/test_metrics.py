"""The metrics listener and the scrape-time collector, each on a fresh registry."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from watchers.boards import unique_slugs
from watchers.distress.cooldown import Cooldown
from watchers.metrics import WATCHER_ACTIONS, Metrics, _later
from watchers.model import Action, ActionKind, Outcome, Result, TickReport
from watchers.settings import Settings, load_settings
from watchers.store.schema import create_board


class Watched:
    """The daemon's side of the collector, as plain data."""

    def __init__(self, boards: list[Path] | None = None) -> None:
        self.settings: Settings = load_settings()
        self.boards = boards or []
        self.last: dict[tuple[str, str], float] = {}

    def successes(self) -> dict[tuple[str, str], float]:
        return dict(self.last)

    def scheduled(self) -> dict[tuple[str, str], float]:
        return {("auto-heal", "default"): 0.0}

    def slug_of(self, path: Path) -> str:
        return unique_slugs(self.boards)[path]


def outcome(kind: ActionKind, result: Result, watcher: str = "auto-heal") -> Outcome:
    action = Action(
        watcher=watcher,
        board="default",
        task_id="t_1",
        kind=kind,
        reason="worker_gone",
        evidence={},
        expect={},
    )
    return Outcome(action, result)


def report(*outcomes: Outcome, error: str | None = None, transient: bool = False) -> TickReport:
    return TickReport("auto-heal", "default", time.time(), 0.02, outcomes, (), error, transient)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(Watched())


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_children_exist_at_zero_before_anything_happens(metrics):
    """Every (watcher, action) pair that can happen, and only those, and every watcher x
    outcome, is exported at 0."""
    for watcher in ("auto-heal", "distress", "budget"):
        for kind in ActionKind:
            possible = kind in WATCHER_ACTIONS[watcher]
            value = sample(metrics, "watchers_actions_total", watcher=watcher, action=kind)
            assert value == (0 if possible else None), (watcher, kind)
        for outcome_ in ("ok", "error", "skipped", "unchanged"):
            assert sample(metrics, "watchers_ticks_total", watcher=watcher, outcome=outcome_) == 0
        assert sample(metrics, "watchers_tick_duration_seconds_count", watcher=watcher) == 0
    metrics.prepare(["default"])
    assert sample(metrics, "watchers_guard_trips_total", board="default") == 0
    assert metrics.registry.get_sample_value("watchers_build_info", {"version": _version()}) == 1


def _version() -> str:
    from watchers import __version__

    return __version__


def test_only_applied_actions_are_counted(metrics):
    """Dry runs, lost races and failed writes change nothing, so they count nothing."""
    metrics.observe(
        report(
            outcome(ActionKind.REAP, Result.APPLIED),
            outcome(ActionKind.REAP, Result.RACE_LOST),
            outcome(ActionKind.REAP, Result.FAILED),
            outcome(ActionKind.RECLAIM, Result.DRY_RUN),
        )
    )
    assert sample(metrics, "watchers_actions_total", watcher="auto-heal", action="reap") == 1
    assert sample(metrics, "watchers_actions_total", watcher="auto-heal", action="reclaim") == 0
    assert sample(metrics, "watchers_ticks_total", watcher="auto-heal", outcome="ok") == 1
    assert sample(metrics, "watchers_tick_duration_seconds_count", watcher="auto-heal") == 1
    assert sample(metrics, "watchers_tick_duration_seconds_sum", watcher="auto-heal") == 0.02


def test_a_tick_with_held_actions_is_one_guard_trip(metrics):
    """Guard trips count ticks, not the actions held back."""
    held = outcome(ActionKind.REAP, Result.HELD)
    metrics.observe(report(held, held, held))
    metrics.observe(report())
    assert sample(metrics, "watchers_guard_trips_total", board="default") == 1
    assert sample(metrics, "watchers_actions_total", watcher="auto-heal", action="reap") == 0


def test_tick_outcomes(metrics):
    """A busy board skips a tick; anything else that fails is an error."""
    metrics.observe(report(error="database is locked", transient=True))
    metrics.observe(report(error="not a Hermes board"))
    metrics.observe(report(error="busy again", transient=True))
    assert sample(metrics, "watchers_ticks_total", watcher="auto-heal", outcome="skipped") == 2
    assert sample(metrics, "watchers_ticks_total", watcher="auto-heal", outcome="error") == 1
    assert sample(metrics, "watchers_ticks_total", watcher="auto-heal", outcome="ok") == 0


def test_registries_are_isolated():
    """Two daemons (or tests) never share a counter."""
    a, b = Metrics(Watched()), Metrics(Watched())
    a.observe(report(outcome(ActionKind.REAP, Result.APPLIED)))
    assert sample(a, "watchers_actions_total", watcher="auto-heal", action="reap") == 1
    assert sample(b, "watchers_actions_total", watcher="auto-heal", action="reap") == 0


def test_the_collector_reads_a_real_board_and_reports_last_success(tmp_path):
    """Tasks by status come from the board; a never-successful job reads 0."""
    board = create_board(tmp_path / "kanban.db")
    conn = sqlite3.connect(str(board))
    conn.execute(
        "INSERT INTO tasks (id, title, status, created_at) VALUES ('t_a', 'a', 'ready', 1)"
    )
    conn.commit()
    conn.close()
    watched = Watched([board])
    m = Metrics(watched)
    try:
        assert sample(m, "watchers_board_tasks", board="default", status="ready") == 1
        assert sample(m, "watchers_board_tasks", board="default", status="running") == 0
        assert sample(m, "watchers_running_workers", board="default", verdict="gone") == 0
        assert (
            sample(m, "watchers_open_distress_cards", board="default", blocker_type="dependency")
            == 0
        )
        assert (
            sample(
                m, "watchers_last_success_timestamp_seconds", watcher="auto-heal", board="default"
            )
            == 0
        )
        watched.last[("auto-heal", "default")] = 1234.5
        assert (
            sample(
                m, "watchers_last_success_timestamp_seconds", watcher="auto-heal", board="default"
            )
            == 1234.5
        )
    finally:
        m.close()


def test_a_provider_cooling_on_any_board_is_cooling():
    """Across boards, the cooldown that keeps a provider out the longest wins."""
    now = 1000.0
    over = Cooldown("p", 900.0, 1, "old")
    short = Cooldown("p", 1100.0, 1, "x")
    long = Cooldown("p", 1500.0, 2, "y")
    assert _later(None, None, now) is None
    assert _later(over, None, now) is over
    assert _later(over, short, now) is short
    assert _later(long, short, now) is long
    assert _later(short, over, now) is short


def test_cards_are_counted_by_watcher_and_reason_and_exist_at_zero(metrics):
    """A looping worker's card and a parked task's card each have a series of their own."""
    metrics.prepare(["default"])
    for watcher, reason in (("budget", "no_progress"), ("distress", "parked")):
        assert sample(metrics, "watchers_cards_total", watcher=watcher, reason=reason) == 0
    card = Action(
        watcher="budget",
        board="default",
        task_id="t_1",
        kind=ActionKind.CARD,
        reason="no_progress",
        evidence={},
        expect={},
    )
    lost = Outcome(card, Result.RACE_LOST)
    metrics.observe(
        TickReport(
            "budget", "default", time.time(), 0.01, (Outcome(card, Result.APPLIED), lost), ()
        )
    )
    assert sample(metrics, "watchers_cards_total", watcher="budget", reason="no_progress") == 1
    assert sample(metrics, "watchers_actions_total", watcher="budget", action="card") == 1
