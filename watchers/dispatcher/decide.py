"""Is Hermes's dispatcher stalled on a board? Pure: a DispatchState, settings and `now` in,
a Stall (or None) out. No SQL, no clock, no /proc.

A stall: dispatchable ready work has waited longer than `stall_seconds`, and no claim at
all happened on the board for that long. A board whose ready work is all held back (no
profile to run it, a cap the board's config sets) is not stalled: Hermes is doing what it
was told. A claim of anything, however recent the ready work, means the dispatcher runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from watchers.dispatcher.observe import DispatchState
from watchers.settings import DispatcherSettings

DEADLINE_SLACK_SECONDS = 1.0
"""A deadline falls this long after the boundary: board times are whole seconds, and a
wait must be longer than `stall_seconds`, not equal to it."""


@dataclass(frozen=True, slots=True)
class Stall:
    """What a stalled dispatcher leaves behind on a board."""

    board: str
    dispatchable: int  # ready tasks Hermes would spawn now
    ready: int
    oldest_task: str
    waiting_since: int
    waiting_seconds: float
    last_claim_at: int | None  # None: the board never had a claim


def stalled(state: DispatchState, settings: DispatcherSettings, now: float) -> Stall | None:
    """The stall on this board now, or None. A state whose waits were not looked up
    (`exact` false) never makes a stall: it was read only because a claim was recent."""
    if state.dispatchable == 0 or state.oldest_since is None or state.oldest_task is None:
        return None
    if not state.exact:
        return None
    limit = settings.stall_seconds
    waited = now - state.oldest_since
    if waited <= limit:
        return None
    if state.last_claim_at is not None and now - state.last_claim_at <= limit:
        return None
    return Stall(
        board=state.board,
        dispatchable=state.dispatchable,
        ready=state.ready,
        oldest_task=state.oldest_task,
        waiting_since=state.oldest_since,
        waiting_seconds=waited,
        last_claim_at=state.last_claim_at,
    )


def next_deadline(state: DispatchState, settings: DispatcherSettings, now: float) -> float | None:
    """When this board, with no write in between, would next need a look: when the oldest
    dispatchable wait and the time since the last claim both pass `stall_seconds`. None
    when nothing is dispatchable (new ready work is a write: the board's version changes)
    or the board is stalled already (a claim ending it is a write too). After a recent
    claim (nothing else read), that is when the claim is `stall_seconds` old."""
    limit = settings.stall_seconds
    if not state.exact and state.last_claim_at is not None:
        return max(state.last_claim_at + limit + DEADLINE_SLACK_SECONDS, now)
    if state.dispatchable == 0 or state.oldest_since is None:
        return None
    if stalled(state, settings, now) is not None:
        return None
    due = state.oldest_since + limit
    if state.last_claim_at is not None:
        due = max(due, state.last_claim_at + limit)
    return max(due + DEADLINE_SLACK_SECONDS, now)
