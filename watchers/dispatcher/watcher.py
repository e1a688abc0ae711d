"""The dispatcher check the daemon schedules: per-board memory + stalled().

It never writes to the board: `plan` returns no actions. A stall is told to people, once
per episode: one error line when it begins (naming the board, what waits, the last claim
and who holds the dispatch lock), one info line when it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from watchers.cards import readable_time
from watchers.dispatcher import WATCHER
from watchers.dispatcher.decide import Stall, next_deadline, stalled
from watchers.dispatcher.locks import lock_holder
from watchers.dispatcher.observe import DispatchState, observe
from watchers.hermes.dispatching import DispatchRules, DispatchRulesReader
from watchers.hermes.profiles import hermes_root
from watchers.model import Action, SkippedRow
from watchers.probe import Probe
from watchers.settings import Settings
from watchers.store.board import BoardStore, PerBoard

log = structlog.get_logger("watchers")


@dataclass(slots=True)
class _Episode:
    stall: Stall | None = None  # the stall told about, until it ends
    told_at: float = 0.0


class Dispatcher:
    name = WATCHER

    def __init__(self, probe: Probe) -> None:
        self.probe = probe  # unused: the lock's holders come from /proc/locks, never signalled
        self._episodes = PerBoard(_Episode)
        self._deadlines: dict[Path, float | None] = {}
        self._reader: DispatchRulesReader | None = None

    def rules(self, settings: Settings) -> DispatchRules:
        """Hermes's kanban config and profiles (the root as distress and budget find it)."""
        root = hermes_root(settings.distress.hermes_home)
        if self._reader is None or self._reader.root != root:
            self._reader = DispatchRulesReader(root)
        return self._reader.read()

    def plan(
        self, store: BoardStore, settings: Settings, now: float
    ) -> tuple[list[Action], list[SkippedRow]]:
        s = settings.dispatcher
        state, skipped = observe(store, self.rules(settings), claimed_after=now - s.stall_seconds)
        stall = stalled(state, s, now)
        self._deadlines[store.path] = next_deadline(state, s, now)
        self._tell(store, state, stall, now)
        return [], skipped

    def deadline(self, board: Path) -> float | None:
        """When the last pass over `board` said a stall could begin (epoch seconds)."""
        return self._deadlines.get(board)

    def _tell(
        self, store: BoardStore, state: DispatchState, stall: Stall | None, now: float
    ) -> None:
        episode = self._episodes.of(store)
        told = episode.stall
        if stall is not None and told is None:
            holder = lock_holder(store.path)
            log.error(
                "dispatcher stalled",
                board=store.slug,
                ready=stall.dispatchable,
                counted="all" if state.complete else "until the stall was certain",
                oldest_ready_task=stall.oldest_task,
                oldest_ready_age_seconds=round(stall.waiting_seconds),
                last_claim_at=(
                    None if stall.last_claim_at is None else readable_time(stall.last_claim_at)
                ),
                dispatch_lock=holder.describe(),
                dispatch_lock_pids=list(holder.pids),
            )
            episode.stall, episode.told_at = stall, now
        elif stall is None and told is not None:
            claimed = state.last_claim_at is not None and (
                told.last_claim_at is None or state.last_claim_at > told.last_claim_at
            )
            log.info(
                "dispatcher resumed" if claimed else "dispatcher stall over",
                board=store.slug,
                last_claim_at=(
                    None if state.last_claim_at is None else readable_time(state.last_claim_at)
                ),
                told_seconds_ago=round(now - episode.told_at),
                why="a claim" if claimed else "no dispatchable work waits that long",
            )
            episode.stall = None
