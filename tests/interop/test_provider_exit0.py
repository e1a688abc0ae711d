"""A worker that exits 0 right after a provider error: a rate limit or a refused key, not a
protocol violation — whether watchers reaps it or Hermes booked it first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.conftest import DistressCli
from tests.interop.interop_harness import (
    HermesBoard,
    WatchersCli,
    anthropic,
    provider_model,
    write_profile,
)

pytestmark = pytest.mark.interop


def says_then_exits_0(log: Path, line: str) -> str:
    """A worker script: waits for its stdin to close, writes `line` to its Hermes worker
    log (where Hermes's own spawn sends a worker's output), exits 0."""
    return (
        "import sys; sys.stdin.read(); "
        f"f = open({str(log)!r}, 'a'); f.write('working...\\n' + {line!r} + '\\n'); f.close(); "
        "sys.exit(0)"
    )


def worker_log(hermes_home: Path, task_id: str) -> Path:
    """Hermes's worker log of a task on the default board."""
    logs = hermes_home / "kanban" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"{task_id}.log"


def test_exit_0_after_a_429_is_booked_as_a_rate_limit_not_a_protocol_violation(
    hermes_home: Path, hermes_board: HermesBoard, watchers: WatchersCli
) -> None:
    """Back to ready, no failure counted, no violation streak; the run says 429 in Hermes's terms."""
    task_id = hermes_board.create("quota wall")
    hermes_board.scripts[task_id] = says_then_exits_0(
        worker_log(hermes_home, task_id),
        "openai.RateLimitError: Error code: 429 - Too Many Requests",
    )
    assert hermes_board.dispatch() == [task_id]
    hermes_board.let_exit(task_id)

    [action] = watchers.once(hermes_board.path)

    assert (action["task_id"], action["applied"]) == (task_id, True)
    assert action["evidence"]["provider_error"]["signal"] == "rate_limited"
    task = hermes_board.task(task_id)
    assert (task.status, task.consecutive_failures) == ("ready", 0)
    [run] = hermes_board.runs(task_id)
    assert run.outcome == "rate_limited" and run.error is not None and "429" in run.error
    assert hermes_board.events(task_id, "protocol_violation") == []
    [event] = hermes_board.events(task_id, "rate_limited")
    assert event.payload["by"] == "watchers" and event.payload["provider_error"] == "rate_limited"


def test_exit_0_that_hermes_booked_as_a_violation_is_routed_as_the_rate_limit_it_was(
    hermes_home: Path, hermes_board: HermesBoard, distress: DistressCli
) -> None:
    """Hermes reaps first (protocol violation); distress reads the worker's last words and
    moves the task to a profile on another provider."""
    write_profile(hermes_home, "coder-a", anthropic())
    write_profile(hermes_home, "coder-b", provider_model("openai"))
    cli = distress('[profiles.coder-a]\nfallbacks = ["coder-b"]\n')
    task_id = hermes_board.create("quota wall, booked by Hermes", assignee="coder-a")
    hermes_board.scripts[task_id] = says_then_exits_0(
        worker_log(hermes_home, task_id), "anthropic.RateLimitError: 429 rate_limit_error"
    )
    assert hermes_board.dispatch() == [task_id]
    hermes_board.let_exit(task_id)
    assert hermes_board.record_crashes() == [task_id]  # Hermes: a protocol violation
    [violation] = hermes_board.events(task_id, "protocol_violation")
    assert violation.payload["protocol_violation"] is True

    [record] = cli.once(hermes_board.path)

    assert (record["task_id"], record["action"], record["reason"], record["applied"]) == (
        task_id,
        "reassign",
        "rate_limited",
        True,
    )
    assert hermes_board.task(task_id).assignee == "coder-b"
