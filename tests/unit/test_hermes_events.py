"""Hermes's event vocabulary and lanes, across releases. Pure."""

from __future__ import annotations

import pytest

from watchers.hermes.events import (
    LANE_EPISODE_KINDS,
    STATE_CHANGE_KINDS,
    STATE_KINDS_0_19,
    STATE_KINDS_NEWER,
    lane_of,
)


def test_a_claim_from_review_is_a_reviewers_attempt():
    """Hermes's `claimed` payload for a review claim names its source status."""
    assert lane_of({"lock": "host:1", "run_id": 3, "source_status": "review"}) == "review"


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"lock": "host:1", "expires": 1, "run_id": 3},  # 0.19's ready claim
        {"source_status": "ready"},
        {"source_status": "done"},  # a status no dispatcher claims from
        {"source_status": "REVIEW"},
        {"source_status": ["review"]},
        {"source_status": {"review": 1}},
    ],
)
def test_anything_else_is_the_ready_lane(payload):
    """Unknown or odd values (agents can write events) never send a task anywhere new."""
    assert lane_of(payload) == "ready"


def test_newer_state_changing_kinds_count_as_state_changes():
    """Review-lane moves and status rewrites end whatever the old state meant."""
    assert set(STATE_KINDS_NEWER) <= set(STATE_CHANGE_KINDS)
    assert set(STATE_KINDS_0_19) <= set(STATE_CHANGE_KINDS)
    assert {"review_requested", "changes_requested", "status", "reconciled"} <= set(
        STATE_CHANGE_KINDS
    )
    assert set(LANE_EPISODE_KINDS) <= set(STATE_KINDS_NEWER)


def test_kinds_that_do_not_change_state_are_not_listed():
    """Heartbeats, comments and kinds no release writes are tolerated, not state changes."""
    for kind in ("heartbeat", "commented", "linked", "model_override_set", "no_such_kind"):
        assert kind not in STATE_CHANGE_KINDS


def test_the_daemon_never_deletes_a_row():
    """Newer boards restrict deleting tasks (a foreign key); no statement of ours deletes."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "watchers"
    deleting = re.compile(r"\bDELETE\s+FROM\b|\bDROP\s+TABLE\b|\bREPLACE\s+INTO\b", re.IGNORECASE)
    found = [
        f"{path.relative_to(package)}:{n}"
        for path in package.rglob("*.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if deleting.search(line)
    ]
    assert found == []
