"""The `[BLOCKED]` card every watcher writes: title, body, the scope lines it quotes,
and the index of the cards already on a board.

Untrusted text (task titles, error output, task bodies) is capped, flattened to one
line where it is quoted, and kept out of the title except the source id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from watchers.model import Action, ActionKind
from watchers.store.rows import AUTHOR

if TYPE_CHECKING:
    from watchers.store.board import BoardStore, TaskDetail

BLOCKER_TYPES = (
    "scope_boundary",
    "env_blocker",
    "credential_failure",
    "dependency",
    "iteration_budget",
    "rate_limited",
)
CARD_MARK = "[BLOCKED]"
"""Every distress card's title contains this; the SQL prefilter looks for it (instr), and
`parse_card_title` decides. One definition, used wherever a card is looked for."""
CARD_TITLE = re.compile(r"^\s*\[BLOCKED\]\s+(t_[0-9A-Za-z]+)\s+([a-z_]+)")
"""Any whitespace between the parts (tabs, no-break spaces: workers write their own)."""
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
class SourceTask:
    """What a card or a reassignment needs to know about its source task."""

    task_id: str
    title: str
    status: str
    assignee: str | None
    provider_override: str | None
    branch: str | None
    workspace: str | None
    cannot_touch: tuple[str, ...]
    completed: str | None
    state: str  # committed | uncommitted | stashed(<name>) | unknown
    consecutive_failures: int
    model_override: str | None = None  # with provider_override, pins the task's provider
    created_by: str | None = None  # who made the task (cards may go back to them)

    @classmethod
    def of(cls, d: TaskDetail, summaries: list[str], state: str) -> SourceTask:
        """From a task's row, its latest run summaries and its workspace state."""
        return cls(
            task_id=d.task_id,
            title=d.title,
            status=d.status,
            assignee=d.assignee,
            provider_override=d.provider_override,
            branch=d.branch,
            workspace=d.workspace,
            cannot_touch=scope_exclusions(d.body),
            completed=" | ".join(summaries) or None,
            state=state,
            consecutive_failures=d.consecutive_failures,
            model_override=d.model_override,
            created_by=d.created_by,
        )


def card_owner(route: str, source: SourceTask, orchestrator: str, known: Container[str]) -> str:
    """Who a card for `source` is assigned to. `cards.route = "creator"`: the profile that
    created the task, when that is a profile known here (else nobody would pick the card
    up); otherwise, and with `"orchestrator"`, the orchestrator profile."""
    creator = (source.created_by or "").strip()
    if route == "creator" and creator and creator != AUTHOR and creator in known:
        return creator
    return orchestrator


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


EPOCH_FLOOR = 1_000_000_000  # 2001-09-09: smaller numbers are counts, not times


