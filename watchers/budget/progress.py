"""Is a running attempt getting anywhere? Alive and heartbeating proves nothing: Hermes
counts any activity as a heartbeat, and a worker that loops keeps beating.

Progress is, per attempt: an event on its task other than a heartbeat (a comment, an
edit, a claim of a subtask…; not the daemon's own), a heartbeat whose note differs from
the last one, or a change in its workspace (git HEAD, the diff's stat against it, the
untracked files). Events and notes are followed as they arrive; the workspace is read
only when the attempt first shows up (a baseline) and when it is due (the time since the
last sign of progress reached `no_progress_seconds`), so nothing is read while nothing
changes. A workspace that is not a git repository counts only events and notes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from watchers.model import RunningTask
from watchers.settings import Settings
from watchers.store.board import AUTHOR, EventRow

WORK_KINDS = ("commented", "linked", "unlinked")
"""Events a worker writes as it works, followed only as signs of progress."""
NOT_PROGRESS = frozenset({"heartbeat", "claim_extended", "claimed", "spawned"})
"""Events on a running task that say nothing about its work (the heartbeat is judged by
its note; claims and spawns start the attempt)."""
BASELINES_PER_PASS = 20
"""Workspaces read for a first baseline in one pass at most (a thousand claims at once
are spread over passes; an attempt not yet baselined counts events and notes only)."""
LOOKUPS_PER_PASS = 500
"""Attempts whose workspace path is looked up in one pass at most."""
NOTE_KEPT = 200
RECHECK_SECONDS = 300.0
"""A stalled attempt's workspace is read again at most this often."""

Fingerprint = Callable[[str | None], tuple[str, str] | None]
"""A workspace's (digest, summary), or None when it is not a repository."""


@dataclass(slots=True)
class Attempt:
    run_id: int | None
    since: float  # the last sign of progress (the attempt's start at first)
    what: str  # what that sign was
    beats: int = 0  # heartbeats since `since`
    note: str | None = None  # the last heartbeat note
    workspace: str | None = None
    digest: str | None = None  # None: not read yet, or not a repository
    summary: str | None = None
    repo: bool | None = None  # None: not read yet
    checked_at: float | None = None  # the last reading since it became due


@dataclass(frozen=True, slots=True)
class Stall:
    """A running attempt with no sign of progress for at least its limit."""

    since: float
    beats: int
    watched: tuple[str, ...]
    last_progress: str
    workspace: str | None


class ProgressTracker:
    def __init__(self) -> None:
        self.attempts: dict[str, Attempt] = {}  # by task id: its running attempt
        self.started: float | None = None  # the first look

    def event(self, ev: EventRow) -> None:
        """An event of the board, in order."""
        attempt = self.attempts.get(ev.task_id)
        if attempt is None or (ev.run_id is not None and ev.run_id != attempt.run_id):
            return
        if ev.payload.get("by") == AUTHOR:
            return  # the daemon's own notes are not the worker's progress
        if ev.kind == "heartbeat":
            attempt.beats += 1
            note = ev.payload.get("note")
            note = note[:NOTE_KEPT] if isinstance(note, str) and note.strip() else None
            if note is not None and note != attempt.note:
                attempt.note = note
                self._moved(attempt, ev.created_at, "a heartbeat with a new note")
            return
        if ev.kind not in NOT_PROGRESS:
            self._moved(attempt, ev.created_at, f"a {ev.kind} event")

    @staticmethod
    def _moved(attempt: Attempt, at: float, what: str) -> None:
        if at >= int(attempt.since):  # board times are whole seconds
            attempt.since = max(attempt.since, float(at))
            attempt.what, attempt.beats = what, 0

    def sync(self, running: list[RunningTask], now: float) -> None:
        """Start following new attempts and forget ended ones. Attempts already running
        when the daemon first looked are watched from then (what came before is unknown)."""
        if self.started is None:
            self.started = now
        live = {t.task_id: t for t in running}
        for task_id in [t for t in self.attempts if t not in live]:
            del self.attempts[task_id]
        for task_id, t in live.items():
            a = self.attempts.get(task_id)
            if a is None or a.run_id != t.current_run_id:
                started = max(float(t.attempt_started_at or now), self.started)
                self.attempts[task_id] = Attempt(t.current_run_id, started, "the attempt's start")

    def needing_baseline(self) -> list[str]:
        """Attempts whose workspace was not read yet (at most LOOKUPS_PER_PASS)."""
        return [t for t, a in self.attempts.items() if a.repo is None][:LOOKUPS_PER_PASS]

    def baseline(self, workspaces: dict[str, str | None], fingerprint: Fingerprint) -> None:
        """Read each attempt's workspace once, to compare with when it is due (at most
        BASELINES_PER_PASS readings; the rest wait for the next pass)."""
        read = 0
        for task_id, path in workspaces.items():
            a = self.attempts.get(task_id)
            if a is None or a.repo is not None:
                continue
            if path:
                if read >= BASELINES_PER_PASS:
                    continue
                read += 1
            a.workspace = path
            found = fingerprint(path) if path else None
            a.repo = found is not None
            if found is not None:
                a.digest, a.summary = found

    def stalls(
        self, limit_of: Callable[[str], float | None], fingerprint: Fingerprint, now: float
    ) -> dict[str, Stall]:
        """Attempts with no sign of progress for their limit (None: not watched). A
        workspace that changed since its last reading is progress, found now; a stalled
        one is read again at most every RECHECK_SECONDS."""
        out: dict[str, Stall] = {}
        for task_id, a in self.attempts.items():
            limit = limit_of(task_id)
            if limit is None or now - a.since < limit:
                continue
            if a.repo and (a.checked_at is None or now - a.checked_at >= RECHECK_SECONDS):
                a.checked_at = now
                found = fingerprint(a.workspace)
                if found is not None and found[0] != a.digest:
                    a.digest, a.summary = found
                    self._moved(a, now, "a change in its workspace")
                    continue
            watched = ("events", "heartbeat notes") + (
                ("workspace (git HEAD, diff --stat, untracked files)",) if a.repo else ()
            )
            out[task_id] = Stall(
                since=a.since,
                beats=a.beats,
                watched=watched,
                last_progress=a.what,
                workspace=a.summary if a.repo else None,
            )
        return out

    def next_due(self, limit_of: Callable[[str], float | None], now: float) -> float | None:
        """When the next attempt will have shown no progress for its limit."""
        due = [
            a.since + limit
            for task_id, a in self.attempts.items()
            if (limit := limit_of(task_id)) is not None and a.since + limit > now
        ]
        return min(due) if due else None


def no_progress_limit(assignee: str | None, s: Settings) -> tuple[float, str] | None:
    """`no_progress_seconds` for the assignee's profile, else the global one, and where it
    came from; None when neither is set (not watched)."""
    profile = s.profiles.get(assignee or "")
    if profile is not None and profile.no_progress_seconds is not None:
        return profile.no_progress_seconds, f"profile:{assignee}"
    if s.budget.no_progress_seconds is not None:
        return s.budget.no_progress_seconds, "global"
    return None
