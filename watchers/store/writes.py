"""The executor's writes: one method per action kind, each one short transaction that
commits whole or not at all, compare-and-swap on the state the action was decided on."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Mapping
from typing import Any

from watchers.cards import CARD_MARK, parse_card_title
from watchers.hermes.events import LANES, READY, STATE_CHANGE_KINDS
from watchers.model import (
    Action,
    ActionKind,
)
from watchers.store.connection import Connection
from watchers.store.rows import (
    AUTHOR,
    BUDGET_MALFORMED,
    BUDGET_WARNING,
    ERROR_TEXT_LIMIT,
    ESCALATED,
    NEWER_CARD_DEFAULTS,
    _lenient_text,
    _Undecodable,
)


class Writes(Connection):
    """Applies actions."""

    def apply(self, action: Action, now: int) -> bool:
        """Apply one action in one transaction. True when it committed; False when
        the row no longer matched what the decision read (someone else acted)."""
        if action.kind in (ActionKind.REAP, ActionKind.RECLAIM):
            return self._release_run(action, now)
        if action.kind is ActionKind.RESET:
            return self._reset(action, now)
        if action.kind is ActionKind.ESCALATE:
            return self._escalate(action, now)
        if action.kind is ActionKind.REASSIGN:
            return self._reassign(action, now)
        if action.kind is ActionKind.CARD:
            return self._write_card(action, now)
        if action.kind in (ActionKind.WARN, ActionKind.NOTE):
            return self._budget_notice(action, now)
        raise ValueError(f"unknown action kind {action.kind}")

    def _comment(self, conn: sqlite3.Connection, task_id: str, body: str, now: int) -> None:
        conn.execute(
            "INSERT INTO task_comments (task_id, author, body, created_at) VALUES (?, ?, ?, ?)",
            (task_id, AUTHOR, body, now),
        )
        # Hermes records every comment as an event too; its notifier tails events.
        insert_event(conn, task_id, "commented", {"author": AUTHOR, "len": len(body)}, now)

    def _release_run(self, action: Action, now: int) -> bool:
        e, p = action.expect, action.plan
        error = str(p["error"])[:ERROR_TEXT_LIMIT]
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE tasks SET status = ?, claim_lock = NULL, claim_expires = NULL, "
                "worker_pid = NULL, current_run_id = NULL, consecutive_failures = ?, "
                "last_failure_error = CASE WHEN ? THEN ? ELSE last_failure_error END "
                "WHERE id = ? AND status = 'running' AND claim_lock IS ? AND worker_pid IS ? "
                "AND current_run_id IS ? AND consecutive_failures = ?",
                (
                    p["new_status"],
                    p["failures"],
                    bool(p["record_error"]),
                    error,
                    action.task_id,
                    e["claim_lock"],
                    e["worker_pid"],
                    e["current_run_id"],
                    e["consecutive_failures"],
                ),
            )
            if cur.rowcount != 1:
                return False
            run_id = e["current_run_id"]
            metadata = {"by": AUTHOR, **p["metadata"]}
            if run_id is not None:
                conn.execute(
                    "UPDATE task_runs SET status = ?, outcome = ?, error = ?, metadata = ?, "
                    "ended_at = ?, claim_lock = NULL, claim_expires = NULL, worker_pid = NULL "
                    "WHERE id = ? AND ended_at IS NULL",
                    (p["outcome"], p["outcome"], error, json.dumps(metadata), now, run_id),
                )
            payload = {"by": AUTHOR, **p["event_payload"], "evidence": dict(action.evidence)}
            insert_event(conn, action.task_id, p["event_kind"], payload, now, run_id)
            if p.get("trip"):
                insert_event(
                    conn,
                    action.task_id,
                    "gave_up",
                    {
                        "by": AUTHOR,
                        "failures": p["failures"],
                        "effective_limit": p["effective_limit"],
                        "limit_source": p["limit_source"],
                        "error": error,
                        "trigger_outcome": p["outcome"],
                        **p["event_payload"],
                    },
                    now,
                )
        return True

    def _reset(self, action: Action, now: int) -> bool:
        e, p = action.expect, action.plan
        marks = ",".join("?" * len(STATE_CHANGE_KINDS))
        with self._write() as conn:
            row = conn.execute(
                "SELECT current_run_id FROM tasks WHERE id = ? AND status = 'blocked'",
                (action.task_id,),
            ).fetchone()
            if row is None:
                return False
            new_status = _unblocked_status(conn, action.task_id, p.get("lane", READY))
            cur = conn.execute(
                "UPDATE tasks SET status = ?, current_run_id = NULL, consecutive_failures = 0, "
                "last_failure_error = NULL "
                "WHERE id = ? AND status = 'blocked' AND consecutive_failures = ? "
                "AND NOT EXISTS (SELECT 1 FROM task_events "
                f"WHERE task_id = ? AND id > ? AND kind IN ({marks}))",
                (
                    new_status,
                    action.task_id,
                    e["consecutive_failures"],
                    action.task_id,
                    e["gave_up_event_id"],
                    *STATE_CHANGE_KINDS,
                ),
            )
            if cur.rowcount != 1:
                return False
            if row[0] is not None:  # keep Hermes's invariant: no open run outside `running`
                conn.execute(
                    "UPDATE task_runs SET status = 'reclaimed', outcome = 'reclaimed', "
                    "ended_at = ?, "
                    "summary = COALESCE(summary, 'closed by watchers on reset'), "
                    "claim_lock = NULL, claim_expires = NULL, worker_pid = NULL "
                    "WHERE id = ? AND ended_at IS NULL",
                    (now, row[0]),
                )
            payload = {
                "by": AUTHOR,
                "reset": p["reset_number"],
                "status": new_status,
                "reason": action.reason,
                "gave_up_event_id": e["gave_up_event_id"],
                "evidence": dict(action.evidence),
            }
            insert_event(conn, action.task_id, "unblocked", payload, now)
            self._comment(
                conn, action.task_id, str(p["comment"]).replace("{status}", new_status), now
            )
        return True

    def _escalate(self, action: Action, now: int) -> bool:
        e, p = action.expect, action.plan
        marks = ",".join("?" * len(STATE_CHANGE_KINDS))
        with self._write() as conn:
            cur = conn.execute(
                "SELECT 1 FROM tasks WHERE id = ? AND status = 'blocked' "
                # any escalation after the give-up is an escalation of this give-up
                f"AND NOT EXISTS (SELECT 1 FROM task_events WHERE task_id = ? AND id > ? "
                f"  AND kind IN ({marks}, ?))",
                (
                    action.task_id,
                    action.task_id,
                    e["gave_up_event_id"],
                    *STATE_CHANGE_KINDS,
                    ESCALATED,
                ),
            ).fetchone()
            if cur is None:
                return False
            payload = {
                "by": AUTHOR,
                "reason": action.reason,
                "gave_up_event_id": e["gave_up_event_id"],
                "evidence": dict(action.evidence),
            }
            insert_event(conn, action.task_id, ESCALATED, payload, now)
            self._comment(conn, action.task_id, str(p["comment"]), now)
        return True

    def _budget_notice(self, action: Action, now: int) -> bool:
        """A budget warning (once per attempt and budget) or a malformed-line report (once
        per line): an event and a comment, unless one was written already."""
        e = action.expect
        warn = action.kind is ActionKind.WARN
        kind = BUDGET_WARNING if warn else BUDGET_MALFORMED
        marker = json.dumps(
            {"budget": e["budget"]} if warn else {"line": e["line"]}, ensure_ascii=False
        )[1:-1]
        with self._write() as conn:
            seen = conn.execute(
                "SELECT 1 FROM task_events WHERE task_id = ? AND kind = ? AND run_id IS ? "
                "AND instr(payload, ?) > 0 LIMIT 1",
                (action.task_id, kind, e.get("run_id"), marker),
            ).fetchone()
            if seen is not None:
                return False
            payload = {
                "by": AUTHOR,
                "reason": action.reason,
                **({"budget": e["budget"]} if warn else {"line": e["line"]}),
                "evidence": dict(action.evidence),
            }
            insert_event(conn, action.task_id, kind, payload, now, e.get("run_id"))
            self._comment(conn, action.task_id, str(action.plan["comment"]), now)
        return True

    def _reassign(self, action: Action, now: int) -> bool:
        e, p = action.expect, action.plan
        with self._write() as conn:
            row = conn.execute(
                "SELECT status FROM tasks WHERE id = ? AND assignee IS ? AND status = ? "
                "AND status NOT IN ('running', 'done', 'archived')",
                (action.task_id, e["assignee"], e["status"]),
            ).fetchone()
            if row is None:
                return False
            new_status = row[0]
            if row[0] == "blocked":
                new_status = _unblocked_status(conn, action.task_id, p.get("lane", READY))
            # As Hermes's assign_task: a new profile starts with a fresh failure budget.
            conn.execute(
                "UPDATE tasks SET assignee = ?, status = ?, consecutive_failures = 0, "
                "last_failure_error = NULL WHERE id = ?",
                (p["to"], new_status, action.task_id),
            )
            insert_event(
                conn,
                action.task_id,
                "assigned",
                {
                    "assignee": p["to"],
                    "by": AUTHOR,
                    "from": p["from"],
                    "to": p["to"],
                    "from_provider": p["from_provider"],
                    "to_provider": p["to_provider"],
                    "reason": action.reason,
                    "evidence": dict(action.evidence),
                },
                now,
            )
            if row[0] == "blocked":
                insert_event(
                    conn, action.task_id, "unblocked", {"by": AUTHOR, "status": new_status}, now
                )
            self._comment(conn, action.task_id, str(p["comment"]), now)
        return True

    def _write_card(self, action: Action, now: int) -> bool:
        p = action.plan
        title = str(p["title"])
        with self._write() as conn:
            # One open card per (task, blocker type), whoever wrote it and however its
            # title is spaced: checked under the write lock, so a second daemon on the
            # same board finds the first one's card.
            wanted = parse_card_title(title)
            conn.text_factory = _lenient_text  # an undecodable title is not a card; no error
            try:
                titles = conn.execute(
                    "SELECT title FROM tasks WHERE instr(title, ?) > 0 "
                    "AND status NOT IN ('done', 'archived')",
                    (CARD_MARK,),
                ).fetchall()
            finally:
                conn.text_factory = str
            if any(
                isinstance(t, str)
                and not isinstance(t, _Undecodable)
                and parse_card_title(t) == wanted
                for (t,) in titles
            ):
                return False
            source = conn.execute(
                "SELECT status FROM tasks WHERE id = ? AND status NOT IN ('done', 'archived')",
                (action.task_id,),
            ).fetchone()
            if source is None:
                return False
            card_id = new_task_id(conn)
            columns = {
                "id": card_id,
                "title": title,
                "body": p["body"],
                "assignee": p["assignee"],
                "status": "ready",
                "priority": p["priority"],
                "created_by": AUTHOR,
                "created_at": now,
                "workspace_kind": "scratch",
                "idempotency_key": p["idempotency_key"],
            }
            # Newer Hermes fills these in its own create_task; a card must look the same.
            columns.update({k: v for k, v in NEWER_CARD_DEFAULTS.items() if k in self.task_columns})
            names = ", ".join(columns)
            conn.execute(
                f"INSERT INTO tasks ({names}) VALUES ({', '.join('?' * len(columns))})",
                tuple(columns.values()),
            )
            insert_event(
                conn,
                card_id,
                "created",
                {"assignee": p["assignee"], "status": "ready", "parents": [], "by": AUTHOR},
                now,
            )
            # The card is the source's parent: the source waits for the orchestrator. Like
            # Hermes's link, only a `ready` source is demoted; a running one is left alone.
            conn.execute(
                "INSERT OR IGNORE INTO task_links (parent_id, child_id) VALUES (?, ?)",
                (card_id, action.task_id),
            )
            conn.execute(
                "UPDATE tasks SET status = 'todo' WHERE id = ? AND status = 'ready'",
                (action.task_id,),
            )
            insert_event(
                conn,
                action.task_id,
                "linked",
                {"parent": card_id, "child": action.task_id, "by": AUTHOR},
                now,
            )
            self._comment(conn, action.task_id, str(p["comment"]).replace("{card}", card_id), now)
        return True


def _unblocked_status(conn: sqlite3.Connection, task_id: str, lane: object) -> str:
    """Where a blocked task goes when it is put back, as Hermes's unblock: `todo` while a
    parent is unfinished, else the lane its last attempt came from (`ready`, `review`)."""
    undone = conn.execute(
        "SELECT 1 FROM task_links l JOIN tasks p ON p.id = l.parent_id "
        "WHERE l.child_id = ? AND p.status != 'done' LIMIT 1",
        (task_id,),
    ).fetchone()
    if undone:
        return "todo"
    return lane if isinstance(lane, str) and lane in LANES else READY


def new_task_id(conn: sqlite3.Connection) -> str:
    """`t_` + 8 hex digits, as Hermes makes them, not yet on the board."""
    while True:
        candidate = "t_" + secrets.token_hex(4)
        if conn.execute("SELECT 1 FROM tasks WHERE id = ?", (candidate,)).fetchone() is None:
            return candidate


def insert_event(
    conn: sqlite3.Connection,
    task_id: str,
    kind: str,
    payload: Mapping[str, Any] | None,
    now: int,
    run_id: int | None = None,
) -> None:
    """Append to `task_events` as Hermes does: JSON payload or NULL, epoch seconds."""
    conn.execute(
        "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?, ?, ?, ?, ?)",
        (task_id, run_id, kind, json.dumps(payload, ensure_ascii=False) if payload else None, now),
    )
