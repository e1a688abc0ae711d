"""The budget history: over-budget tasks the budget watcher already carded, warnings it
wrote, budget lines it could not read and reported; all answered, so a tick that
follows them has nothing to do."""

from __future__ import annotations

from bench.board.profiles import PROFILES
from bench.board.rows import LOREM, Rows
from bench.targets import BUDGET_BLOCKER, WARN_FRACTION


class BudgetHistory(Rows):
    """Budget lines, overruns with their cards, warnings, malformed lines."""

    def budget_lines(self, *, running: bool) -> list[str]:
        """`<Kind> budget: <value>` body lines, generous enough that the task stays
        under 80 % of each (running attempts here are about a minute old)."""
        rng = self.rng
        lines = []
        if rng.random() < 0.6:
            lines.append(f"Time budget: {rng.choice(('45m', '90m', '1h30m', '2h', '3h'))}")
        if running and rng.random() < 0.5:
            lines.append(f"{rng.choice(('', '- '))}Iteration budget: {rng.choice((40, 60, 200))}")
        if rng.random() < 0.4 or not lines:
            lines.append(f"Attempt budget: {rng.choice((3, 4))}")
        return lines

    def budget_card(
        self, tid: str, title: str, profile: str, reason: str, at: int, since: int, *, done: bool
    ) -> None:
        """The budget watcher's `[BLOCKED] <id> iteration_budget` card, opened a tick
        after the overrun; a done one was closed by the orchestrator within hours."""
        rng = self.rng
        work_at = at + rng.randrange(300, 4 * 3600) if done else None
        if work_at is not None and work_at + 3000 > self.now:
            work_at, done = None, False
        human = reason == "needs_human"
        self.card(
            tid,
            title,
            profile,
            BUDGET_BLOCKER,
            at,
            done=done,
            work_at=work_at,
            needs=(
                "human review: this task keeps coming back; decide whether it is still "
                "worth doing, and how"
                if human
                else f"split {tid} into narrower tasks ({reason.replace('_', ' ')})"
            ),
            evidence={"reason_class": reason, "watcher": "budget", "since": since},
        )

    def budget_repeated(self, done_card: bool) -> None:
        """Hermes gave up after `max_retries` = 3 identical task-caused failures (a
        Traceback); the budget watcher carded the repeated failure (open, or closed
        while the source stays blocked on its split)."""
        rng, now = self.rng, self.now
        tid, title = self.task_id(), self.title()
        profile = rng.choice(PROFILES)
        created = now - rng.randrange(86400, 3 * 86400)
        self.event(tid, "created", {"assignee": profile, "status": "ready", "parents": []}, created)
        t = first = created + rng.randrange(10, 600)
        test = rng.choice(("test_roundtrip", "test_merge", "test_invoice_totals"))
        error = ""
        starts = []
        for _ in range(3):
            pid = rng.randrange(2000, 4_000_000)
            error = (
                f"pid {pid} exited with code 1: Traceback (most recent call last): File "
                f'"/home/u/work/{tid}/tests/test_app.py", line {rng.randrange(20, 400)}, in '
                f"{test} AssertionError: expected 3 rows, got 4"
            )
            starts.append(t)
            end = self.attempt(tid, profile, t, "crashed", error=error, pid=pid)
            t = end + rng.randrange(5, 120)
        self._hermes_gave_up(tid, error, end, failures=3, limit_source="task")
        self.budget_card(
            tid,
            title,
            profile,
            "repeated_failure",
            end + rng.randrange(5, 70),
            starts[-1],
            done=done_card,
        )
        self.add_task(
            tid,
            "blocked",
            created,
            assignee=profile,
            started=first,
            failures=3,
            last_error=error,
            max_retries=3,
            title=title,
            max_runtime=None,
        )
        self.bstats["blocked_repeated_failure"] += 1

    def budget_attempts(self) -> None:
        """`Attempt budget: 3` spent without completing (a timeout, an expired claim, a
        stale worker); the card is open and the source waits on it in `todo`."""
        rng, now = self.rng, self.now
        tid, title = self.task_id(), self.title()
        profile = rng.choice(PROFILES)
        created = now - rng.randrange(86400, 2 * 86400)
        self.event(tid, "created", {"assignee": profile, "status": "ready", "parents": []}, created)
        t = first = created + rng.randrange(10, 600)
        errors = {
            "timed_out": f"elapsed {rng.randrange(3601, 5000)}s > limit 3600s",
            "reclaimed": "claim expired",
            "stale": f"no heartbeat for {rng.randrange(3600, 5000)}s",
        }
        start = t
        for outcome in ("timed_out", "reclaimed", "stale"):
            start = t
            end = self.attempt(tid, profile, t, outcome, error=errors[outcome])
            t = end + rng.randrange(30, 600)
        self.budget_card(
            tid, title, profile, "attempt_budget", end + rng.randrange(5, 70), start, done=False
        )
        self.add_task(
            tid,
            "todo",
            created,
            assignee=profile,
            started=first,
            failures=1,
            last_error=errors["timed_out"],
            title=title,
            body=self.body("Time budget: 1h", "Attempt budget: 3"),
            max_runtime=None,
        )
        self.bstats["todo_attempt_budget_spent"] += 1

    def budget_reblocked(self) -> None:
        """Blocked by its worker, unblocked by a person, blocked again (Hermes counts
        `block_recurrences` = 2): the card asks for human review and is open."""
        rng, now = self.rng, self.now
        tid, title = self.task_id(), self.title()
        profile = rng.choice(PROFILES)
        created = now - rng.randrange(2 * 86400, 5 * 86400)
        self.event(tid, "created", {"assignee": profile, "status": "ready", "parents": []}, created)
        t = first = created + rng.randrange(10, 600)
        kind = rng.choice(("needs_input", "dependency"))
        for i in range(2):
            end = self.attempt(tid, profile, t, "blocked")
            self.event(tid, "blocked", {"reason": "needs a decision", "kind": kind}, end)
            if i == 0:
                t = end + rng.randrange(3600, 86400)
                self.event(tid, "unblocked", {"by": "user", "status": "ready"}, t)
                t += rng.randrange(10, 600)
        self.budget_card(
            tid, title, profile, "needs_human", end + rng.randrange(5, 70), end, done=False
        )
        self.add_task(
            tid,
            "blocked",
            created,
            assignee=profile,
            started=first,
            block_kind=kind,
            block_recurrences=2,
            title=title,
        )
        self.bstats["blocked_recurring_human_review"] += 1

    def budget_warned(self, done: bool) -> None:
        """An attempt warned at 80 % of its `Time budget: 45m` (a `budget_warning`
        event on its run and a comment) that ended before 100 %: completed (`done`),
        or killed / its claim expired, so the task is `ready` again."""
        rng, now = self.rng, self.now
        tid = self.task_id()
        profile = rng.choice(PROFILES)
        budget = 2700
        created = now - rng.randrange(3 * 3600, 3 * 86400)
        self.event(tid, "created", {"assignee": profile, "status": "ready", "parents": []}, created)
        start = created + rng.randrange(10, 600)
        outcome = "completed" if done else rng.choice(("crashed", "reclaimed"))
        pid = rng.randrange(2000, 4_000_000)
        error = {"crashed": f"pid {pid} killed by signal 9", "reclaimed": "claim expired"}
        end = self.attempt(
            tid,
            profile,
            start,
            outcome,
            error=error.get(outcome),
            pid=pid,
            duration=int(budget * rng.uniform(0.85, 0.98)),
        )
        run = self.last_run
        at = start + int(budget * WARN_FRACTION) + rng.randrange(0, 60)
        used = at - start
        self.event(
            tid,
            "budget_warning",
            {
                "by": "watchers",
                "reason": "time_budget_warning",
                "budget": "time",
                "evidence": {
                    "budget": "time",
                    "consumed": used,
                    "limit": float(budget),
                    "source": "body",
                    "run_id": run,
                },
            },
            at,
            run,
        )
        self.comment(
            tid,
            "watchers",
            f"kanban-watchers: this attempt has used {used}s of {budget}s of its time budget "
            "(body). Wrap up, or split what is left into a new task.",
            at,
        )
        self.add_task(
            tid,
            "done" if done else "ready",
            created,
            assignee=profile,
            started=start,
            completed=end if done else None,
            result="Result: " + LOREM[: rng.randrange(40, 400)] if done else None,
            failures=int(outcome == "crashed"),
            last_error=error.get(outcome) if outcome == "crashed" else None,
            body=self.body("Time budget: 45m"),
            max_runtime=None,
        )
        self.bstats["done_after_warning" if done else "ready_after_warning"] += 1

    def budget_malformed(self) -> None:
        """A budget line the watcher cannot read, already reported once (a
        `budget_malformed` event and a comment)."""
        from watchers.budget.budgets import parse_body

        rng, now = self.rng, self.now
        tid = self.task_id()
        profile = rng.choice(PROFILES)
        created = now - rng.randrange(3600, 2 * 86400)
        self.event(tid, "created", {"assignee": profile, "status": "ready", "parents": []}, created)
        body = self.body(rng.choice(("Time budget: by friday", "Attempt budget: three")))
        at = created + rng.randrange(5, 70)
        for problem in parse_body(body).problems:
            self.event(
                tid,
                "budget_malformed",
                {
                    "by": "watchers",
                    "reason": "malformed_budget",
                    "line": problem,
                    "evidence": {"line": problem},
                },
                at,
            )
            self.comment(
                tid,
                "watchers",
                f"kanban-watchers ignored a budget line it could not read: {problem}.",
                at,
            )
        self.add_task(tid, "ready", created, assignee=profile, body=body)
        self.bstats["ready_malformed_reported"] += 1
