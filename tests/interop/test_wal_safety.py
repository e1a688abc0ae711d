"""A watchers process that ends must never take Hermes's later writes with it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hermes_cli import kanban_db as kb

pytestmark = pytest.mark.interop


def count_tasks_from_another_process(path) -> int:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True); "
            "print(c.execute('SELECT COUNT(*) FROM tasks').fetchone()[0])",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def test_hermes_writes_after_watchers_once_exits_are_not_lost(hermes_board, watchers):
    """Hermes keeps its connection; `watchers once` runs and exits; Hermes's next write is seen."""
    conn = kb.connect(hermes_board.path)
    try:
        kb.create_task(conn, title="before")
        assert watchers.once(hermes_board.path) == []
        kb.create_task(conn, title="after")
        # counted while Hermes still holds its connection: its close would checkpoint a
        # deleted WAL back into the file and hide the loss
        assert count_tasks_from_another_process(hermes_board.path) == 2
    finally:
        conn.close()


def test_the_same_holds_when_watchers_wrote_something(hermes_board, watchers):
    """A reap commits, the process exits, and Hermes's later writes still reach the file."""
    conn = kb.connect(hermes_board.path)
    try:
        task_id = hermes_board.create("dies")
        hermes_board.dispatch()
        hermes_board.kill(task_id, reap=True)
        [action] = watchers.once(hermes_board.path)
        assert action["applied"] and action["task_id"] == task_id
        kb.create_task(conn, title="after")
        # counted while Hermes still holds its connection: its close would checkpoint a
        # deleted WAL back into the file and hide the loss
        assert count_tasks_from_another_process(hermes_board.path) == 2
    finally:
        conn.close()


def test_a_plain_writable_connection_closing_does_lose_them(hermes_board):
    """The hazard itself, in Hermes 0.19: Hermes's next write is invisible to everyone else
    until Hermes closes (if this ever fails, Hermes fixed it)."""
    conn = kb.connect(hermes_board.path)
    try:
        kb.create_task(conn, title="before")
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                "c.execute('SELECT 1 FROM tasks').fetchall(); c.close()",
                str(hermes_board.path),
            ],
            check=True,
        )
        kb.create_task(conn, title="after")
        assert count_tasks_from_another_process(hermes_board.path) == 1
    finally:
        conn.close()
