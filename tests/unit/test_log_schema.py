"""Logs a pipeline can ingest: every line carries timestamp, level, event and logger, and
an `action` line's evidence keeps each key's JSON type across every kind of action of
every watcher (Elasticsearch's dynamic mapping rejects a field that changes type)."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import structlog

from tests.unit import test_autoheal_decide as heal
from tests.unit import test_budget as budget
from tests.unit import test_distress_decide as distress
from watchers.autoheal.decide import decide as heal_decide
from watchers.distress.decide import StuckCase
from watchers.distress.decide import decide as distress_decide
from watchers.logs import configure_logging
from watchers.metrics import WATCHER_ACTIONS
from watchers.model import Action, Observation, Outcome, Result, Verdict
from watchers.runner import action_fields


def every_kind_of_action() -> list[Action]:
    """At least one action of every kind each watcher writes."""
    zombie = Observation(Verdict.ZOMBIE, "zombie", exit_code=0)
    limited = Observation(Verdict.ZOMBIE, "zombie", exit_code=75)
    dead = heal.running("t_00000001")
    clean = heal.running("t_00000002")
    quota = heal.running("t_00000003")
    orphan = heal.running("t_00000004", worker_pid=None)
    actions = heal_decide(
        heal.snap(
            dead,
            clean,
            quota,
            orphan,
            obs={dead.task_id: heal.GONE, clean.task_id: zombie, quota.task_id: limited},
        ),
        heal.S.model_copy(update={"guard_min_tasks": 10}),
        heal.NOW,
    )
    infra = "pid 13 killed by signal 9"
    actions += heal_decide(
        heal.snap(gave_up=[heal.gave_up(infra, at=heal.NOW - 3600)]), heal.S, heal.NOW
    )
    resets = tuple(int(heal.NOW - 600 * i) for i in range(1, 4))
    actions += heal_decide(
        heal.snap(gave_up=[heal.gave_up(infra, resets=resets)]), heal.S, heal.NOW
    )
    actions += distress_decide(distress.snap(distress.case()), distress.S, distress.NOW)
    stuck = StuckCase(
        distress.source(status="running"), distress.NOW - 1300, "alive", 4242, "h:1", distress.NOW
    )
    actions += distress_decide(distress.snap(stuck=[stuck]), distress.S, distress.NOW)
    actions += budget.run(budget.task(attempt_started_at=budget.NOW - 850))
    actions += budget.run(budget.task(attempt_started_at=budget.NOW - 1200))
    return actions


def _paths(value: Any, prefix: str) -> list[tuple[str, str]]:
    """(dotted path, JSON type) of every leaf; list items share their list's path."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _paths(v, f"{prefix}.{k}")]
    if isinstance(value, list):
        return [(prefix, "array")] + [p for v in value for p in _paths(v, f"{prefix}[]")]
    kind = {bool: "boolean", int: "number", float: "number", str: "string"}.get(type(value))
    return [(prefix, kind or ("null" if value is None else type(value).__name__))]


def test_every_action_field_keeps_one_type_across_every_kind_of_action():
    actions = every_kind_of_action()
    kinds = {(a.watcher, a.kind) for a in actions}
    assert len(kinds) >= 7, kinds  # reap, reclaim, reset, escalate, reassign, card, warn...
    possible = {(w, k) for w, ks in WATCHER_ACTIONS.items() for k in ks}
    assert kinds <= possible  # what the metric exports covers what the watchers do
    seen: dict[str, set[str]] = {}
    for action in actions:
        record = json.loads(json.dumps(action_fields(Outcome(action, Result.APPLIED)), default=str))
        for path, kind in _paths(record, ""):
            if kind != "null":  # null is no type of its own to a mapping
                seen.setdefault(path, set()).add(kind)
    mixed = {path: kinds for path, kinds in seen.items() if len(kinds) > 1}
    assert mixed == {}


def test_every_line_has_timestamp_level_event_and_logger():
    """The daemon's own lines and a library's (APScheduler logs through stdlib)."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        structlog.get_logger("watchers.daemon").info("started", pid=1)
        logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed")
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
    finally:
        configure_logging()
    assert [(line["event"], line["logger"], line["level"]) for line in lines] == [
        ("started", "watchers.daemon", "info"),
        ("Run time of job was missed", "apscheduler.scheduler", "warning"),
    ]
    assert all(line["timestamp"].endswith("Z") for line in lines)
