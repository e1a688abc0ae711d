"""The distress history: rate limits and credential failures, answered by the distress
watcher (a reassignment to another provider, or a `[BLOCKED]` card for the
orchestrator), by a worker's own card, or by the task finishing."""

from __future__ import annotations

from bench.board.profiles import MODELS, PROFILES
from bench.board.rows import LOREM, Rows

SIGNAL_WINDOW_S = 21600  # distress.signal_window_seconds (default)
MAX_REASSIGNMENTS = 2  # distress.max_reassignments (default)


class DistressHistory(Rows):
    """Tasks whose attempts hit rate limits or 401s, each already answered."""

    def fallback(self, profile: str, signal: str) -> str:
        """The distress watcher's choice: first profile of the group's route on another
        provider (any other profile for a credential failure)."""
        for other in sorted(p for p in PROFILES if p != profile):
            if signal == "credential_failure" or MODELS[other][0] != MODELS[profile][0]:
                return other
        raise RuntimeError(f"no fallback for {profile}")

    def signal_attempt(self, tid: str, profile: str, start: int, signal: str) -> tuple[int, str]:
        """A failed attempt that says rate limit (Hermes's own outcome, or a 429 in the
        error text) or credentials (a 401); returns (end, blocker type)."""
        rng = self.rng
        pid = rng.randrange(2000, 4_000_000)
        provider = MODELS[profile][0]
        if signal == "rate_limited":
            error = (
                f"pid {pid} exited rate-limited (quota wall) — requeued without counting a failure"
            )
            return self.attempt(tid, profile, start, "rate_limited", error=error, pid=pid), signal
        if signal == "429":
            retry = rng.choice(("", "", "; retry-after 30s", "; retry-after 120s"))
            error = (
                f"pid {pid} exited with code 1: {provider} API error 429 Too Many Requests "
                f"(rate_limit_error){retry}"
            )
            return self.attempt(
                tid, profile, start, "crashed", error=error, pid=pid
            ), "rate_limited"
        error = (
            f"pid {pid} exited with code 1: {provider} API error 401 Unauthorized: "
            "invalid x-api-key"
        )
        end = self.attempt(tid, profile, start, "crashed", error=error, pid=pid)
        return end, "credential_failure"

    def reassign(
        self, tid: str, frm: str, to: str, blocker: str, signal_at: int, at: int, n: int
    ) -> None:
        """The distress watcher's reassignment, as `BoardStore._reassign` writes it."""
        fp, tp = MODELS[frm][0], MODELS[to][0]
        self.event(
            tid,
            "assigned",
            {
                "assignee": to,
                "by": "watchers",
                "from": frm,
                "to": to,
                "from_provider": fp,
                "to_provider": tp,
                "reason": blocker,
                "evidence": {
                    "reason_class": blocker,
                    "signal_at": signal_at,
                    "reassignments": n - 1,
                    "max_reassignments": MAX_REASSIGNMENTS,
                    "provider": fp,
                },
            },
            at,
        )
        self.comment(
            tid,
            "watchers",
            f"kanban-watchers reassigned this task from {frm} (provider {fp}) to {to} "
            f"(provider {tp}): {blocker.replace('_', ' ')}. Reassignment {n} of at most "
            f"{MAX_REASSIGNMENTS} this episode.",
            at,
        )
        self.dstats["watcher_reassignments"] += 1

    def _signals(self, k: int) -> list[str]:
        return self.rng.choices(("rate_limited", "429", "401"), weights=(60, 25, 15), k=k)

    def distress_done(self, recent: bool) -> None:
        """Finished after 1-2 provider failures, each answered by a reassignment or a
        card the orchestrator closed; `recent` puts it in the signal window."""
        rng, now = self.rng, self.now
        tid, title = self.task_id(), self.title()
        profile = rng.choice(PROFILES)
        created = now - (
            rng.randrange(3 * 3600, 5 * 3600) if recent else rng.randrange(7 * 3600, 30 * 86400)
        )
        self.event(tid, "created", {"assignee": profile, "status": "ready", "parents": []}, created)
        t = first = created + rng.randrange(10, 600)
        sigs = self._signals(rng.choices((1, 2), weights=(70, 30))[0])
        by_card = rng.random() < 0.3
        for i, sig in enumerate(sigs, 1):
            end, blocker = self.signal_attempt(tid, profile, t, sig)
            at = end + rng.randrange(3, 40)
            to = self.fallback(profile, blocker)
            if by_card and i == len(sigs):
                resolved = self.card(tid, title, profile, blocker, at, done=True)
                assert resolved is not None
                self.event(tid, "assigned", {"assignee": to}, resolved - 1)
                t = resolved + rng.randrange(10, 300)
            else:
                self.reassign(tid, profile, to, blocker, end, at, i)
                t = at + (300 if blocker == "rate_limited" else rng.randrange(5, 120))
            profile = to
        end = self.attempt(tid, profile, t, "completed")
        archived = not recent and rng.random() < 0.5
        if archived:
            self.event(tid, "archived", None, min(end + rng.randrange(60, 86400), now - 60))
        self.add_task(
            tid,
            "archived" if archived else "done",
            created,
            assignee=profile,
            started=first,
            completed=end,
            result="Result: " + LOREM[: rng.randrange(40, 400)],
            title=title,
        )
        self.dstats["done_recent" if recent else "done_older"] += 1

    def distress_reassigned(self, *, run: bool = False) -> None:
        """In the window: 1-2 signals, each answered by a reassignment; now `ready` on
        another provider (`run`: the dispatcher claims it later)."""
        rng, now = self.rng, self.now
        tid = self.task_id()
        profile = rng.choice(PROFILES)
        created = now - rng.randrange(int(2.5 * 3600), int(5.75 * 3600))
        self.event(tid, "created", {"assignee": profile, "status": "ready", "parents": []}, created)
        t = first = created + rng.randrange(10, 600)
        for i, sig in enumerate(self._signals(1 if run else rng.choice((1, 1, 2))), 1):
            end, blocker = self.signal_attempt(tid, profile, t, sig)
            at = end + rng.randrange(3, 40)
            to = self.fallback(profile, blocker)
            self.reassign(tid, profile, to, blocker, end, at, i)
            t = at + 300
            profile = to
        self.add_task(tid, "ready", created, assignee=profile, started=first)
        if run:
            self.running_ids.append(tid)
        self.dstats["running_after_reassignment" if run else "ready_after_reassignment"] += 1

    def distress_card_open(self) -> None:
        """An open card: reassignments spent on rate limits (source waits in `todo`), a
        worker that blocked on a 401 (source `blocked`), or a worker's own
        scope_boundary card."""
        rng, now = self.rng, self.now
        tid, title = self.task_id(), self.title()
        profile = rng.choice(PROFILES)
        variant = rng.choices(("budget", "credential", "scope"), weights=(50, 30, 20))[0]
        created = now - rng.randrange(3 * 3600, int(5.75 * 3600))
        if variant == "scope":
            created = now - rng.randrange(3600, 3 * 86400)
        self.event(tid, "created", {"assignee": profile, "status": "ready", "parents": []}, created)
        t = first = created + rng.randrange(10, 600)
        status = "blocked"
        if variant == "budget":
            for i in range(MAX_REASSIGNMENTS + 1):
                end, blocker = self.signal_attempt(tid, profile, t, "rate_limited")
                at = end + rng.randrange(3, 40)
                if i == MAX_REASSIGNMENTS:
                    self.card(tid, title, profile, blocker, at, done=False)
                    break
                to = self.fallback(profile, blocker)
                self.reassign(tid, profile, to, blocker, end, at, i + 1)
                t, profile = at + 300, to
            status = "todo"
        elif variant == "credential":
            reason = (
                f"provider {MODELS[profile][0]} rejected the API key (HTTP 401 Unauthorized); "
                "cannot continue"
            )
            end = self.attempt(tid, profile, t, "blocked", reason=reason)
            self.card(
                tid, title, profile, "credential_failure", end + rng.randrange(3, 40), done=False
            )
        else:
            reason = "outside this task's scope: needs a schema migration in another package"
            end = self.attempt(tid, profile, t, "blocked", reason=reason)
            self.card(
                tid,
                title,
                profile,
                "scope_boundary",
                end + rng.randrange(1, 20),
                done=False,
                by=profile,
                needs="split the task",
            )
        self.add_task(tid, status, created, assignee=profile, started=first, title=title)
        self.dstats[f"open_card_{variant}"] += 1

    def distress_card_done(self) -> None:
        """In the window: a signal, a card, the orchestrator moved the task and closed
        the card; the source is `ready` again."""
        rng, now = self.rng, self.now
        tid, title = self.task_id(), self.title()
        profile = rng.choice(PROFILES)
        created = now - rng.randrange(3 * 3600, int(5.75 * 3600))
        self.event(tid, "created", {"assignee": profile, "status": "ready", "parents": []}, created)
        first = created + rng.randrange(10, 600)
        end, blocker = self.signal_attempt(tid, profile, first, self._signals(1)[0])
        resolved = self.card(tid, title, profile, blocker, end + rng.randrange(3, 40), done=True)
        assert resolved is not None
        to = self.fallback(profile, blocker)
        self.event(tid, "assigned", {"assignee": to}, resolved - 1)
        self.event(tid, "promoted", None, resolved)
        self.add_task(tid, "ready", created, assignee=to, started=first, title=title)
        self.dstats["ready_after_card"] += 1
