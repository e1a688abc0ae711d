"""Builds the distress snapshot of a board: the I/O half of a tick.

Per board it follows the event log from a cursor (rebuilt from `signal_window_seconds`
of history at start, so a restart loses nothing): the latest rate-limit or credential
signal of each task, the watchers' own reassignments since the task last completed,
auto-heal's escalations, and every provider's rate-limit signals for the cooldowns.
Distress cards are indexed by (source, blocker type) from the tasks table, new rows by
rowid; open cards are re-checked every tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from watchers.cards import CardIndex, SourceTask, card_needed
from watchers.distress.cooldown import Cooldown, ProviderSignal, cooldowns
from watchers.distress.decide import (
    DistressSnapshot,
    EscalationCase,
    SignalCase,
    StuckCase,
)
from watchers.distress.parked import PARKING_KINDS, Episode, ParkedCase, follow_deferrals
from watchers.distress.signals import Signal, classify_text, retry_after_seconds
from watchers.hermes.claims import attempt_age, is_host_local
from watchers.hermes.events import READY, STATE_KINDS_NEWER
from watchers.hermes.profiles import ProfileReader, ProviderMap, hermes_root
from watchers.hermes.provider_errors import provider_error_line
from watchers.hermes.worker_log import worker_log_tail
from watchers.hermes.workspace import workspace_state
from watchers.model import SkippedRow, Verdict
from watchers.probe import Probe, WorkerRef, board_scope
from watchers.settings import Settings
from watchers.store.board import AUTHOR, ESCALATED, BoardStore, EventRow, TaskDetail

SIGNAL_KINDS = (
    "rate_limited",
    "crashed",
    "timed_out",
    "spawn_failed",
    "gave_up",
    "blocked",
    "protocol_violation",  # exit 0 without a terminal call: maybe right after a 429 or a 401
)
LOG_WRITTEN_BEFORE_SECONDS = 900.0
"""A worker's log counts for a clean exit Hermes booked when it was written this long
before the booking at most (Hermes notices an exit at its next pass, a minute or so)."""
FOLLOWED_KINDS = (
    *SIGNAL_KINDS,
    "completed",
    "assigned",
    "archived",
    "unblocked",
    ESCALATED,
    *PARKING_KINDS,
    *STATE_KINDS_NEWER,
)
OPEN_STATUSES = frozenset({"ready", "todo", "blocked", "triage", "scheduled", "review"})
PARKABLE_STATUSES = frozenset({"ready", "todo", "scheduled", "review"})
PROBE_SCOPE = "distress"


@dataclass(slots=True)
class _TaskSignal:
    signal: Signal
    at: int
    text: str
    run_id: int | None
    event_id: int


@dataclass(slots=True)
class _Memory:
    latest: dict[str, _TaskSignal] = field(default_factory=dict)
    reassigned_at: dict[str, list[int]] = field(default_factory=dict)  # ours: the budget
    assigned_event: dict[str, int] = field(default_factory=dict)  # anyone's: answers a signal
    completed_at: dict[str, int] = field(default_factory=dict)
    escalated: dict[str, tuple[int, dict[str, object], int]] = field(default_factory=dict)
    rate_signals: list[tuple[str | None, str, int, float | None]] = field(default_factory=list)
    parked: dict[str, Episode] = field(default_factory=dict)  # deferrals since progress


def _clean_exit(ev: EventRow, last_error: str) -> bool:
    """A run Hermes closed because its worker exited 0 without a terminal call."""
    return (
        ev.kind == "protocol_violation"
        or bool(ev.payload.get("protocol_violation"))
        or "protocol violation" in (ev.run_error or last_error)
    )


class DistressObserver:
    def __init__(self) -> None:
        self.cursor: int | None = None
        self.memory = _Memory()
        self.cards = CardIndex()
        self.reader: ProfileReader | None = None
        self._states: dict[tuple[str, str, int], str] = {}
        # signal-kind events whose own text named nothing: the task's last_failure_error may
        self._unexplained: dict[str, EventRow] = {}

    # -- following the board --------------------------------------------------------

    def _follow(self, store: BoardStore, s: Settings, now: float) -> None:
        if self.cursor is None:
            self.cursor = store.first_event_id_since(now - s.distress.signal_window_seconds)
        for ev in store.events_with_runs_after(self.cursor, FOLLOWED_KINDS):
            self.cursor = max(self.cursor, ev.event_id)
            self._remember(ev)
        if self._unexplained:
            self._explain_from_task_rows(store)
        horizon = now - max(s.distress.signal_window_seconds, s.distress.cooldown_memory_seconds)
        self.memory.rate_signals = [r for r in self.memory.rate_signals if r[2] >= horizon]

    def _remember(self, ev: EventRow) -> None:
        m = self.memory
        follow_deferrals(m.parked, ev)
        if ev.kind in PARKING_KINDS or ev.kind in ("archived", "unblocked"):
            return
        if ev.kind == "completed":
            m.completed_at[ev.task_id] = ev.created_at
            m.latest.pop(ev.task_id, None)
            m.reassigned_at.pop(ev.task_id, None)
            return
        if ev.kind == "assigned":
            m.assigned_event[ev.task_id] = ev.event_id
            if ev.payload.get("by") == AUTHOR:
                m.reassigned_at.setdefault(ev.task_id, []).append(ev.created_at)
            return
        if ev.kind in STATE_KINDS_NEWER:
            # newer Hermes moved the task (e.g. into or out of review): the attempt that
            # signalled is no longer the task's latest state
            m.latest.pop(ev.task_id, None)
            self._unexplained.pop(ev.task_id, None)
            return
        if ev.kind == ESCALATED:
            if ev.payload.get("by") == AUTHOR:
                evidence = ev.payload.get("evidence")
                m.escalated[ev.task_id] = (
                    ev.created_at,
                    evidence if isinstance(evidence, dict) else {},
                    ev.event_id,
                )
            return
        text = " ".join(
            t
            for t in (
                ev.run_error,
                str(ev.payload.get("error") or ""),
                str(ev.payload.get("reason") or ""),
            )
            if t
        )
        outcome = "rate_limited" if ev.kind == "rate_limited" else ev.run_outcome
        signal = classify_text(text, outcome)
        if signal is None:
            self._unexplained[ev.task_id] = ev
            return
        self._unexplained.pop(ev.task_id, None)
        self._signal(ev, signal, text)

    def _signal(self, ev: EventRow, signal: Signal, text: str) -> None:
        m = self.memory
        m.latest[ev.task_id] = _TaskSignal(signal, ev.created_at, text, ev.run_id, ev.event_id)
        if signal is Signal.RATE_LIMITED:
            m.rate_signals.append(
                (ev.run_profile, ev.task_id, ev.created_at, retry_after_seconds(text))
            )

    def _explain_from_task_rows(self, store: BoardStore) -> None:
        """A failure whose run and event say nothing may still be named in the task's
        `last_failure_error` (some paths write only that): read it for those tasks."""
        pending, self._unexplained = self._unexplained, {}
        texts = store.failure_texts(list(pending))
        for task_id, ev in pending.items():
            found = texts.get(task_id)
            if found is None or found[0] not in OPEN_STATUSES:
                continue
            signal = classify_text(found[1])
            if signal is not None:
                self._signal(ev, signal, found[1])
            elif _clean_exit(ev, found[1]):
                # Hermes booked an exit 0 as a protocol violation: the worker's own last
                # words may name the provider error it gave up on
                tail = worker_log_tail(
                    store.path, task_id, ev.created_at - LOG_WRITTEN_BEFORE_SECONDS
                )
                said = provider_error_line(tail)
                if said is not None:
                    self._signal(ev, said[0], f"worker exited 0 after: {said[1]}")

    def _source(
        self, store: BoardStore, d: TaskDetail, s: Settings, key: tuple[str, int]
    ) -> SourceTask:
        summaries, _ = store.run_summaries(d.task_id)
        state_key = (d.task_id, d.workspace or "", key[1])
        state = self._states.get(state_key)
        if state is None:
            state = workspace_state(d.workspace, s.distress.git_timeout_seconds)
            if len(self._states) > 10_000:
                self._states.clear()
            self._states[state_key] = state
        return SourceTask.of(d, summaries, state)

    def _providers(self, s: Settings) -> ProviderMap:
        if self.reader is None:
            self.reader = ProfileReader(hermes_root(s.distress.hermes_home))
        return self.reader.read(s.profiles)

    @staticmethod
    def _signals(m: _Memory, providers: ProviderMap) -> tuple[ProviderSignal, ...]:
        return tuple(
            ProviderSignal(provider, task_id, at, retry)
            for profile, task_id, at, retry in m.rate_signals
            if (provider := providers.provider_of(profile)) is not None
        )

    def provider_table(
        self, store: BoardStore, s: Settings, now: float
    ) -> dict[str, Cooldown | None]:
        """Every known provider and its latest cooldown (None: never cooled). Reads only the
        new events: no cards, no workers, no git (cheap enough for a metrics scrape)."""
        providers = self._providers(s)
        self._follow(store, s, now)
        table: dict[str, Cooldown | None] = {
            p.provider: None for p in providers.profiles.values() if p.provider
        }
        table.update(cooldowns(self._signals(self.memory, providers), s.distress))
        return table

    def snapshot(
        self, store: BoardStore, probe: Probe, s: Settings, host: str, now: float
    ) -> tuple[DistressSnapshot, list[SkippedRow]]:
        providers = self._providers(s)
        self._follow(store, s, now)
        cards = self.cards.refresh(store)
        m = self.memory
        window_start = now - s.distress.signal_window_seconds

        # signals not yet answered by a reassignment
        # signals not yet answered by a reassignment or a card (decide() checks cards again)
        pending = {
            tid: sig
            for tid, sig in m.latest.items()
            if sig.at >= window_start
            and m.assigned_event.get(tid, 0) < sig.event_id  # nobody reassigned it since
            and card_needed(cards, tid, sig.signal.value, sig.at, sig.event_id)
        }
        escalated = {
            tid: e
            for tid, e in m.escalated.items()
            if e[0] > m.completed_at.get(tid, 0)
            and card_needed(cards, tid, "env_blocker", e[0], e[2])
        }
        running, skipped = store.running_tasks()
        stuck_candidates = [
            t
            for t in running
            if t.claimed
            and now - (since := t.last_heartbeat_at or t.attempt_started_at or now)
            >= s.distress.stuck_after_seconds
            and card_needed(cards, t.task_id, "env_blocker", since)
        ]
        grace = s.auto_heal.start_grace_seconds
        silent_until = min(
            (
                max(since + s.distress.stuck_after_seconds, (t.attempt_started_at or 0) + grace)
                for t in running
                if t.claimed
                and now - (since := t.last_heartbeat_at or t.attempt_started_at or now)
                < s.distress.stuck_after_seconds
            ),
            default=None,
        )
        parked_due: dict[str, Episode] = {}
        parked_until: float | None = None
        for tid, episode in m.parked.items():
            if episode.count < 2:
                continue  # one deferral is a pause, not a pattern
            due_at = episode.first_at + s.distress.parked_seconds
            if due_at > now:
                parked_until = due_at if parked_until is None else min(parked_until, due_at)
            else:
                parked_due[tid] = episode
        wanted = sorted({*pending, *escalated, *(t.task_id for t in stuck_candidates), *parked_due})
        details = store.task_details(wanted) if wanted else {}

        blocked = [t for t in pending if (d := details.get(t)) and d.status == "blocked"]
        lanes = store.claimed_lanes(blocked) if blocked else {}
        signal_cases = []
        for tid, sig in pending.items():
            d = details.get(tid)
            if d is None or d.status not in OPEN_STATUSES:
                continue
            since_completion = m.completed_at.get(tid, 0)
            reassigned = [t for t in m.reassigned_at.get(tid, []) if t > since_completion]
            _, attempts = store.run_summaries(tid, 0)
            signal_cases.append(
                SignalCase(
                    source=self._source(store, d, s, (tid, sig.at)),
                    signal=sig.signal,
                    at=sig.at,
                    text=sig.text,
                    run_id=sig.run_id,
                    reassignments=len(reassigned),
                    attempts=attempts,
                    event_id=sig.event_id,
                    lane=lanes.get(tid, READY),
                )
            )

        refs = [
            WorkerRef(
                t.task_id, t.worker_pid, t.current_run_id, t.attempt_started_at, t.worker_started_at
            )
            for t in stuck_candidates
            if t.worker_pid is not None
            and is_host_local(t.claim_lock, host, s.auto_heal.host_aliases)
        ]
        seen = probe.observe(
            refs, s.auto_heal.spawn_slack_seconds, board_scope(PROBE_SCOPE, store.path)
        )
        stuck = []
        for t in stuck_candidates:
            d = details.get(t.task_id)
            if d is None:
                continue
            local = is_host_local(t.claim_lock, host, s.auto_heal.host_aliases)
            obs = seen.get(t.task_id)
            if local and (obs is None or obs.verdict is not Verdict.ALIVE):
                continue  # dead or unknown: auto-heal's business
            since = float(t.last_heartbeat_at or t.attempt_started_at or now)
            age = attempt_age(t, now)
            if age is not None and age < s.auto_heal.start_grace_seconds:
                continue
            stuck.append(
                StuckCase(
                    source=self._source(store, d, s, (t.task_id, int(since))),
                    since=since,
                    verdict=Verdict.ALIVE.value if local else Verdict.REMOTE.value,
                    pid=t.worker_pid,
                    claim_lock=t.claim_lock,
                    process_started_at=obs.process_started_at if obs else None,
                )
            )

        escalations = []
        for tid, (at, evidence, event_id) in escalated.items():
            d = details.get(tid)
            if d is None or d.status != "blocked":
                continue
            escalations.append(
                EscalationCase(
                    source=self._source(store, d, s, (tid, at)),
                    at=at,
                    evidence=evidence,
                    event_id=event_id,
                )
            )

        parked = []
        for tid, episode in parked_due.items():
            d = details.get(tid)
            if d is None or d.status not in PARKABLE_STATUSES:
                continue  # running now, blocked or closed: not parked by Hermes at this moment
            since_completion = m.completed_at.get(tid, 0)
            reassigned = [t for t in m.reassigned_at.get(tid, []) if t > since_completion]
            parked.append(
                ParkedCase(
                    source=self._source(store, d, s, (tid, episode.first_at)),
                    since=float(episode.first_at),
                    count=episode.count,
                    reasons=dict(episode.reasons),
                    recent=tuple(episode.recent),
                    reassignments=len(reassigned),
                    lane=d.status if d.status in ("ready", "review") else READY,
                )
            )

        signals = self._signals(m, providers)
        snapshot = DistressSnapshot(
            board=store.slug,
            providers=providers,
            signals=signals,
            signal_cases=tuple(signal_cases),
            stuck=tuple(stuck),
            silent_until=silent_until,
            escalations=tuple(escalations),
            cards=cards,
            parked=tuple(parked),
            parked_until=parked_until,
        )
        return snapshot, skipped
