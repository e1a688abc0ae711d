"""Is a failed attempt the machine's fault or the task's? Pure; rules come from settings.

Answers are memoised per set of rules: a board keeps the same give-ups for hours and
their error texts do not change, so each text is matched against the rules once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from watchers.model import FailureRecord
from watchers.settings import AutoHealSettings, Rule

_MEMO_LIMIT = 20_000  # distinct (outcome, error) pairs remembered per set of rules


@dataclass(frozen=True, slots=True)
class Classification:
    infra: bool
    rule: str | None  # the rule that decided, "task:<name>" for a task rule, None if none matched


@dataclass(frozen=True, slots=True)
class _Compiled:
    name: str
    pattern: re.Pattern[str]
    outcomes: frozenset[str]

    def matches(self, failure: FailureRecord) -> bool:
        if self.outcomes and failure.outcome not in self.outcomes:
            return False
        return self.pattern.search(failure.error) is not None


def _compile(rules: Sequence[Rule]) -> tuple[_Compiled, ...]:
    return tuple(
        _Compiled(r.name, re.compile(r.pattern, re.IGNORECASE), frozenset(r.outcomes))
        for r in rules
    )


class Classifier:
    """Task rules win; otherwise the first infra rule that matches; otherwise task-caused."""

    def __init__(self, task_rules: Sequence[Rule], infra_rules: Sequence[Rule]) -> None:
        self._task = _compile(task_rules)
        self._infra = _compile(infra_rules)
        self._memo: dict[tuple[str, str], Classification] = {}

    def __call__(self, failure: FailureRecord) -> Classification:
        key = (failure.outcome, failure.error)
        found = self._memo.get(key)
        if found is None:
            found = self._classify(failure)
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = found
        return found

    def _classify(self, failure: FailureRecord) -> Classification:
        for rule in self._task:
            if rule.matches(failure):
                return Classification(False, f"task:{rule.name}")
        for rule in self._infra:
            if rule.matches(failure):
                return Classification(True, rule.name)
        return Classification(False, None)


@lru_cache(maxsize=8)
def _classifier(task_rules: tuple[Rule, ...], infra_rules: tuple[Rule, ...]) -> Classifier:
    return Classifier(task_rules, infra_rules)


def classifier_for(settings: AutoHealSettings) -> Classifier:
    """The classifier for these settings' rules (one per distinct set of rules)."""
    return _classifier(settings.task_rules, (*settings.infra_rules, *settings.extra_infra_rules))


def classify(failure: FailureRecord, settings: AutoHealSettings) -> Classification:
    return classifier_for(settings)(failure)


def all_infra(
    failures: Sequence[FailureRecord], classifier: Classifier
) -> tuple[bool, list[Classification]]:
    found = [classifier(f) for f in failures]
    return bool(found) and all(c.infra for c in found), found
