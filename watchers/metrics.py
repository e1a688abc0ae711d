"""Prometheus metrics: one registry per daemon, fed two ways.

Counters and the tick histogram are fed by a daemon listener from each TickReport.
What the boards look like (tasks by status, running workers by verdict, open distress
cards, provider cooldowns, the dispatcher's last claim and the oldest dispatchable ready
task) and the last-success timestamps are computed at scrape time
by a custom collector. A scrape never writes: it reads each board through a read-only
connection with a short busy timeout, reuses a per-board snapshot for a few seconds,
and when a board is locked it reports the last snapshot it has (or zeros).

Label values are few and known in advance (watchers, actions, outcomes, statuses,
verdicts, blocker types, board slugs, providers): never a task id. Every known child is
created at 0 so each series exists before anything happens.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from watchers import WATCHER_NAMES, __version__
from watchers.cards import BLOCKER_TYPES, CardIndex
from watchers.dispatcher.observe import DispatchState, observe
from watchers.distress.cooldown import Cooldown
from watchers.distress.watcher import Distress
from watchers.errors import StoreBusy, WatchersError
from watchers.hermes.dispatching import DispatchRulesReader
from watchers.hermes.profiles import hermes_root
from watchers.model import ActionKind, Result, TaskStatus, TickReport
from watchers.probe import ProcessProbe
from watchers.settings import Settings
from watchers.status import WORKER_VERDICTS, worker_verdicts
from watchers.store.board import BoardStore

log = structlog.get_logger("watchers.metrics")

WATCHER_ACTIONS: dict[str, tuple[ActionKind, ...]] = {
    "auto-heal": (ActionKind.REAP, ActionKind.RECLAIM, ActionKind.RESET, ActionKind.ESCALATE),
    "distress": (ActionKind.REASSIGN, ActionKind.CARD),
    "budget": (ActionKind.CARD, ActionKind.WARN, ActionKind.NOTE),
}
"""The (watcher, action) pairs that can happen: the only `watchers_actions_total` series."""
CARD_REASONS: dict[str, tuple[str, ...]] = {
    "distress": ("rate_limited", "credential_failure", "stuck", "escalation", "parked"),
    "budget": (
        "time_budget",
        "iteration_budget",
        "attempt_budget",
        "repeated_failure",
        "needs_human",
        "no_progress",
    ),
}
"""Why a watcher writes a card: the `watchers_cards_total` series (reasons are the code's
own names, never text from a board)."""
TICK_OUTCOMES = ("ok", "error", "skipped", "unchanged")
"""ok: the tick ran; error: it failed; skipped: the board was busy, nothing was done;
unchanged: the board had not changed since the last pass and nothing was due (no scans)."""
OTHER_BLOCKER = "other"  # a card title with a blocker type this release does not know
SNAPSHOT_MAX_AGE_SECONDS = 5.0
SCRAPE_BUSY_TIMEOUT_SECONDS = 0.25
TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CLOSED_STATUSES = frozenset({TaskStatus.DONE.value, TaskStatus.ARCHIVED.value})


class Watched(Protocol):
    """What the collector reads from the daemon (thread-safe copies)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def boards(self) -> list[Path]: ...

    def slug_of(self, path: Path) -> str: ...

    def successes(self) -> dict[tuple[str, str], float]:
        """Last successful tick start (epoch seconds) by (watcher, board slug)."""

    def scheduled(self) -> dict[tuple[str, str], float]:
        """Every scheduled (watcher, board slug), with when it was scheduled."""


def tick_outcome(report: TickReport) -> str:
    if report.unchanged:
        return "unchanged"
    if report.ok:
        return "ok"
    return "skipped" if report.transient else "error"


@dataclass(slots=True)
class BoardSnapshot:
    tasks: dict[str, int] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)
    cards: dict[str, int] = field(default_factory=dict)
    providers: dict[str, Cooldown | None] = field(default_factory=dict)
    taken: float = 0.0  # monotonic
    dispatch: DispatchState | None = None


