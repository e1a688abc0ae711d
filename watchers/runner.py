"""Runs one watcher tick over one board: observe -> decide -> apply -> announce.

Commit first, then announce: outcomes are logged only after their transaction
committed (or was refused). A failing tick is reported, never raised: the daemon
stays up and the next tick retries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog

from watchers.clock import Clock
from watchers.errors import StoreBusy, WatchersError
from watchers.model import Action, Outcome, Result, SkippedRow, TickReport
from watchers.settings import Settings
from watchers.store.board import BoardStore

log = structlog.get_logger("watchers")


class Watcher(Protocol):
    name: str

    def plan(
        self, store: BoardStore, settings: Settings, now: float
    ) -> tuple[list[Action], list[SkippedRow]]:
        """Observe the board and decide; no writes."""

    def deadline(self, board: Path) -> float | None:
        """When the last pass over `board` said something next falls due without any
        new write to the board (epoch seconds; None: nothing is waiting)."""


def execute(
    store: BoardStore, actions: Sequence[Action], now: float, dry_run: bool
) -> list[Outcome]:
    """Apply each action in its own short transaction; one failure does not stop the rest."""
    outcomes = []
    for action in actions:
        if action.held:
            outcomes.append(Outcome(action, Result.HELD, action.held))
            continue
        if dry_run:
            outcomes.append(Outcome(action, Result.DRY_RUN))
            continue
        try:
            applied = store.apply(action, int(now))
        except WatchersError as exc:
            outcomes.append(
                Outcome(action, Result.FAILED, str(exc), transient=isinstance(exc, StoreBusy))
            )
            continue
        outcomes.append(Outcome(action, Result.APPLIED if applied else Result.RACE_LOST))
    return outcomes


def action_fields(o: Outcome) -> dict[str, Any]:
    """An `action` log line's fields, a fixed schema (README, "Logs"): watcher, board,
    task, action, reason, result (strings) and evidence (an object in which each key
    keeps one JSON type across every action of every watcher)."""
    a = o.action
    return dict(
        watcher=a.watcher,
        board=a.board,
        task=a.task_id,
        action=a.kind.value,
        reason=a.reason,
        result=o.result.value,
        evidence=dict(a.evidence),
    )


def announce(report: TickReport) -> None:
    for row in report.skipped:
        log.warning(
            "row skipped",
            board=row.board,
            table=row.table,
            task=row.task_id,
            problem=row.problem,
            watcher=report.watcher,
        )
    held = [o for o in report.outcomes if o.result is Result.HELD]
    if held:
        log.error(
            "guard tripped: holding actions",
            watcher=report.watcher,
            board=report.board,
            held=len(held),
            why=held[0].detail,
        )
    for o in report.outcomes:
        fields = action_fields(o)
        if o.result is Result.FAILED:
            log.warning("action failed", detail=o.detail, **fields)
        elif o.result is not Result.HELD:
            log.info("action", **fields)
    if report.error:
        (log.warning if report.transient else log.error)(
            "tick failed",
            watcher=report.watcher,
            board=report.board,
            error=report.error,
            transient=report.transient,
        )


def run_tick(
    watcher: Watcher,
    store: BoardStore,
    settings: Settings,
    clock: Clock,
    *,
    dry_run: bool = False,
    on_report: Callable[[TickReport], None] | None = None,
) -> TickReport:
    started = clock.now()
    t0 = time.perf_counter()

    def finish(**result: Any) -> TickReport:
        return TickReport(
            watcher=watcher.name,
            board=store.slug,
            started_at=started,
            duration_seconds=time.perf_counter() - t0,
            **result,
        )

    try:
        actions, skipped = watcher.plan(store, settings, started)
        skipped = [*skipped, *store.take_problems()]
        outcomes = execute(store, actions, clock.now(), dry_run)
        failed = [o for o in outcomes if o.result is Result.FAILED]
        if failed:
            # writes that failed (a full disk, a board locked past the timeout) make the
            # tick a failed one, so health says so; nothing was half-written
            report = finish(
                outcomes=tuple(outcomes),
                skipped=tuple(skipped),
                error=f"{len(failed)} of {len(outcomes)} write(s) failed: {failed[0].detail}",
                transient=all(o.transient for o in failed),
            )
        else:
            report = finish(outcomes=tuple(outcomes), skipped=tuple(skipped))
    except WatchersError as exc:
        report = finish(error=str(exc), transient=isinstance(exc, StoreBusy))
    except Exception as exc:  # a bug must not kill the daemon; the traceback goes to the log
        log.exception("tick crashed", watcher=watcher.name, board=store.slug)
        report = finish(error=f"{type(exc).__name__}: {exc}")
    announce(report)
    if on_report is not None:
        on_report(report)
    return report
