"""The whole builder: everyday tasks (done, archived, waiting, running, blocked by hand)
and the auto-heal history (Hermes's give-ups, resets and escalations), over the
distress and budget histories."""

from __future__ import annotations

from bench.board.budget import BudgetHistory
from bench.board.distress import SIGNAL_WINDOW_S, DistressHistory
from bench.board.profiles import PROFILES
from bench.board.rows import LOREM
from bench.targets import BUDGET_BLOCKER, CLAIM_BACKDATE_S


class BoardBuilder(DistressHistory, BudgetHistory):
    """One task of each shape per call; `build_board` decides the mix."""

    def finished(self, archived: bool) -> None:
        rng, now = self.rng, self.now
        tid = self.task_id()
        profile = rng.choice(PROFILES)
        created = now - rng.randrange(6 * 3600, 30 * 86400)
        self.event(tid, "created", {"assignee": profile, "status": "ready", "parents": []}, created)
        t = created + rng.randrange(10, 3600)
        first = t
        for _ in range(rng.choices((0, 1, 2), weights=(80, 15, 5))[0]):
            end, kind, _ = self.failed_attempt(tid, profile, t)
            t = end + (300 if kind == "rate_limited" else rng.randrange(5, 600))
        end = self.attempt(tid, profile, t, "completed")
        if rng.random() < 0.1:
            self.comment(tid, rng.choice(("user", profile)), LOREM[: rng.randrange(20, 300)], end)
        if archived:
            self.event(tid, "archived", None, min(end + rng.randrange(60, 86400), now - 60))
        result = "Result: " + LOREM[: rng.randrange(40, 400)]
        self.add_task(
            tid,
            "archived" if archived else "done",
            created,
            assignee=profile,
            started=first,
            completed=end,
            result=result,
        )

    def waiting(self, status: str) -> str:
        rng, now = self.rng, self.now
        tid = self.task_id()
        profile = None if status == "triage" else rng.choice(PROFILES)
        failed_before = status == "ready" and rng.random() < 0.3
        created = now - rng.randrange(7200 if failed_before else 60, 3 * 86400)
        self.event(tid, "created", {"assignee": profile, "status": status, "parents": []}, created)
        failures, last_error, started = 0, None, None
        if failed_before and profile:
            start = created + rng.randrange(10, 600)
            started = start
            end, kind, error = self.failed_attempt(tid, profile, start)
            if kind not in {"rate_limited", "reclaimed"}:
                failures = 1
            if kind != "reclaimed":
                last_error = error
            if kind == "rate_limited" and end >= now - SIGNAL_WINDOW_S - 3600:
                # the distress watcher answered it: moved to a profile on another provider
                to = self.fallback(profile, "rate_limited")
                self.reassign(tid, profile, to, "rate_limited", end, end + rng.randrange(3, 40), 1)
                profile, last_error = to, None
        lines = self.budget_lines(running=False) if self.rng.random() < 0.08 else []
        self.add_task(
            tid,
            status,
            created,
            assignee=profile,
            started=started,
            failures=failures,
            last_error=last_error,
            body=self.body(*lines) if lines else None,
        )
        self.bstats["open_with_budget_lines"] += bool(lines)
        return tid

    def todo(self, parent: str) -> None:
        rng, now = self.rng, self.now
        tid = self.task_id()
        profile = rng.choice(PROFILES)
        created = now - rng.randrange(60, 86400)
        self.event(
            tid, "created", {"assignee": profile, "status": "todo", "parents": [parent]}, created
        )
        self.links.append((parent, tid))
        self.add_task(tid, "todo", created, assignee=profile)

    def to_run(self) -> None:
        """Created ready; the demo dispatcher claims it later (as Hermes would). About a
        third carry budgets (body lines, Hermes's `goal_max_turns`); those with an
        iteration budget get heartbeats in their attempt, below 80 % of it."""
        rng, now = self.rng, self.now
        tid = self.task_id()
        profile = rng.choice(PROFILES)
        created = now - rng.randrange(CLAIM_BACKDATE_S + 60, 7200)
        self.event(tid, "created", {"assignee": profile, "status": "ready", "parents": []}, created)
        lines = self.budget_lines(running=True) if rng.random() < 0.3 else []
        turns = rng.choice((30, 50)) if rng.random() < 0.05 else None
        iterations = turns or next(
            (int(x.rsplit(":", 1)[1]) for x in lines if "Iteration" in x), None
        )
        if iterations:
            # one heartbeat comes from start_running; at most 60 % of the budget (the
            # warning is at 80 %)
            self.heartbeat_plan[tid] = rng.randrange(0, min(25, int(0.6 * iterations)))
            self.bstats["running_with_iteration_budget"] += 1
        self.bstats["running_with_budget_lines"] += bool(lines)
        self.bstats["running_with_goal_max_turns"] += bool(turns)
        self.add_task(
            tid,
            "ready",
            created,
            assignee=profile,
            body=self.body(*lines) if lines else None,
            goal_max_turns=turns,
        )
        self.running_ids.append(tid)

    def blocked_by_hand(self) -> None:
        rng, now = self.rng, self.now
        tid = self.task_id()
        profile = rng.choice(PROFILES)
        created = now - rng.randrange(3600, 7 * 86400)
        self.event(tid, "created", {"assignee": profile, "status": "ready", "parents": []}, created)
        start = created + rng.randrange(10, 600)
        end = self.attempt(tid, profile, start, "blocked")
        kind = rng.choice(("needs_input", "dependency", "capability"))
        self.event(tid, "blocked", {"reason": "needs a decision", "kind": kind}, end)
        self.comment(tid, profile, "Blocked: " + LOREM[: rng.randrange(40, 200)], end)
        self.add_task(tid, "blocked", created, assignee=profile, started=start, block_kind=kind)

    def gave_up_task_caused(self) -> None:
        """Hermes's breaker after two `exited with code 1` crashes: never reset."""
        rng, now = self.rng, self.now
        tid = self.task_id()
        profile = rng.choice(PROFILES)
        created = now - rng.randrange(7200, 2 * 86400)
        self.event(tid, "created", {"assignee": profile, "status": "ready", "parents": []}, created)
        t = created + rng.randrange(10, 600)
        first = t
        error = ""
        for _ in range(2):
            pid = rng.randrange(2000, 4_000_000)
            error = f"pid {pid} exited with code 1"
            end = self.attempt(tid, profile, t, "crashed", error=error, pid=pid)
            t = end + rng.randrange(5, 120)
        self._hermes_gave_up(tid, error, end)
        self.add_task(
            tid,
            "blocked",
            created,
            assignee=profile,
            started=first,
            failures=2,
            last_error=error,
        )

    def gave_up_infra_escalated(self) -> None:
        """Infrastructure crash loop (`killed by signal 9`) that auto-heal already reset
        three times within 24 h and then escalated: the correct action now is none."""
        rng, now = self.rng, self.now
        tid, title = self.task_id(), self.title()
        profile = rng.choice(PROFILES)
        created = now - rng.randrange(20 * 3600, 22 * 3600)
        self.event(tid, "created", {"assignee": profile, "status": "ready", "parents": []}, created)
        t = created + rng.randrange(600, 1800)  # first crash cycle starts < 21.5 h ago
        first = t
        error = ""
        crashes: list[tuple[int, int]] = []  # (attempt start, end)
        for cycle in range(4):
            for _ in range(2):
                pid = rng.randrange(2000, 4_000_000)
                error = f"pid {pid} killed by signal 9"
                start = t
                end = self.attempt(tid, profile, t, "crashed", error=error, pid=pid)
                crashes.append((start, end))
                t = end + rng.randrange(5, 60)
            gave_up = self._hermes_gave_up(tid, error, end)
            if cycle < 3:
                t = end + 60 * 2**cycle
                self.event(
                    tid,
                    "unblocked",
                    {
                        "by": "watchers",
                        "reset": cycle + 1,
                        "status": "ready",
                        "reason": "infra_crash_loop",
                        "gave_up_event_id": gave_up,
                        "evidence": {"resets_in_window": cycle},
                    },
                    t,
                )
                self.comment(
                    tid, "watchers", f"kanban-watchers reset this task (reset {cycle + 1})", t
                )
                t += rng.randrange(5, 120)
            else:
                t = end + rng.randrange(1, 30)
                self.event(
                    tid,
                    "escalated",
                    {
                        "by": "watchers",
                        "reason": "reset_limit",
                        "gave_up_event_id": gave_up,
                        "evidence": {"max_resets": 3},
                    },
                    t,
                )
                self.comment(tid, "watchers", "kanban-watchers: the environment needs a person", t)
        if t > now - 600:
            raise RuntimeError("escalated history reaches into the last 10 minutes")
        # The budget watcher's card: opened at the third identical crash (repeated
        # failure); still open, or closed by the orchestrator after the escalation.
        done = rng.random() < 0.25 and t + 3000 < now
        self.card(
            tid,
            title,
            profile,
            BUDGET_BLOCKER,
            crashes[2][1] + rng.randrange(5, 70),
            done=done,
            work_at=t + rng.randrange(60, 600) if done else None,
            needs=f"split {tid} into narrower tasks (repeated failure)",
            evidence={
                "reason_class": "repeated_failure",
                "count": 3,
                "error": error,
                "watcher": "budget",
                "since": crashes[2][0],
            },
        )
        self.bstats[
            "escalated_with_budget_card_done" if done else "escalated_with_budget_card"
        ] += 1
        self.add_task(
            tid,
            "blocked",
            created,
            assignee=profile,
            started=first,
            failures=2,
            last_error=error,
            title=title,
        )
