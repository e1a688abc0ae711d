"""The iteration-budget watcher object the daemon schedules: per-board memory + decide()."""

from __future__ import annotations

from pathlib import Path

from watchers.budget import WATCHER
from watchers.budget.decide import decide, next_deadline
from watchers.budget.observe import BudgetObserver
from watchers.model import Action, SkippedRow
from watchers.probe import Probe
from watchers.settings import Settings
from watchers.store.board import BoardStore, PerBoard


class Budget:
    name = WATCHER

    def __init__(self, probe: Probe) -> None:
        self.probe = probe  # unused: this watcher never looks at (or touches) a process
        self._observers = PerBoard(BudgetObserver)
        self._deadlines: dict[Path, float | None] = {}

    def plan(
        self, store: BoardStore, settings: Settings, now: float
    ) -> tuple[list[Action], list[SkippedRow]]:
        observer = self._observers.of(store)
        snapshot, skipped = observer.snapshot(store, settings, now)
        self._deadlines[store.path] = next_deadline(snapshot, settings, now)
        return decide(snapshot, settings, now), skipped

    def deadline(self, board: Path) -> float | None:
        """When the last pass over `board` said something next falls due (epoch seconds)."""
        return self._deadlines.get(board)
