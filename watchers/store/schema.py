"""The board file format: what a Hermes board must have, and an empty one of our own.

The embedded board carries the newest schema we know: a Hermes Agent 0.19 board's
tables and columns (same types, primary keys and indexes, so Hermes 0.19 opens it as its
own and its migrations find nothing to change), plus what Hermes 0.20/0.21 added — three
task columns, five notify-subscription columns and the two recipe tables. Every addition
is additive, as Hermes's own migrations are, so both lines of releases use the file
(tests check 0.19.0 against it with the real package).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

REQUIRED_TABLES = frozenset({"tasks", "task_runs", "task_events", "task_comments", "task_links"})
REQUIRED_TASK_COLUMNS = frozenset(
    {
        "id",
        "title",
        "assignee",
        "status",
        "created_at",
        "started_at",
        "claim_lock",
        "claim_expires",
        "worker_pid",
        "current_run_id",
        "consecutive_failures",
        "last_failure_error",
        "last_heartbeat_at",
    }
)
OPTIONAL_TASK_COLUMNS = ("max_retries", "worker_started_at", "provider_override")

NEWER_TASK_COLUMNS = (
    ("provider_override", "TEXT"),
    ("reasoning_effort", "TEXT"),
    ("completion_contract", "TEXT"),
)
"""Columns Hermes 0.20/0.21 adds to `tasks` (name, declaration)."""

NEWER_NOTIFY_COLUMNS = (
    ("user_id_alt", "TEXT"),
    ("chat_type", "TEXT"),
    ("delivery_mode", "TEXT"),
    ("delivery_metadata", "TEXT"),
    ("last_ping_event_id", "INTEGER NOT NULL DEFAULT 0"),
)
"""Columns Hermes 0.20/0.21 adds to `kanban_notify_subs` (name, declaration)."""

NEWER_TABLES = (
    """CREATE TABLE recipe_instances (
        id TEXT PRIMARY KEY,
        idempotency_key TEXT NOT NULL UNIQUE,
        recipe_id TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        definition_digest TEXT NOT NULL,
        request_digest TEXT NOT NULL,
        definition_json TEXT NOT NULL,
        inputs_json TEXT NOT NULL,
        bindings_json TEXT NOT NULL,
        effective_plan_json TEXT NOT NULL,
        created_by TEXT,
        created_at INTEGER NOT NULL,
        imported INTEGER NOT NULL DEFAULT 0
    )""",
    # The schema's first foreign key: a task a recipe made can never be deleted.
    """CREATE TABLE recipe_instance_tasks (
        instance_id TEXT NOT NULL REFERENCES recipe_instances(id) ON DELETE RESTRICT,
        node_key TEXT NOT NULL,
        task_id TEXT NOT NULL UNIQUE REFERENCES tasks(id) ON DELETE RESTRICT,
        PRIMARY KEY (instance_id, node_key)
    )""",
)
"""Tables Hermes 0.20/0.21 adds (recipes: task graphs instantiated from a template)."""


def add_column_statements(table: str, columns: tuple[tuple[str, str], ...]) -> list[str]:
    return [f"ALTER TABLE {table} ADD COLUMN {name} {decl}" for name, decl in columns]


_TASKS = """
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    body TEXT,
    assignee TEXT,
    status TEXT NOT NULL,
    priority INTEGER DEFAULT 0,
    created_by TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    workspace_kind TEXT NOT NULL DEFAULT 'scratch',
    workspace_path TEXT,
    branch_name TEXT,
    project_id TEXT,
    claim_lock TEXT,
    claim_expires INTEGER,
    tenant TEXT,
    result TEXT,
    idempotency_key TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    worker_pid INTEGER,
    last_failure_error TEXT,
    max_runtime_seconds INTEGER,
    last_heartbeat_at INTEGER,
    current_run_id INTEGER,
    workflow_template_id TEXT,
    current_step_key TEXT,
    skills TEXT,
    model_override TEXT,
    max_retries INTEGER,
    goal_mode INTEGER NOT NULL DEFAULT 0,
    goal_max_turns INTEGER,
    session_id TEXT,
    block_kind TEXT,
    block_recurrences INTEGER NOT NULL DEFAULT 0
)"""

_OTHER_TABLES = (
    """CREATE TABLE task_links (
        parent_id TEXT NOT NULL,
        child_id TEXT NOT NULL,
        PRIMARY KEY (parent_id, child_id)
    )""",
    """CREATE TABLE task_comments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        author TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL
    )""",
    """CREATE TABLE task_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        run_id INTEGER,
        kind TEXT NOT NULL,
        payload TEXT,
        created_at INTEGER NOT NULL
    )""",
    """CREATE TABLE task_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        profile TEXT,
        step_key TEXT,
        status TEXT NOT NULL,
        claim_lock TEXT,
        claim_expires INTEGER,
        worker_pid INTEGER,
        max_runtime_seconds INTEGER,
        last_heartbeat_at INTEGER,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        outcome TEXT,
        summary TEXT,
        metadata TEXT,
        error TEXT
    )""",
    """CREATE TABLE task_attachments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        filename TEXT NOT NULL,
        stored_path TEXT NOT NULL,
        content_type TEXT,
        size INTEGER NOT NULL DEFAULT 0,
        uploaded_by TEXT,
        created_at INTEGER NOT NULL
    )""",
    """CREATE TABLE kanban_notify_subs (
        task_id TEXT NOT NULL,
        platform TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        thread_id TEXT NOT NULL DEFAULT '',
        user_id TEXT,
        notifier_profile TEXT,
        created_at INTEGER NOT NULL,
        last_event_id INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (task_id, platform, chat_id, thread_id)
    )""",
)

_INDEXES = (
    "CREATE INDEX idx_tasks_assignee_status ON tasks(assignee, status)",
    "CREATE INDEX idx_tasks_status ON tasks(status)",
    "CREATE INDEX idx_tasks_tenant ON tasks(tenant)",
    "CREATE INDEX idx_tasks_idempotency ON tasks(idempotency_key)",
    "CREATE INDEX idx_tasks_session_id ON tasks(session_id)",
    "CREATE INDEX idx_links_child ON task_links(child_id)",
    "CREATE INDEX idx_links_parent ON task_links(parent_id)",
    "CREATE INDEX idx_comments_task ON task_comments(task_id, created_at)",
    "CREATE INDEX idx_events_task ON task_events(task_id, created_at)",
    "CREATE INDEX idx_events_run ON task_events(run_id, id)",
    "CREATE INDEX idx_runs_task ON task_runs(task_id, started_at)",
    "CREATE INDEX idx_runs_status ON task_runs(status)",
    "CREATE INDEX idx_attachments_task ON task_attachments(task_id, created_at)",
    "CREATE INDEX idx_notify_task ON kanban_notify_subs(task_id)",
)


def create_board(path: Path) -> Path:
    """Create a new, empty board at `path` (which must not exist yet)."""
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        for statement in (
            _TASKS,
            *_OTHER_TABLES,
            *_INDEXES,
            *add_column_statements("tasks", NEWER_TASK_COLUMNS),
            *add_column_statements("kanban_notify_subs", NEWER_NOTIFY_COLUMNS),
            *NEWER_TABLES,
        ):
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        path.unlink(missing_ok=True)
        raise
    conn.close()
    return path
