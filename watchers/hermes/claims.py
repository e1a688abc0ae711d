"""What a Hermes claim says: whose host runs the attempt, and how old the attempt is.

Hermes writes `claim_lock` as `<hostname>:<pid>` of the dispatcher that claimed the
task; only claims of this host (or one of its aliases) can be judged by their PID here.
"""

from __future__ import annotations

from collections.abc import Iterable

from watchers.model import RunningTask


def is_host_local(claim_lock: str | None, host: str, aliases: Iterable[str]) -> bool:
    """A claim `<hostname>:<pid>` is ours when its hostname is this host or an alias."""
    if not claim_lock or ":" not in claim_lock:
        return False
    claim_host = claim_lock.rsplit(":", 1)[0]
    return claim_host == host or claim_host in aliases


def attempt_age(task: RunningTask, now: float) -> float | None:
    if task.attempt_started_at is None:
        return None
    return max(0.0, now - task.attempt_started_at)