READ_ERRORS = ("busy", "unusable", "unexpected")
"""Why a board's gauges are stale or missing: locked past the scrape's short timeout;
missing, unreadable or not a board; anything else (a bug, or a row no parser expected)."""


@dataclass(slots=True)
class _BoardReader:
    """Per-board memory kept between scrapes, so each refresh reads only what is new."""

    distress: Distress
    cards: CardIndex = field(default_factory=CardIndex)
    snapshot: BoardSnapshot | None = None
    identity: tuple[int, int] | None = None  # of the file the cards were indexed from
    error: str | None = None  # why the last read failed (one of READ_ERRORS), None if it did not


class BoardCollector(Collector):
    """Scrape-time gauges over the daemon's boards."""

    def __init__(
        self,
        watched: Watched,
        *,
        max_age: float = SNAPSHOT_MAX_AGE_SECONDS,
        busy_timeout: float = SCRAPE_BUSY_TIMEOUT_SECONDS,
    ) -> None:
        self._watched = watched
        self.max_age = max_age  # seconds a board's snapshot is reused between scrapes
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._probe: ProcessProbe | None = None
        self._readers: dict[Path, _BoardReader] = {}
        self._rules: DispatchRulesReader | None = None
        self.errors: dict[str, str | None] = {}  # board slug -> why its last read failed

    def close(self) -> None:
        with self._lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None
            self._readers.clear()

    # -- reading the boards ----------------------------------------------------------

    def snapshots(self) -> dict[str, BoardSnapshot]:
        """A snapshot per board slug, refreshed when older than max_age (one scrape at a time)."""
        settings = self._watched.settings
        paths = self._watched.boards
        out: dict[str, BoardSnapshot] = {}
        errors: dict[str, str | None] = {}
        with self._lock:
            for gone in set(self._readers) - set(paths):
                del self._readers[gone]
            if self._probe is None:
                self._probe = ProcessProbe(settings.hostname)
            for path in paths:
                reader = self._readers.get(path)
                if reader is None:
                    reader = self._readers[path] = _BoardReader(Distress(self._probe))
                fresh = reader.snapshot is not None and (
                    time.monotonic() - reader.snapshot.taken < self.max_age
                )
                if not fresh:
                    reader.error = None
                    try:
                        reader.snapshot = self._read(path, reader, self._probe, settings)
                    except Exception as exc:  # one board's trouble never fails the scrape
                        reader.error = _read_error(exc)
                        (log.error if reader.error == "unexpected" else log.info)(
                            "metrics: board not read",
                            board=str(path),
                            error=f"{type(exc).__name__}: {exc}"[:300],
                        )
                        if reader.error == "unexpected" or reader.snapshot is None:
                            # its cursors may have moved halfway: start it over, keeping
                            # its last snapshot (stale) if it had one
                            fresh_reader = _BoardReader(Distress(self._probe))
                            fresh_reader.snapshot = reader.snapshot
                            fresh_reader.error = reader.error
                            self._readers[path] = reader = fresh_reader
                errors[self._watched.slug_of(path)] = reader.error
                if reader.snapshot is not None:
                    out[self._watched.slug_of(path)] = reader.snapshot
            self.errors = errors
        return out

    def _read(
        self, path: Path, reader: _BoardReader, probe: ProcessProbe, settings: Settings
    ) -> BoardSnapshot:
        busy = min(self._busy_timeout, settings.store.busy_timeout_seconds)
        store = BoardStore.open(path, busy_timeout=busy, readonly=True)
        try:
            if reader.identity != store.identity:  # another file at this path: index anew
                reader.cards, reader.identity = CardIndex(), store.identity
            now = time.time()
            counts, _ = store.status_counts()
            running, _ = store.running_tasks()
            workers: dict[str, int] = {}
            scope = f"metrics:{path}"
            for verdict, _detail in worker_verdicts(running, probe, settings, scope).values():
                workers[verdict] = workers.get(verdict, 0) + 1
            reader.cards.refresh(store)
            cards: dict[str, int] = {}
            for card in reader.cards.cards.values():
                if card.status in CLOSED_STATUSES:
                    continue
                blocker = card.blocker if card.blocker in BLOCKER_TYPES else OTHER_BLOCKER
                cards[blocker] = cards.get(blocker, 0) + 1
            providers = reader.distress.provider_states(store, settings, now)
            # The dispatcher's gauges come from the scrape's own read, not from the check's
            # last pass: they exist with the check disabled, and they are as fresh as the
            # other board gauges. The read is a few index seeks (the newest runs, ready and
            # running tasks by status, at most a few hundred tasks' newest event).
            dispatch, _ = observe(store, self._dispatch_rules(settings).read())
        finally:
            store.close()
        return BoardSnapshot(counts, workers, cards, providers, time.monotonic(), dispatch)

    def _dispatch_rules(self, settings: Settings) -> DispatchRulesReader:
        root = hermes_root(settings.distress.hermes_home)
        if self._rules is None or self._rules.root != root:
            self._rules = DispatchRulesReader(root)
        return self._rules

    # -- the families ----------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return []  # the families depend on the boards; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        successes = self._watched.successes()
        last = GaugeMetricFamily(
            "watchers_last_success_timestamp_seconds",
            "When each watcher's last successful tick on each board started (0: never).",
            labels=["watcher", "board"],
        )
        for watcher, board in sorted(self._watched.scheduled()):
            last.add_metric([watcher, board], successes.get((watcher, board), 0.0))
        yield last

        snapshots = self.snapshots()
        tasks = GaugeMetricFamily(
            "watchers_board_tasks", "Tasks on each board by status.", labels=["board", "status"]
        )
        workers = GaugeMetricFamily(
            "watchers_running_workers",
            "Running tasks on each board by their worker's verdict.",
            labels=["board", "verdict"],
        )
        cards = GaugeMetricFamily(
            "watchers_open_distress_cards",
            "Open [BLOCKED] cards on each board by blocker type.",
            labels=["board", "blocker_type"],
        )
        merged: dict[str, Cooldown | None] = {}
        for board, snap in sorted(snapshots.items()):
            for status in TaskStatus:
                tasks.add_metric([board, status.value], snap.tasks.get(status.value, 0))
            for verdict in WORKER_VERDICTS:
                workers.add_metric([board, verdict], snap.workers.get(verdict, 0))
            for blocker in _with_extra(BLOCKER_TYPES, snap.cards):
                cards.add_metric([board, blocker], snap.cards.get(blocker, 0))
            for provider, c in snap.providers.items():
                merged[provider] = _later(merged.get(provider), c, now)
        yield tasks
        yield workers
        yield cards

        last_claim = GaugeMetricFamily(
            "watchers_dispatcher_last_claim_timestamp_seconds",
            "When Hermes's dispatcher last claimed a task on each board (NaN: never).",
            labels=["board"],
        )
        oldest = GaugeMetricFamily(
            "watchers_ready_oldest_age_seconds",
            "How long the longest-waiting dispatchable ready task on each board has waited "
            "(0: none waits).",
            labels=["board"],
        )
        for board, snap in sorted(snapshots.items()):
            d = snap.dispatch
            if d is None:
                continue
            claimed = math.nan if d.last_claim_at is None else float(d.last_claim_at)
            last_claim.add_metric([board], claimed)
            oldest.add_metric([board], d.oldest_age(now))
        yield last_claim
        yield oldest

        errors = GaugeMetricFamily(
            "watchers_board_read_error",
            "1 while a board's gauges are stale or missing because the scrape could not read "
            "it, by reason (busy, unusable, unexpected); else 0.",
            labels=["board", "reason"],
        )
        for board, error in sorted(self.errors.items()):
            for reason in READ_ERRORS:
                errors.add_metric([board, reason], 1.0 if error == reason else 0.0)
        yield errors

        cooling = GaugeMetricFamily(
            "watchers_provider_cooling",
            "1 while a provider is cooling down after rate limits (on any board), else 0.",
            labels=["provider"],
        )
        until = GaugeMetricFamily(
            "watchers_provider_cooldown_until_timestamp_seconds",
            "When a cooling provider is eligible again (0: not cooling).",
            labels=["provider"],
        )
        for provider, c in sorted(merged.items()):
            on = c is not None and c.cooling(now)
            cooling.add_metric([provider], 1.0 if on else 0.0)
            until.add_metric([provider], c.until if c is not None and on else 0.0)
        yield cooling
        yield until


