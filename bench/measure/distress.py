"""The distress watcher's steady-state tick, and what it followed."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.measure.ticks import measure_watcher_ticks
from bench.targets import TARGET_DISTRESS_TICK_MS


def bench_distress(path: Path, config: Path, n_ticks: int, profile: bool) -> dict[str, Any]:
    """The distress watcher's steady-state tick, measured as the auto-heal one; its
    first tick rebuilds the memory from `signal_window_seconds` of history."""
    from watchers.distress.watcher import Distress

    res = measure_watcher_ticks(
        "distress",
        Distress,
        distress_memory,
        TARGET_DISTRESS_TICK_MS,
        path,
        config,
        n_ticks,
        profile,
    )
    if not res["signals_in_window"] or not res["cards_open"]:
        res["problems"].append(f"distress history not exercised: {res}")
    return res


def distress_memory(dist: Any, store: Any, settings: Any) -> dict[str, Any]:
    """What the watcher followed, and why none of it needs an action (its own rules)."""
    now = time.time()
    obs = dist.observer(store)
    m = obs.memory
    cards = obs.cards.refresh(store)
    window = [
        (tid, sig)
        for tid, sig in m.latest.items()
        if sig.at >= now - settings.distress.signal_window_seconds
    ]
    status = {tid: d.status for tid, d in store.task_details([t for t, _ in window]).items()}
    answered: Counter[str] = Counter()
    for tid, sig in window:
        card = cards.get((tid, sig.signal.value))
        if max(m.reassigned_at.get(tid, [0])) >= sig.at:
            answered["reassigned"] += 1
        elif card is not None and card.open_card is not None:
            answered["open_card"] += 1
        elif card is not None and (card.resolved_at or 0) >= sig.at:
            answered["resolved_card"] += 1
        elif status.get(tid) in ("running", "done", "archived"):
            answered[f"task_{status.get(tid)}"] += 1
        else:
            answered["unanswered"] += 1
    providers = obs.reader.read(settings.profiles) if obs.reader else None
    return {
        "profiles": len(providers.profiles) if providers else 0,
        "providers": sorted({p.provider for p in providers.profiles.values() if p.provider})
        if providers
        else [],
        "cards_indexed": len(obs.cards.cards),
        "cards_open": sum(
            1 for c in obs.cards.cards.values() if c.status not in ("done", "archived")
        ),
        "events_followed_to": obs.cursor,
        "signals_in_window": len(window),
        "signals_answered_by": dict(sorted(answered.items())),
        "rate_signals_remembered": len(m.rate_signals),
        "reassigned_tasks_remembered": len(m.reassigned_at),
    }
