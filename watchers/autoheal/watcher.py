"""The auto-heal watcher object the daemon schedules: per-board memory + decide()."""

from __future__ import annotations

from pathlib import Path

from watchers.autoheal import WATCHER
from watchers.autoheal.decide import decide, next_deadline
from watchers.autoheal.observe import BoardObserver
from watchers.model import Action, SkippedRow
from watchers.probe import Probe
from watchers.settings import Settings
from watchers.store.board import BoardStore, PerBoard


class AutoHeal:
    name = WATCHER

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self._observers = PerBoard(BoardObserver)
        self._deadlines: dict[Path, float | None] = {}

    def plan(
        self, store: BoardStore, settings: Settings, now: float
    ) -> tuple[list[Action], list[SkippedRow]]:
        observer = self._observers.of(store)
        host = settings.hostname or self.probe.hostname
        snapshot, skipped = observer.snapshot(store, self.probe, settings.auto_heal, host, now)
        due = [
            d
            for d in (next_deadline(snapshot, settings.auto_heal, now), observer.quiet_end(now))
            if d is not None
        ]
        self._deadlines[store.path] = min(due) if due else None
        return decide(snapshot, settings.auto_heal, now), skipped

    def deadline(self, board: Path) -> float | None:
        """When the last pass over `board` said something next falls due (epoch seconds)."""
        return self._deadlines.get(board)
