"""The daemon's reflex: a worker's exit wakes auto-heal for its board at once.

The probe keeps a pidfd for every worker it verified alive; one thread blocks on all of
them (`Probe.exited_scopes`) and costs nothing while no one exits. An exit starts a short
coalescing window, so deaths that arrive together (a node's OOM storm, a killed process
group) are judged in one pass and the blast-radius guard still sees them as one event;
then the board's auto-heal job is brought forward. A wake whose job was busy at that
moment is repeated until a pass has started after it. Everything else stays periodic:
the intervals are the longest time between full passes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from watchers.probe import scope_board

log = structlog.get_logger("watchers.reflex")

COALESCE_SECONDS = 0.25
"""Deaths within this window of the first are judged together."""
RETRY_SECONDS = 0.5
"""A wake not yet answered by a pass that started after it is repeated this often."""
IDLE_SECONDS = 60.0
"""With no wake unanswered the thread waits this long for an exit (`stop` interrupts it)."""


class ExitSource(Protocol):
    def exited_scopes(self, timeout: float) -> set[str]: ...

    def interrupt(self) -> None: ...


class Reflex:
    """Wakes `wake(board)` when a worker watched for that board exits."""

    def __init__(
        self,
        probe: ExitSource,
        wake: Callable[[Path], bool],
        *,
        coalesce: float = COALESCE_SECONDS,
    ) -> None:
        self._probe = probe
        self._wake = wake
        self._coalesce = coalesce
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[Path, float] = {}  # board -> monotonic time of the unanswered wake
        self._thread: threading.Thread | None = None
        self.wakes = 0  # boards woken (for tests and the benchmark)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reflex", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._probe.interrupt()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def pass_started(self, board: Path, at: float) -> None:
        """A pass over `board` began at monotonic time `at`: wakes before it are answered."""
        with self._lock:
            woken = self._pending.get(board)
            if woken is not None and woken <= at:
                del self._pending[board]

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                wait = RETRY_SECONDS if self._pending else IDLE_SECONDS
            scopes = self._probe.exited_scopes(wait)
            if scopes:
                end = time.monotonic() + self._coalesce
                while (left := end - time.monotonic()) > 0 and not self._stop.is_set():
                    scopes |= self._probe.exited_scopes(left)
            now = time.monotonic()
            boards = {Path(b) for s in scopes if (b := scope_board(s)) is not None}
            with self._lock:
                for board in boards:
                    self._pending.setdefault(board, now)
                due = [
                    b for b, at in self._pending.items() if b in boards or now - at >= RETRY_SECONDS
                ]
            for board in due:
                try:
                    woken = self._wake(board)
                except Exception:  # the reflex must outlive anything a wake runs into
                    log.exception("reflex: waking a board failed", board=str(board))
                    woken = False
                if not woken:
                    with self._lock:
                        self._pending.pop(board, None)  # no such job (any more): nothing to do
                elif board in boards:
                    self.wakes += 1
                    log.debug("reflex: worker exit; waking auto-heal", board=str(board))
