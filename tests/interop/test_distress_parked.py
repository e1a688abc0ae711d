"""A task Hermes's respawn guard parks for good gets a card listing the deferrals."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.conftest import DistressCli
from tests.interop.interop_harness import HermesBoard, anthropic, write_profile

pytestmark = pytest.mark.interop


def test_a_task_the_respawn_guard_defers_for_an_hour_gets_an_env_blocker_card(
    hermes_home: Path, hermes_board: HermesBoard, distress: DistressCli
) -> None:
    """Hermes 0.19 defers it every tick (`blocker_auth`: an auth error in its last failure,
    and no failure is ever counted); backdated past `parked_seconds`, distress cards it."""
    write_profile(hermes_home, "coder-a", anthropic())
    cli = distress()
    task_id = hermes_board.create("call the billing API", assignee="coder-a")
    with hermes_board.connect() as conn:  # as an earlier attempt of it left it
        conn.execute(
            "UPDATE tasks SET last_failure_error = ? WHERE id = ?",
            ("HTTP 403 Forbidden: access denied for this key", task_id),
        )
    for _ in range(3):
        assert hermes_board.dispatch() == []  # deferred, not spawned
    guarded = hermes_board.events(task_id, "respawn_guarded")
    assert [e.payload["reason"] for e in guarded] == ["blocker_auth"] * 3
    assert cli.once(hermes_board.path) == []  # deferred, but not for long yet

    with hermes_board.connect() as conn:  # the same three deferrals, two hours ago
        conn.execute(
            "UPDATE task_events SET created_at = created_at - 7200 "
            "WHERE task_id = ? AND kind = 'respawn_guarded'",
            (task_id,),
        )
    fresh = distress()  # a daemon that reads the board's history anew

    [record] = fresh.once(hermes_board.path)

    assert (record["task_id"], record["action"], record["reason"], record["applied"]) == (
        task_id,
        "card",
        "parked",
        True,
    )
    evidence = record["evidence"]
    assert (evidence["deferrals"], evidence["by_reason"]) == (3, {"blocker_auth": 3})
    [card] = hermes_board.tasks_titled(f"[BLOCKED] {task_id} env_blocker")
    assert card.body is not None and "blocker_auth" in card.body
    assert hermes_board.parents(task_id) == [card.id]
    assert fresh.once(hermes_board.path) == []  # one card per episode
