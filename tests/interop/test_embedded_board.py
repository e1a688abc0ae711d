"""The board `watchers init-board` creates is one Hermes takes as its own."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hermes_cli import kanban_db as kb

from tests.compat import newer_hermes
from tests.interop.interop_harness import PROFILE, sqlite_schema, table_shapes
from watchers.store.schema import create_board


@pytest.fixture
def embedded(hermes_home: Path) -> Path:
    """A fresh board made by kanban-watchers, not yet opened by Hermes."""
    return create_board(hermes_home / "embedded" / "kanban.db")


@pytest.mark.interop
def test_hermes_opens_the_embedded_board_without_changing_its_schema(embedded: Path) -> None:
    """Hermes's first connect (schema script and migrations) leaves every table and index as is."""
    before = sqlite_schema(embedded)

    kb.connect(embedded).close()

    assert sqlite_schema(embedded) == before


@pytest.mark.interop
def test_a_forced_hermes_migration_pass_leaves_the_embedded_board_unchanged(
    embedded: Path,
) -> None:
    """`init_db`, which re-runs every migration, finds nothing to change either."""
    before = sqlite_schema(embedded)

    kb.init_db(embedded)

    assert sqlite_schema(embedded) == before


@pytest.mark.interop
def test_the_embedded_board_has_the_newest_schema_we_know(
    embedded: Path, hermes_home: Path
) -> None:
    """Same tables, columns, types, defaults and keys as a board Hermes 0.19.0 creates
    itself and then migrates to the 0.20/0.21 schema."""
    hermes_made = hermes_home / "kanban.db"
    kb.connect(hermes_made).close()
    newer_hermes.migrate(hermes_made)

    assert table_shapes(embedded) == table_shapes(hermes_made)
    assert {"provider_override", "reasoning_effort", "completion_contract"} <= {
        column[0] for column in table_shapes(embedded)["tasks"]
    }
    assert {"recipe_instances", "recipe_instance_tasks"} <= set(table_shapes(embedded))


@pytest.mark.interop
def test_hermes_enforces_the_newer_foreign_key_on_the_embedded_board(embedded: Path) -> None:
    """A task a recipe made cannot be deleted, through Hermes's own connection."""
    conn = kb.connect(embedded)
    try:
        task_id = kb.create_task(conn, title="made by a recipe", assignee="coder")
    finally:
        conn.close()
    newer_hermes.made_by_recipe(embedded, [task_id])

    conn = kb.connect(embedded)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            conn.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
    finally:
        conn.close()


@pytest.mark.interop
def test_hermes_creates_claims_and_completes_a_task_on_the_embedded_board(
    embedded: Path,
) -> None:
    """A task goes ready, running and done through Hermes's API, with its run and events."""
    conn = kb.connect(embedded)
    try:
        task_id = kb.create_task(conn, title="on an embedded board", assignee="Coder")
        created = kb.get_task(conn, task_id)
        claimed = kb.claim_task(conn, task_id)
        completed = kb.complete_task(conn, task_id, result="ok", summary="done")
        done = kb.get_task(conn, task_id)
        runs = kb.list_runs(conn, task_id)
        kinds = [e.kind for e in kb.list_events(conn, task_id)]
    finally:
        conn.close()

    assert created is not None
    assert (created.status, created.assignee) == ("ready", PROFILE)
    assert claimed is not None
    assert claimed.status == "running"
    assert completed is True
    assert done is not None
    assert (done.status, done.current_run_id, done.claim_lock) == ("done", None, None)
    assert [(r.outcome, r.ended_at is not None) for r in runs] == [("completed", True)]
    assert kinds[0] == "created"
    assert {"claimed", "completed"} <= set(kinds)
