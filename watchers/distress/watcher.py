"""The distress watcher object the daemon schedules: per-board memory + decide()."""

from __future__ import annotations

from pathlib import Path

from watchers.distress import WATCHER
from watchers.distress.cooldown import Cooldown
from watchers.distress.decide import decide, next_deadline
from watchers.distress.observe import DistressObserver
from watchers.model import Action, SkippedRow
from watchers.probe import Probe
from watchers.settings import Settings
from watchers.store.board import BoardStore, PerBoard


class Distress:
    name = WATCHER

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self._observers = PerBoard(DistressObserver)
        self._deadlines: dict[Path, float | None] = {}

    def observer(self, store: BoardStore) -> DistressObserver:
        return self._observers.of(store)

    def plan(
        self, store: BoardStore, settings: Settings, now: float
    ) -> tuple[list[Action], list[SkippedRow]]:
        host = settings.hostname or self.probe.hostname
        snapshot, skipped = self.observer(store).snapshot(store, self.probe, settings, host, now)
        self._deadlines[store.path] = next_deadline(snapshot, settings.distress, now)
        return decide(snapshot, settings.distress, now, route=settings.cards.route), skipped

    def deadline(self, board: Path) -> float | None:
        """When the last pass over `board` said something next falls due (epoch seconds)."""
        return self._deadlines.get(board)

    def provider_states(
        self, store: BoardStore, settings: Settings, now: float
    ) -> dict[str, Cooldown | None]:
        """Every known provider and its latest cooldown (None: never cooled), from the
        profiles and the board's history (for `watchers status` and the metrics)."""
        return self.observer(store).provider_table(store, settings, now)
