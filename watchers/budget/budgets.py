"""A task's budgets and where each comes from. Pure.

Sources, first match wins, per budget:
  time        Hermes `max_runtime_seconds` > body `Time budget: 45m` > profile > global
  iterations  Hermes `goal_max_turns`      > body `Iteration budget: 40` > profile > global
  attempts    Hermes `max_retries`         > body `Attempt budget: 3` > profile > global

Body syntax: a line `<Time|Iteration|Attempt> budget: <value>`, case-insensitive, anywhere
in the task body, optionally bulleted. Durations are one or more `<number><unit>` parts
with units s, m, h (`90s`, `45m`, `2h`, `1h30m`); a bare number is seconds. Iteration and
attempt budgets are positive whole numbers. A line that does not parse is reported once
and ignored (the next source decides).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_LINE = re.compile(
    r"^\s*(?:[-*]\s*)?(time|iteration|iterations|attempt|attempts)\s+budget\s*:\s*(.*?)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_DURATION = re.compile(
    r"^(?:\s*(\d+(?:\.\d+)?)\s*(h|hr|hrs|hours?|m|min|mins|minutes?|s|sec|secs|seconds?))+\s*$",
    re.IGNORECASE,
)
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)", re.IGNORECASE)


def parse_duration(text: str) -> float | None:
    """`90s`, `45m`, `2h`, `1h30m`, or a bare number of seconds; None if it is none of these."""
    value = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        seconds = float(value)
        return seconds if seconds > 0 else None
    if not _DURATION.match(value):
        return None
    total = 0.0
    for number, unit in _PART.findall(value):
        u = unit.lower()
        total += float(number) * (3600 if u.startswith("h") else 60 if u.startswith("m") else 1)
    return total if total > 0 else None


@dataclass(frozen=True, slots=True)
class BodyBudgets:
    time_seconds: float | None = None
    iterations: int | None = None
    attempts: int | None = None
    problems: tuple[str, ...] = ()  # the malformed lines, quoted


NO_BODY_BUDGETS = BodyBudgets()


def parse_body(body: str | None) -> BodyBudgets:
    time_s: float | None = None
    iterations: int | None = None
    attempts: int | None = None
    problems: list[str] = []
    for m in _LINE.finditer(body or ""):
        kind, raw = m.group(1).lower(), m.group(2)
        line = m.group(0).strip()[:120]
        if kind == "time":
            parsed = parse_duration(raw)
            if parsed is None:
                problems.append(f"{line!r}: not a duration (use 90s, 45m, 2h or 1h30m)")
            elif time_s is None:
                time_s = parsed
            continue
        if not re.fullmatch(r"\d+", raw.strip()) or int(raw) <= 0:
            problems.append(f"{line!r}: not a positive whole number")
            continue
        if kind.startswith("iteration") and iterations is None:
            iterations = int(raw)
        elif kind.startswith("attempt") and attempts is None:
            attempts = int(raw)
    if time_s is None and iterations is None and attempts is None and not problems:
        return NO_BODY_BUDGETS  # most bodies: one shared value, not one per task
    return BodyBudgets(time_s, iterations, attempts, tuple(problems))


@dataclass(frozen=True, slots=True)
class Budget:
    value: float
    source: str  # hermes:<column> | body | profile:<name> | global


@dataclass(frozen=True, slots=True)
class Budgets:
    time: Budget | None
    iterations: Budget | None
    attempts: Budget | None


@functools.lru_cache(maxsize=4096)
def _budget(value: float, source: str) -> Budget:
    """Budgets are values a board's tasks share by the thousand (the same global or
    profile figure): one object each, so following many tasks costs little memory."""
    return Budget(value, source)


@functools.lru_cache(maxsize=4096)
def _budgets(time: Budget | None, iterations: Budget | None, attempts: Budget | None) -> Budgets:
    return Budgets(time, iterations, attempts)


def _first(*options: tuple[float | None, str]) -> Budget | None:
    for value, source in options:
        if value is not None and value > 0:
            return _budget(float(value), source)
    return None


def resolve(
    *,
    max_runtime_seconds: int | None,
    goal_max_turns: int | None,
    max_retries: int | None,
    body: BodyBudgets,
    profile: str | None,
    profile_time: float | None,
    profile_iterations: int | None,
    profile_attempts: int | None,
    global_time: float | None,
    global_iterations: int | None,
    global_attempts: int | None,
) -> Budgets:
    p = f"profile:{profile}"
    return _budgets(
        _first(
            (max_runtime_seconds, "hermes:max_runtime_seconds"),
            (body.time_seconds, "body"),
            (profile_time, p),
            (global_time, "global"),
        ),
        _first(
            (goal_max_turns, "hermes:goal_max_turns"),
            (body.iterations, "body"),
            (profile_iterations, p),
            (global_iterations, "global"),
        ),
        _first(
            (max_retries, "hermes:max_retries"),
            (body.attempts, "body"),
            (profile_attempts, p),
            (global_attempts, "global"),
        ),
    )
