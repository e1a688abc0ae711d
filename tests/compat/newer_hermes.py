"""A board as Hermes 0.20/0.21 (Hermes's main branch) leaves it, for tests.

Those releases are not on the package index this project installs from, so this module
describes what they change on a board, as facts, and applies them to a board that
Hermes 0.19.0 created with its own code:

- the schema grows additively: `tasks` gains `provider_override`, `reasoning_effort` and
  `completion_contract`; `kanban_notify_subs` gains five delivery columns; two recipe
  tables arrive, and `recipe_instance_tasks.task_id` is the schema's first foreign key
  (`REFERENCES tasks(id) ON DELETE RESTRICT`, with foreign keys enforced): a task a recipe
  made can never be deleted;
- every task `create_task` makes carries `completion_contract = 'local-only'`;
- the review lane: a worker hands its task to review (`review_requested`), the dispatcher
  claims it from `review` for a reviewer (the `claimed` event says `source_status:
  "review"`, as 0.19.0's own `claim_review_task` already writes it), and a reviewer's
  failed attempt returns the task to `review`;
- new event kinds (`review_requested`, `status`, `reconciled`, …) appear in the log.

The column lists come from `watchers.store.schema`, the one place the project states the
newer schema; this module only applies them, the way Hermes's additive migrations would.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from watchers.store.schema import (
    NEWER_NOTIFY_COLUMNS,
    NEWER_TABLES,
    NEWER_TASK_COLUMNS,
    add_column_statements,
)

COMPLETION_CONTRACT = "local-only"
"""What the newer `create_task` writes into `completion_contract`."""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA foreign_keys=ON")  # as Hermes opens its boards
    return conn


def migrate(path: Path) -> None:
    """Add the newer columns and tables to a 0.19 board, in one transaction."""
    conn = _connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        have = {r[1] for r in conn.execute("PRAGMA table_info(tasks)")}
        tasks = tuple(c for c in NEWER_TASK_COLUMNS if c[0] not in have)
        for statement in (
            *add_column_statements("tasks", tasks),
            *add_column_statements("kanban_notify_subs", NEWER_NOTIFY_COLUMNS),
            *NEWER_TABLES,
        ):
            conn.execute(statement)
        conn.execute("COMMIT")
    finally:
        conn.close()


def event(path: Path, task_id: str, kind: str, payload: dict[str, Any] | None = None) -> int:
    """Append an event as Hermes does (JSON payload, epoch seconds); its id."""
    conn = _connect(path)
    try:
        cur = conn.execute(
            "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) "
            "VALUES (?, NULL, ?, ?, ?)",
            (task_id, kind, json.dumps(payload) if payload else None, int(time.time())),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid
    finally:
        conn.close()


def created(path: Path, task_id: str) -> None:
    """What the newer `create_task` adds to the row 0.19.0's made."""
    conn = _connect(path)
    try:
        conn.execute(
            "UPDATE tasks SET completion_contract = ? WHERE id = ?", (COMPLETION_CONTRACT, task_id)
        )
    finally:
        conn.close()


def request_review(path: Path, task_id: str) -> None:
    """The worker hands its finished task to the review lane: `ready` or `running` →
    `review`, an open run closed as completed, and a `review_requested` event."""
    now = int(time.time())
    conn = _connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(
            "SELECT assignee, current_run_id FROM tasks WHERE id = ? "
            "AND status IN ('ready', 'running')",
            (task_id,),
        ).fetchone()
        assert row is not None, task_id
        conn.execute(
            "UPDATE tasks SET status = 'review', claim_lock = NULL, claim_expires = NULL, "
            "worker_pid = NULL, current_run_id = NULL WHERE id = ?",
            (task_id,),
        )
        if row[1] is not None:
            conn.execute(
                "UPDATE task_runs SET status = 'completed', outcome = 'completed', ended_at = ? "
                "WHERE id = ? AND ended_at IS NULL",
                (now, row[1]),
            )
        conn.execute(
            "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) "
            "VALUES (?, ?, 'review_requested', ?, ?)",
            (task_id, row[1], json.dumps({"by": row[0]}), now),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def pin(path: Path, task_id: str, provider: str, model: str) -> None:
    """Pin a task to a provider: `provider_override` works only with `model_override`."""
    conn = _connect(path)
    try:
        conn.execute(
            "UPDATE tasks SET provider_override = ?, model_override = ? WHERE id = ?",
            (provider, model, task_id),
        )
    finally:
        conn.close()


def made_by_recipe(path: Path, task_ids: list[str]) -> str:
    """Record the tasks as one recipe instance's nodes (the foreign key on tasks)."""
    instance = f"ri_{int(time.time() * 1000):x}"
    conn = _connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO recipe_instances (id, idempotency_key, recipe_id, schema_version, "
            "definition_digest, request_digest, definition_json, inputs_json, bindings_json, "
            "effective_plan_json, created_by, created_at) "
            "VALUES (?, ?, 'split-and-review', 1, 'd', 'r', '{}', '{}', '{}', '{}', 'test', ?)",
            (instance, instance, int(time.time())),
        )
        for i, task_id in enumerate(task_ids):
            conn.execute(
                "INSERT INTO recipe_instance_tasks (instance_id, node_key, task_id) "
                "VALUES (?, ?, ?)",
                (instance, f"node-{i}", task_id),
            )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return instance
