"""Is a failed attempt the machine's fault or the task's? Pure; rules come from settings."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from watchers.model import FailureRecord
from watchers.settings import AutoHealSettings, Rule


@dataclass(frozen=True, slots=True)
class Classification:
    infra: bool
    rule: str | None  # the rule that decided, "task:<name>" for a task rule, None if none matched


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def _matches(rule: Rule, failure: FailureRecord) -> bool:
    if rule.outcomes and failure.outcome not in rule.outcomes:
        return False
    return _compiled(rule.pattern).search(failure.error) is not None


def classify(failure: FailureRecord, settings: AutoHealSettings) -> Classification:
    """Task rules win; otherwise the first infra rule that matches; otherwise task-caused."""
    for rule in settings.task_rules:
        if _matches(rule, failure):
            return Classification(False, f"task:{rule.name}")
    for rule in (*settings.infra_rules, *settings.extra_infra_rules):
        if _matches(rule, failure):
            return Classification(True, rule.name)
    return Classification(False, None)


def all_infra(
    failures: Sequence[FailureRecord], settings: AutoHealSettings
) -> tuple[bool, list[Classification]]:
    found = [classify(f, settings) for f in failures]
    return bool(found) and all(c.infra for c in found), found
