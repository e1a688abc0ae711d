"""Shared fixtures: real board files, real worker processes, real settings."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from watchers.autoheal.watcher import AutoHeal
from watchers.clock import SystemClock
from watchers.demo.dispatcher import DemoDispatcher
from watchers.model import TickReport
from watchers.probe import ProcessProbe
from watchers.runner import run_tick
from watchers.settings import Settings, load_settings
from watchers.store.board import BoardStore
from watchers.store.schema import create_board


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No test sees the developer's WATCHERS_* settings or Hermes home."""
    for name in list(os.environ):
        if name.startswith(("WATCHERS_", "HERMES_")) or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HERMES_HOME", str(tmp_path / "hermes-home"))


@pytest.fixture
def board(tmp_path) -> Path:
    return create_board(tmp_path / "kanban.db")


@pytest.fixture
def dispatcher(board) -> Iterator[DemoDispatcher]:
    d = DemoDispatcher(board)
    yield d
    for proc in d.workers.values():
        if proc.poll() is None:
            proc.kill()
    d.close()


def settings(**auto_heal: object) -> Settings:
    base = load_settings()
    return base.model_copy(update={"auto_heal": base.auto_heal.model_copy(update=auto_heal)})


def tick(
    path: Path, s: Settings | None = None, *, healer: AutoHeal | None = None, dry_run=False
) -> TickReport:
    """One auto-heal tick over a board, with a real probe."""
    store = BoardStore.open(path, busy_timeout=0.2)
    own = healer is None
    healer = healer or AutoHeal(ProcessProbe())
    try:
        return run_tick(healer, store, s or settings(), SystemClock(), dry_run=dry_run)
    finally:
        store.close()
        if own:
            healer.probe.close()


def rows(path: Path, sql: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def events(path: Path, task_id: str, kind: str | None = None) -> list[dict]:
    out = []
    for kind_, payload in rows(
        path, "SELECT kind, payload FROM task_events WHERE task_id = ? ORDER BY id", (task_id,)
    ):
        if kind is None or kind_ == kind:
            out.append({"kind": kind_, **(json.loads(payload) if payload else {})})
    return out


def give_up(path: Path, task_id: str, errors: list[str], *, at: int, outcome="crashed") -> None:
    """Record failed attempts and a breaker trip the way Hermes writes them."""
    d = DemoDispatcher(path)
    try:
        d.record_give_up(task_id, errors, at=at, outcome=outcome)
    finally:
        d.close()
