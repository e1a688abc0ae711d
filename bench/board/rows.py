"""The board's rows before they are written, and the shapes every history uses: a task
row, a closed attempt with its events, a failed attempt, a `[BLOCKED]` card, Hermes's
give-up."""

from __future__ import annotations

import json
import random
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.board.profiles import MODELS, ORCHESTRATOR
from bench.targets import BUDGET_BLOCKER

CARD_PRIORITY = 10  # distress.card_priority (default)
HOST = socket.gethostname()
RANDOM_RUNTIME = -1  # add_task: draw max_runtime_seconds (Hermes's time budget) at random

LOREM = (
    "Investigate the failing integration and write down what changed since the last "
    "green build. Check the provider quota, the worktree state and the recent commits. "
    "Summarise the findings in the task result, link the PR, and hand the follow-ups to "
    "the reviewer profile. Keep the change small; prefer a revert when the cause is not "
    "clear within the hour. Attach logs when they are shorter than a page. "
) * 6


class Ref:
    """A row whose integer id is assigned after all rows are sorted by time."""

    __slots__ = ("id",)

    def __init__(self) -> None:
        self.id = 0


@dataclass
class Rows:
    """Tasks, runs, events, comments and links as drawn; ids of runs and events are
    assigned once all are sorted by time (`Ref`)."""

    rng: random.Random
    now: int
    tasks: list[tuple[Any, ...]] = field(default_factory=list)
    runs: list[tuple[int, int, Ref, tuple[Any, ...]]] = field(default_factory=list)
    events: list[tuple[int, int, Ref, str, Ref | None, str, Any]] = field(default_factory=list)
    comments: list[tuple[str, str, str, int]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    running_ids: list[str] = field(default_factory=list)
    dstats: Counter[str] = field(default_factory=Counter)
    bstats: Counter[str] = field(default_factory=Counter)
    heartbeat_plan: dict[str, int] = field(default_factory=dict)  # running: extra beats
    last_run: Ref | None = None
    seq: int = 0
    _ids: set[str] = field(default_factory=set)

    # ids and rows

    def title(self) -> str:
        rng = self.rng
        return (
            f"{rng.choice(('Fix', 'Write', 'Review', 'Research', 'Refactor'))} "
            f"{rng.choice(('the parser', 'docs for X', 'flaky test', 'billing', 'CI'))} "
            f"#{rng.randrange(10000)}"
        )

    def body(self, *budget_lines: str) -> str:
        off = self.rng.randrange(0, 1500)
        text = LOREM[off : off + self.rng.randrange(80, 700)]
        return text + "\n\n" + "\n".join(budget_lines) + "\n" if budget_lines else text

    def task_id(self) -> str:
        for _ in range(1000):
            tid = f"t_{self.rng.getrandbits(32):08x}"
            if tid not in self._ids:
                self._ids.add(tid)
                return tid
        raise RuntimeError("could not draw a fresh task id")

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def event(self, task_id: str, kind: str, payload: Any, at: int, run: Ref | None = None) -> Ref:
        ref = Ref()
        self.events.append((at, self._next(), ref, task_id, run, kind, payload))
        return ref

    def comment(self, task_id: str, author: str, body: str, at: int) -> None:
        self.comments.append((task_id, author, body, at))
        self.event(task_id, "commented", {"author": author, "len": len(body)}, at)

    def add_task(
        self,
        tid: str,
        status: str,
        created: int,
        *,
        assignee: str | None,
        started: int | None = None,
        completed: int | None = None,
        failures: int = 0,
        last_error: str | None = None,
        result: str | None = None,
        block_kind: str | None = None,
        max_retries: int | None = None,
        title: str | None = None,
        body: str | None = None,
        priority: int | None = None,
        created_by: str | None = None,
        max_runtime: int | None = RANDOM_RUNTIME,
        goal_max_turns: int | None = None,
        block_recurrences: int = 0,
    ) -> None:
        rng = self.rng
        if body is None:
            body = self.body()
        ws = "worktree" if rng.random() < 0.3 else "scratch"
        self.tasks.append(
            (
                tid,
                title or self.title(),
                body,
                assignee,
                status,
                rng.choice((0, 0, 0, 1, 2)) if priority is None else priority,
                created_by or rng.choice(("user", "orchestrator", "user")),
                created,
                started,
                completed,
                ws,
                f"/home/u/work/{tid}" if ws == "worktree" else None,
                f"kanban/{tid}" if ws == "worktree" else None,
                None,  # claim_lock
                None,  # claim_expires
                None,  # tenant
                result,
                f"idem-{tid}" if rng.random() < 0.1 else None,
                failures,
                None,  # worker_pid
                last_error,
                rng.choice((None, None, 3600, 7200))
                if max_runtime == RANDOM_RUNTIME
                else max_runtime,
                None,  # last_heartbeat_at
                None,  # current_run_id
                None,  # skills
                None,  # model_override
                max_retries,
                0,  # goal_mode
                None,  # session_id
                block_kind,
                block_recurrences,
                goal_max_turns,
            )
        )

    def attempt(
        self,
        tid: str,
        profile: str,
        start: int,
        outcome: str,
        *,
        error: str | None = None,
        pid: int | None = None,
        reason: str | None = None,
        duration: int | None = None,
    ) -> int:
        """One closed attempt with its events; returns its end time (`duration` fixes
        it; the attempt's run is `self.last_run` afterwards)."""
        rng = self.rng
        run = self.last_run = Ref()
        pid = pid or rng.randrange(2000, 4_000_000)
        lock = f"{HOST}:{rng.randrange(2000, 60000)}"
        self.event(
            tid, "claimed", {"lock": lock, "expires": start + 900, "run_id": run}, start, run
        )
        t = start
        if outcome != "spawn_failed":
            t += rng.randrange(1, 5)
            self.event(tid, "spawned", {"pid": pid}, t, run)
            for _ in range(rng.randrange(1, 4)):
                t += rng.randrange(30, 400)
                self.event(tid, "heartbeat", None, t, run)
        end = t + rng.randrange(5, 600) if duration is None else start + duration
        if end <= t:
            raise RuntimeError(f"attempt of {tid} ends before its last heartbeat")
        summary = None
        meta: dict[str, Any] = {"pid": pid, "claimer": lock}
        payload: dict[str, Any] = {"pid": pid, "claimer": lock}
        if outcome == "completed":
            summary = "Done: " + LOREM[: rng.randrange(40, 200)]
            payload = {"summary": summary[:120]}
            meta = {}
        elif outcome == "crashed" and error and "signal" in error:
            payload |= {"exit_kind": "signaled", "exit_code": 9}
        elif outcome == "crashed" and error:
            payload |= {"exit_kind": "nonzero_exit", "exit_code": 1}
        elif outcome == "rate_limited":
            payload |= {"exit_code": 75}
        elif outcome == "timed_out":
            payload = {"pid": pid, "elapsed": end - start, "limit": 3600}
        elif outcome == "reclaimed":
            payload = {"reason": "claim_expired", "prev_lock": lock}
        elif outcome == "blocked":
            payload = {"reason": reason or "needs a decision from the requester"}
        self.runs.append(
            (
                start,
                self._next(),
                run,
                (
                    tid,
                    profile,
                    None,  # step_key
                    outcome,  # status
                    None,  # claim_lock (closed runs clear the claim)
                    None,
                    None,
                    None,  # max_runtime_seconds
                    t if outcome != "spawn_failed" else None,
                    start,
                    end,
                    outcome,
                    summary,
                    json.dumps(meta) if meta else None,
                    error,
                ),
            )
        )
        self.event(tid, outcome, payload, end, run)
        return end

    def failed_attempt(self, tid: str, profile: str, start: int) -> tuple[int, str, str]:
        rng = self.rng
        pid = rng.randrange(2000, 4_000_000)
        kind = rng.choices(
            ("crashed", "timed_out", "rate_limited", "reclaimed", "stale", "spawn_failed"),
            weights=(45, 20, 15, 10, 5, 5),
        )[0]
        if kind == "crashed":
            error = (
                f"pid {pid} killed by signal 9"
                if rng.random() < 0.3
                else f"pid {pid} exited with code 1"
            )
        elif kind == "timed_out":
            error = f"elapsed {rng.randrange(3601, 9000)}s > limit 3600s"
        elif kind == "rate_limited":
            error = (
                f"pid {pid} exited rate-limited (quota wall) — requeued without counting a failure"
            )
        elif kind == "reclaimed":
            error = "claim expired"
        elif kind == "stale":
            error = f"no heartbeat for {rng.randrange(3600, 9000)}s"
        else:
            error = "[Errno 11] Resource temporarily unavailable"
        end = self.attempt(tid, profile, start, kind, error=error, pid=pid)
        return end, kind, error

    def card(
        self,
        src: str,
        src_title: str,
        worker: str,
        blocker: str,
        at: int,
        *,
        done: bool,
        by: str = "watchers",
        needs: str | None = None,
        evidence: dict[str, Any] | None = None,
        work_at: int | None = None,
    ) -> int | None:
        """A `[BLOCKED] <src> <blocker>` card linked as the source's parent; a done one was
        worked by the orchestrator. Returns when it was resolved (None: still open)."""
        from watchers.cards import CardFacts, card_title, render_body

        rng = self.rng
        cid = self.task_id()
        title = card_title(src, blocker)
        body = render_body(
            CardFacts(
                source_id=src,
                source_title=src_title,
                worker=worker,
                provider=MODELS[worker][0],
                branch=None,
                workspace=None,
                blocker_type=blocker,
                completed=None,
                cannot_touch=(),
                needs=needs
                or (
                    f"fix or rotate the credentials of profile {worker} or reassign {src}"
                    if blocker == "credential_failure"
                    else f"move {src} to a profile on a provider other than {MODELS[worker][0]}"
                ),
                state="unknown",
                evidence=evidence
                or {"reason_class": blocker, "watcher": by, "tick": f"distress:{at}"},
            )
        )
        self.event(
            cid,
            "created",
            {"assignee": ORCHESTRATOR, "status": "ready", "parents": [], "by": by},
            at,
        )
        self.links.append((cid, src))
        self.event(src, "linked", {"parent": cid, "child": src, "by": by}, at)
        if by == "watchers":
            self.comment(
                src, "watchers", f"kanban-watchers opened {cid} ({title}) for the orchestrator", at
            )
        started = completed = None
        status = "ready"
        if done:
            started = work_at or at + rng.randrange(5, 120)
            completed = self.attempt(cid, ORCHESTRATOR, started, "completed")
            status = "archived" if rng.random() < 0.3 else "done"
            if status == "archived":
                self.event(
                    cid, "archived", None, min(completed + rng.randrange(60, 3600), self.now - 60)
                )
        self.add_task(
            cid,
            status,
            at,
            assignee=ORCHESTRATOR,
            started=started,
            completed=completed,
            result="Reassigned the source; unblocked it." if done else None,
            title=title,
            body=body,
            priority=CARD_PRIORITY,
            created_by=by,
        )
        stats = self.bstats if blocker == BUDGET_BLOCKER else self.dstats
        stats["cards_done" if done else "cards_open"] += 1
        return completed

    def _hermes_gave_up(
        self, tid: str, error: str, at: int, *, failures: int = 2, limit_source: str = "dispatcher"
    ) -> Ref:
        return self.event(
            tid,
            "gave_up",
            {
                "failures": failures,
                "effective_limit": failures,
                "limit_source": limit_source,
                "error": error,
                "trigger_outcome": "crashed",
            },
            at,
        )
