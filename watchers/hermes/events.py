"""Hermes's event vocabulary and the lanes a task is dispatched from. Pure.

Hermes 0.19 dispatches only from `ready`. Newer releases (0.20, 0.21) also dispatch a
reviewer from `review`: the `claimed` event then says `source_status: "review"`, and a
reviewer's crashed, timed-out or reclaimed attempt returns the task to `review`, never to
`ready` (which would run the implementer again).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STATE_KINDS_0_19 = (
    "gave_up",
    "blocked",
    "unblocked",
    "claimed",
    "completed",
    "archived",
    "promoted",
    "reclaimed",
    "crashed",
    "timed_out",
    "rate_limited",
    "spawn_failed",
    "stale",
    "protocol_violation",
    "dependency_wait",
)
"""Event kinds of Hermes 0.19 that record a change of a task's status."""

STATE_KINDS_NEWER = (
    "review_requested",
    "changes_requested",
    "review_reopened",
    "descendant_invalidated",
    "status",
    "reconciled",
    "pr_acceptance",
)
"""Kinds that newer Hermes (0.20, 0.21) writes when it moves a task between statuses."""

STATE_CHANGE_KINDS = STATE_KINDS_0_19 + STATE_KINDS_NEWER
"""Every kind that means a task changed state: after one of these, whatever was decided
on the task's earlier state (a give-up to reset, a signal to answer) is out of date.
Kinds not listed here (and kinds no release known to us writes) are tolerated and do not
count as state changes."""

LANE_EPISODE_KINDS = ("review_requested", "changes_requested", "review_reopened")
"""The task changed lanes (implementation <-> review): the work that follows is another
episode of it, for budgets counted since the last completion."""

READY = "ready"
REVIEW = "review"
LANES = frozenset({READY, REVIEW})


def lane_of(claimed_payload: Mapping[str, Any] | None) -> str:
    """The lane an attempt was claimed from, from its `claimed` event's payload: `review`
    only when the board says so exactly; anything else (0.19's payloads, unknown values
    an agent could have written) is `ready`, as on every board without a review lane."""
    if not claimed_payload:
        return READY
    source = claimed_payload.get("source_status")
    return REVIEW if source == REVIEW else READY
