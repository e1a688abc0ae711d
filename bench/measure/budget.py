"""The budget watcher's steady-state tick, and what it followed (its observer's memory)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.measure.ticks import measure_watcher_ticks
from bench.targets import BUDGET_BLOCKER, TARGET_BUDGET_TICK_MS, WARN_FRACTION


def bench_budget(path: Path, config: Path, n_ticks: int, profile: bool) -> dict[str, Any]:
    """The budget watcher's steady-state tick, measured as the others; its first tick
    loads every open task (budget fields, attempts, failures, resets, warnings) from one
    snapshot and is reported apart."""
    from watchers.budget.watcher import Budget

    res = measure_watcher_ticks(
        "budget", Budget, budget_memory, TARGET_BUDGET_TICK_MS, path, config, n_ticks, profile
    )
    problems = res["problems"]
    if res["unanswered_overruns"] or not res["overruns_answered_by"]:
        problems.append(f"budget overruns not answered by a card: {res}")
    if res["running_max_time_fraction"] >= WARN_FRACTION or (
        res["running_max_iteration_fraction"] >= WARN_FRACTION
    ):
        problems.append(f"running attempts near their budgets: {res}")
    if not res["runs_warned"] or not res["tasks_with_body_budgets"]:
        problems.append(f"budget history not exercised: {res}")
    return res


def deep_size(obj: Any, seen: set[int] | None = None, depth: int = 0) -> int:
    """Bytes held by `obj` and what it references (containers, slotted dataclasses);
    shared objects are counted once. Bounded depth."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 12:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        for k, v in obj.items():
            size += deep_size(k, seen, depth + 1) + deep_size(v, seen, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            size += deep_size(v, seen, depth + 1)
    elif hasattr(obj, "__slots__") or hasattr(obj, "__dict__"):
        names = list(getattr(obj, "__slots__", ())) + list(getattr(obj, "__dict__", {}))
        for name in names:
            if hasattr(obj, name):
                size += deep_size(getattr(obj, name), seen, depth + 1)
    return size


def budget_memory(bud: Any, store: Any, settings: Any) -> dict[str, Any]:
    """What the watcher follows, and why none of it needs an action (its own rules):
    every overrun has an open card or one resolved after it; running attempts are
    below the warning fraction of each budget."""
    from watchers.budget import decide as budget_decide
    from watchers.cards import card_needed

    def unanswered(over: list[Any], cards: Any, task_id: str) -> Any:
        """The watcher's own rule: the first overrun no card answers yet."""
        if hasattr(budget_decide, "unanswered"):
            return budget_decide.unanswered(over, cards, task_id)
        return over[0] if card_needed(cards, task_id, BUDGET_BLOCKER, over[0].since) else None

    obs = bud._observers.peek(store.path)
    assert obs is not None
    now = time.time()
    snap, _ = obs.snapshot(store, settings, now)  # reads only (every overrun is carded)
    # The watcher holds only the running tasks and unanswered overruns between passes;
    # every open task is recalled here from its history (as the watcher would when an
    # event names it) and weighed, apart from the observer being measured.
    everything = type(obs)()
    cursor = store.max_event_id()
    for ids in store.open_task_pages():
        everything._recall(store, ids, cursor)
    running = {t.task_id: t for t in store.running_tasks()[0]}
    weighed = []
    for task_id, memo in everything.memos.items():
        problems = tuple(
            p
            for p in (memo.row.body.problems if memo.row else ())
            if p not in (memo.reported or ())
        )
        weighed.append(obs._task(task_id, memo, running.get(task_id), problems, settings))
    answered: Counter[str] = Counter()
    not_answered: list[str] = []
    time_frac = iter_frac = 0.0
    sources: Counter[str] = Counter()
    for t in weighed:
        over = budget_decide.over_budget(t, settings, now)
        if over:
            card = snap.cards.get((t.source.task_id, BUDGET_BLOCKER))
            if unanswered(over, snap.cards, t.source.task_id) is not None:
                not_answered.append(t.source.task_id)
            elif card is not None and card.open_card is not None:
                answered[f"{over[0].reason}:open_card"] += 1
            else:
                answered[f"{over[0].reason}:resolved_card"] += 1
        if t.running and t.attempt_started_at is not None:
            b = t.budgets
            if b.time:
                time_frac = max(time_frac, (now - t.attempt_started_at) / b.time.value)
                sources[f"time:{b.time.source.split(':')[0]}"] += 1
            if b.iterations:
                iter_frac = max(iter_frac, t.heartbeats / b.iterations.value)
                sources[f"iterations:{b.iterations.source.split(':')[0]}"] += 1
    memos = everything.memos
    return {
        "tasks_followed": len(obs.memos),
        "open_tasks_weighed": len(memos),
        "tasks_in_snapshot": len(snap.tasks),
        "tasks_with_body_budgets": sum(
            1
            for m in memos.values()
            if m.row is not None
            and (m.row.body.time_seconds or m.row.body.iterations or m.row.body.attempts)
        ),
        "running_budget_sources": dict(sorted(sources.items())),
        "running_max_time_fraction": round(time_frac, 3),
        "running_max_iteration_fraction": round(iter_frac, 3),
        "runs_with_heartbeats": len(obs.heartbeats),
        "overruns_answered_by": dict(sorted(answered.items())),
        "unanswered_overruns": not_answered[:10],
        "cards_indexed": len(obs.cards.cards),
        "runs_warned": sum(len(m.warned or ()) for m in memos.values()),
        "malformed_reported": sum(len(m.reported or ()) for m in memos.values()),
        "observer_kib": round(deep_size(obs) / 1024),
        "observer_kib_by_part": {
            name: round(deep_size(part, seen) / 1024)
            for seen in [set()]
            for name, part in (
                ("memo_rows", [m.row for m in obs.memos.values()]),
                ("memos_other", list(obs.memos.values())),
                ("heartbeats", obs.heartbeats),
                ("cards", obs.cards),
            )
        },
    }
