"""What Hermes's dispatcher is told, read as Hermes reads it: the `kanban:` section of the
Hermes root's `config.yaml` (concurrency caps, the default assignee) and which profiles
exist (`default` always; others are directories under `<root>/profiles/`).

Hermes ignores a cap that is not a whole number of at least 1, and a blank default
assignee; so do we. A config file that cannot be read is no config (Hermes then runs
with no caps either). A root that cannot be listed leaves the profiles unknown: then any
non-empty assignee counts as known, rather than every task looking undispatchable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from watchers.hermes.profiles import CONFIG_LIMIT

DEFAULT_PROFILE = "default"

UNASSIGNED = "unassigned"  # no assignee and no (existing) kanban.default_assignee
UNKNOWN_PROFILE = "unknown_profile"  # its assignee is no Hermes profile (a terminal's lane)
GLOBAL_CAP = "global_cap"  # the board has max_in_progress (or max_spawn) tasks running
PROFILE_CAP = "profile_cap"  # its assignee has max_in_progress_per_profile tasks running


@dataclass(frozen=True, slots=True)
class DispatchRules:
    """The caps and routing Hermes's dispatcher applies to a board's ready tasks."""

    max_in_progress: int | None = None  # running tasks on the board, at most
    max_spawn: int | None = None  # also a live cap on running tasks (Hermes counts them)
    max_in_progress_per_profile: int | None = None
    default_assignee: str | None = None  # given to unassigned ready tasks
    profiles: frozenset[str] | None = None  # None: unknown (the root could not be listed)

    @property
    def global_cap(self) -> int | None:
        caps = [c for c in (self.max_in_progress, self.max_spawn) if c is not None]
        return min(caps) if caps else None

    def profile_exists(self, name: str) -> bool:
        """As Hermes's `profile_exists`: names compare stripped and in lower case."""
        canon = name.strip().lower()
        if not canon:
            return False
        if canon == DEFAULT_PROFILE or self.profiles is None:
            return True
        return canon in self.profiles

    def assignee_of(self, assignee: str | None) -> str | None:
        """Who Hermes would spawn for a ready task: its assignee, else the default assignee
        when that one exists; None when nobody."""
        if assignee is not None and assignee.strip():
            return assignee.strip().lower()
        if self.default_assignee is not None and self.profile_exists(self.default_assignee):
            return self.default_assignee.strip().lower()
        return None

    def held_back(
        self, assignee: str | None, running: int, running_by: Mapping[str | None, int]
    ) -> str | None:
        """Why Hermes's dispatcher would not spawn a ready task with this assignee now
        (UNASSIGNED, UNKNOWN_PROFILE, GLOBAL_CAP, PROFILE_CAP), given the board's running
        tasks (all, and per assignee); None: it would."""
        cap = self.global_cap
        if cap is not None and running >= cap:
            return GLOBAL_CAP
        who = self.assignee_of(assignee)
        if who is None:
            return UNASSIGNED
        if not self.profile_exists(who):
            return UNKNOWN_PROFILE
        per_profile = self.max_in_progress_per_profile
        if per_profile is not None and running_by.get(who, 0) >= per_profile:
            return PROFILE_CAP
        return None


def positive_int(value: Any) -> int | None:
    """A cap as Hermes coerces it: an integer (or integral text) of at least 1, else none."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number >= 1 else None


def parse_kanban_config(data: Any) -> dict[str, Any]:
    """The dispatcher's settings from a parsed config.yaml (anything: agents write it)."""
    section = data.get("kanban") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        return {}
    default = section.get("default_assignee")
    return {
        "max_in_progress": positive_int(section.get("max_in_progress")),
        "max_spawn": positive_int(section.get("max_spawn")),
        "max_in_progress_per_profile": positive_int(section.get("max_in_progress_per_profile")),
        "default_assignee": default.strip() or None if isinstance(default, str) else None,
    }


def _read_config(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as fh:
            text = fh.read(CONFIG_LIMIT + 1)
        if len(text) > CONFIG_LIMIT:
            return {}
        return parse_kanban_config(yaml.safe_load(text))
    except (OSError, yaml.YAMLError, UnicodeDecodeError, RecursionError, ValueError):
        return {}


def existing_profiles(root: Path) -> frozenset[str] | None:
    """Names of the profile directories under the root (lower case); None when the root
    itself cannot be read. A root without `profiles/` has only `default`."""
    if not os.access(root, os.R_OK | os.X_OK) or not root.is_dir():
        return None
    try:
        return frozenset(p.name.lower() for p in (root / "profiles").iterdir() if p.is_dir())
    except FileNotFoundError:
        return frozenset()
    except OSError:
        return None


class DispatchRulesReader:
    """Reads the rules under one Hermes root; config.yaml is parsed again only when it
    changed, the profile directories are listed on every read (one directory)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._config: tuple[tuple[float, int], dict[str, Any]] | None = None

    def read(self) -> DispatchRules:
        path = self.root / "config.yaml"
        try:
            st = path.stat()
            key = (st.st_mtime, st.st_size)
        except OSError:
            self._config = None
            config: dict[str, Any] = {}
        else:
            if self._config is None or self._config[0] != key:
                self._config = (key, _read_config(path))
            config = self._config[1]
        return DispatchRules(**config, profiles=existing_profiles(self.root))
