"""The `[BLOCKED]` card: title, body and the scope lines it quotes. Pure.

Untrusted text (task titles, error output, task bodies) is capped, flattened to one
line where it is quoted, and kept out of the title except the source id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BLOCKER_TYPES = (
    "scope_boundary",
    "env_blocker",
    "credential_failure",
    "dependency",
    "iteration_budget",
    "rate_limited",
)
CARD_TITLE = re.compile(r"^\s*\[BLOCKED\]\s+(t_[0-9A-Za-z]+)\s+([a-z_]+)")
TITLE_LIMIT = 120
EXCERPT_LIMIT = 300
SCOPE_LIMIT = 10

_SCOPE_LINE = re.compile(
    r"^\s*[-*]?\s*(?:do\s+not\s+(?:touch|modify|change|edit)|don'?t\s+(?:touch|modify)|cannot\s+touch"
    r"|out\s+of\s+scope|must\s+not\s+(?:touch|modify)|off[- ]limits)\s*:?\s*(.+)$",
    re.IGNORECASE | re.MULTILINE,
)


def card_title(source_id: str, blocker_type: str) -> str:
    return f"[BLOCKED] {source_id} {blocker_type}"


def parse_card_title(title: str | None) -> tuple[str, str] | None:
    """(source id, blocker type) when `title` is a distress card's, whoever wrote it."""
    if not title:
        return None
    m = CARD_TITLE.match(title)
    return (m.group(1), m.group(2)) if m else None


def one_line(text: str | None, limit: int = EXCERPT_LIMIT) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def scope_exclusions(body: str | None) -> tuple[str, ...]:
    """Out-of-scope files or packages named in a task body ('Do not touch: a, b')."""
    found: list[str] = []
    for m in _SCOPE_LINE.finditer(body or ""):
        for part in re.split(r"[,;]", m.group(1)):
            item = one_line(part.strip(" `'\".").strip(), 120)
            if item and item not in found:
                found.append(item)
    return tuple(found[:SCOPE_LIMIT])


@dataclass(frozen=True, slots=True)
class CardFacts:
    source_id: str
    source_title: str
    worker: str | None
    provider: str | None
    branch: str | None
    workspace: str | None
    blocker_type: str
    completed: str | None
    cannot_touch: tuple[str, ...]
    needs: str
    state: str
    evidence: Mapping[str, Any]


def _evidence_line(key: str, value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        shown = json.dumps(value, ensure_ascii=False, default=str)
    else:
        shown = str(value)
    return f"- {key}: {one_line(shown, EXCERPT_LIMIT * 2)}"


def render_body(f: CardFacts) -> str:
    provider = f.provider or "unknown"
    lines = [
        "## Distress Signal",
        f"- Blocked task: {f.source_id} — {one_line(f.source_title, TITLE_LIMIT)}",
        f"- Worker: {f.worker or '—'} (provider {provider})",
        f"- Branch: {one_line(f.branch, 200) or '—'}",
        f"- Workspace: {one_line(f.workspace, 300) or '—'}",
        f"- Blocker type: {f.blocker_type}",
        f"- Completed: {one_line(f.completed, 600) or '—'}",
        f"- Cannot touch: {', '.join(f.cannot_touch) or '—'}",
        f"- Needs: {one_line(f.needs, 600)}",
        f"- State: {f.state}",
        "",
        "## Scope Guard",
        "DO NOT touch: anything outside diagnosing and remediating the blocker above",
        "Only fix: assign, split, reassign, or unblock the source task",
        "",
        "## Evidence",
    ]
    lines += [_evidence_line(k, v) for k, v in f.evidence.items()]
    return "\n".join(lines) + "\n"
