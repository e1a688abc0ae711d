"""What the budget watcher remembers of each open task between passes, and what it
reads once from a task's body (the bullet lines a split could follow)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from watchers.budget.budgets import BodyBudgets, Budgets, parse_body
from watchers.budget.decide import Failure
from watchers.budget.fingerprint import FAILURE_TEXT_KEPT, fingerprint
from watchers.cards import one_line, scope_exclusions
from watchers.store.board import BudgetRow
from watchers.store.rows import shared


@dataclass(slots=True)
class Row:
    """What a task's row says about its budgets (its body is parsed, not kept)."""

    status: str
    assignee: str | None
    max_runtime_seconds: int | None
    goal_max_turns: int | None
    max_retries: int | None
    block_recurrences: int
    body: BodyBudgets

    @classmethod
    def of(cls, r: BudgetRow) -> Row:
        return cls(
            r.status,
            r.assignee,
            r.max_runtime_seconds,
            r.goal_max_turns,
            r.max_retries,
            r.block_recurrences,
            parse_body(r.body),
        )

    @property
    def worth_following(self) -> bool:
        """Anything here a budget could act on without an attempt?"""
        b = self.body
        return bool(
            b.time_seconds or b.iterations or b.attempts or b.problems or self.block_recurrences
        )


SMALL = 8
"""Attempts a memo keeps in a tuple before it switches to a set."""


@dataclass(slots=True)
class Memo:
    row: Row | None = None
    budgets: Budgets | None = None  # resolved from the row and settings; None: resolve again
    # run ids of the attempts, rate-limited requeues excluded; None: none yet. A tuple while
    # short (a set of one costs 216 bytes, a tuple 48), a set beyond SMALL.
    attempt_runs: tuple[int, ...] | set[int] | None = None
    last_attempt_at: int | None = None
    last_attempt_event: int | None = None
    failures: dict[int, Failure] | None = None  # by run id
    resets: int = 0
    last_reset_at: int | None = None
    last_reset_event: int | None = None
    last_block_at: int | None = None
    warned: set[tuple[int, str]] | None = None
    reported: set[str] | None = None

    @property
    def attempts(self) -> int:
        return len(self.attempt_runs) if self.attempt_runs else 0

    def attempted(self, run_id: int) -> None:
        runs = self.attempt_runs
        if runs is None:
            self.attempt_runs = (run_id,)
        elif isinstance(runs, set):
            runs.add(run_id)
        elif run_id not in runs:
            self.attempt_runs = (*runs, run_id) if len(runs) < SMALL else {*runs, run_id}

    def not_attempted(self, run_id: int) -> None:
        runs = self.attempt_runs
        if isinstance(runs, set):
            runs.discard(run_id)
        elif runs and run_id in runs:
            self.attempt_runs = tuple(r for r in runs if r != run_id) or None

    def fail(self, run_id: int, failure: Failure) -> None:
        if self.failures is None:
            self.failures = {}
        self.failures[run_id] = failure

    def restart_episode(self) -> None:
        self.attempt_runs = None
        self.last_attempt_at = self.last_attempt_event = None
        self.failures = None
        self.resets, self.last_reset_at, self.last_reset_event = 0, None, None


def failure(text: str, at: float, event_id: int | None = None) -> Failure:
    # Failures repeat across a board's tasks (the same provider error, the same test):
    # their fingerprint and quoted text are shared strings, kept once.
    return Failure(
        shared(fingerprint(text)), shared(one_line(text, FAILURE_TEXT_KEPT)), at, event_id
    )


_SCOPE_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.{3,160}?)\s*$", re.MULTILINE)
_BUDGET_LINE = re.compile(r"\bbudget\s*:", re.IGNORECASE)


def scope_lines(body: str) -> tuple[str, ...]:
    """Bulleted or numbered lines of a task body: the pieces a split could follow."""
    out = []
    for m in _SCOPE_BULLET.finditer(body or ""):
        line = m.group(1)
        if _BUDGET_LINE.search(line) or line in scope_exclusions(m.group(0)):
            continue
        out.append(line)
    return tuple(out[:8])