def readable_time(epoch: float) -> str:
    """An epoch time as a person reads it: ISO 8601, UTC, to the second."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_time(key: str, value: Any) -> bool:
    return (
        key.endswith(("_at", "_until"))
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value >= EPOCH_FLOOR
    )


def _evidence_line(key: str, value: Any) -> str:
    if _is_time(key, value):
        return f"- {key}: {readable_time(value)}"
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


def card_action(
    *,
    watcher: str,
    board: str,
    source: SourceTask,
    provider: str | None,
    blocker: str,
    needs: str,
    evidence: Mapping[str, Any],
    reason: str,
    now: float,
    since: float,
    assignee: str,
    priority: int,
) -> Action:
    """The action that writes one card for `source` (the store applies it: card, parent
    link, source comment and events in one transaction, never a second open card)."""
    evidence = {**evidence, "watcher": watcher, "tick": f"{watcher}:{board}:{int(now)}"}
    facts = CardFacts(
        source_id=source.task_id,
        source_title=source.title,
        worker=source.assignee,
        provider=provider,
        branch=source.branch,
        workspace=source.workspace,
        blocker_type=blocker,
        completed=source.completed,
        cannot_touch=source.cannot_touch,
        needs=needs,
        state=source.state,
        evidence=evidence,
    )
    title = card_title(source.task_id, blocker)
    return Action(
        watcher=watcher,
        board=board,
        task_id=source.task_id,
        kind=ActionKind.CARD,
        reason=reason,
        evidence=evidence,
        expect={"title": title, "since": since},
        plan={
            "title": title,
            "body": render_body(facts),
            "blocker_type": blocker,
            "assignee": assignee,
            "priority": priority,
            "idempotency_key": f"watchers:{title}:{int(since)}",
            "comment": (
                f"kanban-watchers opened {{card}} ({title}) for {assignee}: {one_line(needs, 200)}"
            ),
        },
    )


@dataclass(frozen=True, slots=True)
class CardState:
    open_card: str | None  # id of an open card for (task, type), whoever wrote it
    resolved_at: float | None  # when the latest resolved one was closed
    resolved_event: int | None = None  # the last event of that card (a total order)


def card_needed(
    cards: Mapping[tuple[str, str], CardState],
    task_id: str,
    blocker: str,
    since: float,
    after_event: int | None = None,
) -> bool:
    """No open card for (task, blocker) by anyone, and none resolved after the trouble
    began: a resolved card answered everything before it; later trouble is a new episode.
    Board times are whole seconds, so when the trouble has an event, event ids decide the
    order (they are a total order); `since` (a time) is the fallback."""
    state = cards.get((task_id, blocker))
    if state is None:
        return True
    if state.open_card is not None:
        return False
    if after_event is not None and state.resolved_event is not None:
        return after_event > state.resolved_event
    return state.resolved_at is None or since > state.resolved_at


@dataclass(slots=True)
class _Card:
    card_id: str
    source: str
    blocker: str
    status: str
    resolved_at: float | None = None
    resolved_event: int | None = None


@dataclass(slots=True)
class CardIndex:
    """The cards on one board by (source, blocker type), whoever wrote them. New tasks
    are read by rowid; open cards are re-checked on every refresh."""

    cards: dict[str, _Card] = field(default_factory=dict)
    rowid: int = 0
    top: str | None = None  # the task at `rowid`: another one there means rowids were reused

    def refresh(self, store: BoardStore) -> dict[tuple[str, str], CardState]:
        self._read_new(store)
        self._recheck_open(store)
        return self._states(store)

    def _read_new(self, store: BoardStore) -> None:
        # SQLite hands a deleted top rowid to the next insert: if the task at our cursor
        # is not the one we saw there, rows were deleted and reused: read them all again.
        if self.rowid and store.task_id_at_rowid(self.rowid) != self.top:
            self.rowid = 0
        top, top_id = store.top_task()
        for _rowid, card_id, title, status in store.card_rows_between(self.rowid, top):
            parsed = parse_card_title(title)
            if parsed is not None:
                self.cards[card_id] = _Card(card_id, parsed[0], parsed[1], status)
        self.rowid, self.top = top, top_id

    def _recheck_open(self, store: BoardStore) -> None:
        open_ids = [c.card_id for c in self.cards.values() if c.status not in ("done", "archived")]
        if not open_ids:
            return
        details = store.task_details(open_ids)
        for card_id in open_ids:
            d = details.get(card_id)
            if d is None:
                del self.cards[card_id]
            elif d.status in ("done", "archived"):
                card = self.cards[card_id]
                card.status = d.status
                card.resolved_at = d.completed_at or store.last_event_at(card_id) or d.created_at
                card.resolved_event = store.last_event_id(card_id)

    def _states(self, store: BoardStore) -> dict[tuple[str, str], CardState]:
        unknown = [
            c
            for c in self.cards.values()
            if c.status in ("done", "archived") and c.resolved_at is None
        ]
        if unknown:
            details = store.task_details([c.card_id for c in unknown])
            for c in unknown:
                d = details.get(c.card_id)
                c.resolved_at = (
                    (d.completed_at if d else None) or store.last_event_at(c.card_id) or 0
                )
                c.resolved_event = store.last_event_id(c.card_id)
        out: dict[tuple[str, str], CardState] = {}
        for c in self.cards.values():
            key = (c.source, c.blocker)
            prev = out.get(key, CardState(None, None))
            if c.status not in ("done", "archived"):
                out[key] = CardState(c.card_id, prev.resolved_at, prev.resolved_event)
            else:
                out[key] = CardState(
                    prev.open_card,
                    max(prev.resolved_at or 0, c.resolved_at or 0),
                    max(prev.resolved_event or 0, c.resolved_event or 0) or None,
                )
        return out
