"""A provider that throttles two tasks cools: status shows it, and no work is routed there."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.interop.conftest import DistressCli
from tests.interop.interop_harness import (
    HermesBoard,
    anthropic,
    provider_model,
    write_profile,
)

ROUTING = """
[distress]
cooldown_min_tasks = 2

[profiles.coder-c]
fallbacks = ["coder-a", "coder-b"]
"""


@pytest.mark.interop
def test_a_provider_throttling_two_tasks_cools_and_gets_no_rerouted_work(
    hermes_home: Path, hermes_board: HermesBoard, distress: DistressCli
) -> None:
    """Anthropic cools after two coder-a quota walls; coder-c's task skips coder-a for coder-b."""
    write_profile(hermes_home, "coder-a", anthropic())
    write_profile(hermes_home, "coder-b", provider_model("openai"))
    write_profile(hermes_home, "coder-c", provider_model("google"))
    cli = distress(ROUTING)
    [idle] = cli.status(hermes_board.path)
    assert {p["provider"]: p["cooling"] for p in idle["providers"]} == {
        "anthropic": False,
        "google": False,
        "openai": False,
    }
    first = hermes_board.create("first", assignee="coder-a")
    second = hermes_board.create("second", assignee="coder-a")
    third = hermes_board.create("third", assignee="coder-c")
    hermes_board.rate_limit([first, second, third])
    now = time.time()

    [status] = cli.status(hermes_board.path)

    providers = {p["provider"]: p for p in status["providers"]}
    assert {name: p["cooling"] for name, p in providers.items()} == {
        "anthropic": True,
        "google": False,  # one task, one signal: not enough
        "openai": False,
    }
    assert now < providers["anthropic"]["eligible_at"] <= now + 300 + 1
    assert providers["anthropic"]["episode"] == 1
    assert "2 task(s)" in providers["anthropic"]["reason"]

    records = {r["task_id"]: r for r in cli.once(hermes_board.path)}

    assert (records[third]["action"], records[third]["applied"]) == ("reassign", True)
    assert records[third]["evidence"]["route"] == [
        {
            "profile": "coder-a",
            "provider": "anthropic",
            "eligible": False,
            "why": "provider cooling",
        },
        {"profile": "coder-b", "provider": "openai", "eligible": True, "why": None},
    ]
    assert hermes_board.task(third).assignee == "coder-b"
    # coder-a has no fallbacks: its two tasks go to the orchestrator, naming the cooldown
    for task_id in (first, second):
        assert (records[task_id]["action"], records[task_id]["applied"]) == ("card", True)
        assert records[task_id]["evidence"]["provider_cooldown"].startswith("cooling until")
        assert hermes_board.task(task_id).assignee == "coder-a"
