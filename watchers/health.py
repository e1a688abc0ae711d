"""`/healthz`'s verdict, from what the daemon knows: is the scheduler running, has every
(watcher, board) succeeded recently enough, can every board be opened."""

from __future__ import annotations

from collections.abc import Mapping

from watchers.http import Health
from watchers.settings import Settings

STALE_AFTER_INTERVALS = 3.0
"""A job with no success for this many of its intervals is stale."""


def interval_of(settings: Settings, watcher: str) -> tuple[float, float]:
    """A watcher's interval and jitter."""
    if watcher == "auto-heal":
        return settings.auto_heal.interval_seconds, settings.auto_heal.jitter_seconds
    if watcher == "distress":
        return settings.distress.interval_seconds, settings.distress.jitter_seconds
    if watcher == "budget":
        return settings.budget.interval_seconds, settings.budget.jitter_seconds
    if watcher == "dispatcher":
        return settings.dispatcher.interval_seconds, settings.dispatcher.jitter_seconds
    raise KeyError(watcher)


def verdict(
    *,
    scheduler_alive: bool,
    now: float,
    settings: Settings,
    scheduled: Mapping[tuple[str, str], float],
    successes: Mapping[tuple[str, str], float],
    unusable: Mapping[str, str],
) -> Health:
    """Healthy while the scheduler runs, no board is unusable and every job succeeded
    within STALE_AFTER_INTERVALS of its interval (counted from its first due pass before
    its first success)."""
    if not scheduler_alive:
        return Health(False, {"status": "unhealthy", "reason": "the scheduler is not running"})
    stale = []
    for (watcher, board), due in sorted(scheduled.items()):
        interval, _ = interval_of(settings, watcher)
        limit = STALE_AFTER_INTERVALS * interval
        last = successes.get((watcher, board))
        age = now - (last if last is not None else due)
        if age > limit:
            stale.append(
                {
                    "watcher": watcher,
                    "board": board,
                    "last_success": last,
                    "seconds_since": round(age, 1),
                    "limit_seconds": limit,
                }
            )
    if unusable:
        return Health(
            False,
            {
                "status": "board_unusable",
                "boards": [{"board": b, "problem": p} for b, p in sorted(unusable.items())],
                "stale": stale,
            },
        )
    if stale:
        return Health(False, {"status": "stale", "stale": stale})
    return Health(True, {"status": "ok"})