def _read_error(exc: BaseException) -> str:
    if isinstance(exc, StoreBusy):
        return "busy"
    if isinstance(exc, WatchersError):
        return "unusable"
    return "unexpected"


def _with_extra(known: Iterable[str], seen: Mapping[str, int]) -> list[str]:
    names = list(known)
    return names + sorted(k for k in seen if k not in names)


def _later(a: Cooldown | None, b: Cooldown | None, now: float) -> Cooldown | None:
    """Of one provider's cooldowns on two boards, the one that keeps it out the longest."""
    known = [c for c in (a, b) if c is not None]
    return max(known, key=lambda c: (c.cooling(now), c.until)) if known else None


class Metrics:
    """The registry and everything in it; `observe` is the daemon's report listener."""

    def __init__(self, watched: Watched, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.actions = Counter(
            "watchers_actions",
            "Actions applied to a board, by watcher and kind.",
            ["watcher", "action"],
            registry=r,
        )
        self.cards = Counter(
            "watchers_cards",
            "[BLOCKED] cards written, by watcher and reason (no_progress: a worker that looks "
            "like it loops; parked: a task Hermes keeps deferring).",
            ["watcher", "reason"],
            registry=r,
        )
        self.ticks = Counter(
            "watchers_ticks",
            "Ticks by watcher and outcome (ok, error, skipped: the board was busy, or the "
            "scheduler skipped a run because the last one had not finished or it ran late).",
            ["watcher", "outcome"],
            registry=r,
        )
        self.tick_duration = Histogram(
            "watchers_tick_duration_seconds",
            "How long each tick took.",
            ["watcher"],
            buckets=TICK_BUCKETS,
            registry=r,
        )
        self.guard_trips = Counter(
            "watchers_guard_trips",
            "Ticks in which a guard held actions back, by board.",
            ["board"],
            registry=r,
        )
        self.build_info = Info("watchers_build", "kanban-watchers build information.", registry=r)
        self.build_info.info({"version": __version__})
        self.boards = BoardCollector(watched)
        r.register(self.boards)
        self.prepare(())

    def prepare(self, boards: Iterable[str]) -> None:
        """Create every known label child at 0 (call again when boards change)."""
        for watcher in WATCHER_NAMES:
            for kind in WATCHER_ACTIONS.get(watcher, ()):
                self.actions.labels(watcher, kind.value)
            for outcome in TICK_OUTCOMES:
                self.ticks.labels(watcher, outcome)
            self.tick_duration.labels(watcher)
            for reason in CARD_REASONS.get(watcher, ()):
                self.cards.labels(watcher, reason)
        for board in boards:
            self.guard_trips.labels(board)

    def skipped(self, watcher: str) -> None:
        """A run the scheduler did not start (the previous one still running, or late)."""
        self.ticks.labels(watcher, "skipped").inc()

    def observe(self, report: TickReport) -> None:
        self.ticks.labels(report.watcher, tick_outcome(report)).inc()
        if report.unchanged:
            return
        self.tick_duration.labels(report.watcher).observe(report.duration_seconds)
        held = False
        for o in report.outcomes:
            if o.result is Result.APPLIED:
                self.actions.labels(o.action.watcher, o.action.kind.value).inc()
                if o.action.kind is ActionKind.CARD:
                    self.cards.labels(o.action.watcher, o.action.reason).inc()
            held = held or o.result is Result.HELD
        if held:
            self.guard_trips.labels(report.board).inc()
        else:
            self.guard_trips.labels(report.board)

    def close(self) -> None:
        self.boards.close()
