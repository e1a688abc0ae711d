"""A stalled dispatcher on a board Hermes 0.19.0 made: ready work waits, nothing claims it.

Boards, tasks, claims and the dispatch lock are Hermes's own (`hermes_cli.kanban_db`); the
wait is made by moving the rows' times back, not by sleeping. The check is run as the
daemon runs it (the board opened, one pass, closed); the metrics and `watchers status`
read the same board.
"""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hermes_cli import kanban_db as kb
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from tests.interop.interop_harness import PROCESS_TIMEOUT, HermesBoard
from watchers.boards import unique_slugs
from watchers.clock import SystemClock
from watchers.dispatcher.watcher import Dispatcher
from watchers.metrics import BoardCollector
from watchers.probe import ProcessProbe
from watchers.runner import run_tick
from watchers.settings import Settings, load_settings
from watchers.status import board_status, render_status
from watchers.store.board import BoardStore

HOLD_DISPATCH_LOCK = (
    "import os, sys\n"
    "from pathlib import Path\n"
    "from hermes_cli import kanban_db as kb\n"
    "with kb._dispatch_tick_lock(Path(sys.argv[1])) as held:\n"
    "    os.write(1, b'held\\n' if held else b'busy\\n')\n"
    "    sys.stdin.readline()\n"
)
"""Hermes's own dispatcher lock, held as one of its ticks holds it, until told to stop."""


class Watched:
    """The daemon's side of the metrics collector, as plain data."""

    def __init__(self, boards: list[Path]) -> None:
        self.settings: Settings = load_settings()
        self.boards = boards

    def successes(self) -> dict[tuple[str, str], float]:
        return {}

    def scheduled(self) -> dict[tuple[str, str], float]:
        return {}

    def slug_of(self, path: Path) -> str:
        return unique_slugs(self.boards)[path]


def age(board: Path, seconds: int) -> None:
    """Everything on the board happened `seconds` earlier than it did."""
    conn = sqlite3.connect(board)
    try:
        with conn:
            for table, column in (
                ("tasks", "created_at"),
                ("task_events", "created_at"),
                ("task_runs", "started_at"),
            ):
                conn.execute(f"UPDATE {table} SET {column} = {column} - ?", (seconds,))
    finally:
        conn.close()


def check(board: Path, checker: Dispatcher) -> list[dict]:
    """One pass of the check, as the daemon makes it; the log lines it wrote."""
    store = BoardStore.open(board, busy_timeout=2.0)
    try:
        with capture_logs() as logs:
            report = run_tick(checker, store, load_settings(), SystemClock())
    finally:
        store.close()
    assert report.ok and report.outcomes == (), report
    return [line for line in logs if str(line["event"]).startswith("dispatcher")]


def gauges(board: Path) -> tuple[float | None, float | None]:
    """(last claim, oldest ready age) as a fresh scrape reports them."""
    registry = CollectorRegistry()
    registry.register(BoardCollector(Watched([board]), max_age=0))
    labels = {"board": "default"}
    return (
        registry.get_sample_value("watchers_dispatcher_last_claim_timestamp_seconds", labels),
        registry.get_sample_value("watchers_ready_oldest_age_seconds", labels),
    )


def status_of(board: Path) -> tuple[dict, str]:
    store = BoardStore.open(board, readonly=True)
    probe = ProcessProbe()
    try:
        data = board_status(store, probe, load_settings(), time.time())
    finally:
        store.close()
        probe.close()
    return data["dispatcher"], render_status(data)


@pytest.mark.interop
def test_ready_work_nobody_claims_is_a_stall_told_once_and_a_claim_ends_it(
    hermes_board: HermesBoard,
) -> None:
    """20 minutes of waiting, no claim: one error line, the gauges, the status line; then
    Hermes's dispatcher claims it: resumed."""
    first = hermes_board.create("waits longest")
    age(hermes_board.path, 60)
    second = hermes_board.create("waits too")
    age(hermes_board.path, 1140)
    checker = Dispatcher(ProcessProbe())

    [line] = check(hermes_board.path, checker)
    assert (line["event"], line["log_level"], line["board"]) == (
        "dispatcher stalled",
        "error",
        "default",
    )
    assert line["ready"] == 2 and line["oldest_ready_task"] == first
    assert 1200 <= line["oldest_ready_age_seconds"] < 1260
    assert line["last_claim_at"] is None
    assert line["dispatch_lock"] == "no lock file (no Hermes dispatch has run here)"
    assert check(hermes_board.path, checker) == []  # one line per stall, not per pass

    last_claim, oldest = gauges(hermes_board.path)
    assert last_claim is not None and math.isnan(last_claim)  # NaN: never a claim
    assert oldest is not None and 1200 <= oldest < 1260
    facts, text = status_of(hermes_board.path)
    assert facts["stalled"] and facts["dispatchable"] == 2 and facts["last_claim_at"] is None
    assert "  dispatcher: no claim ever; oldest ready 20m (2 waiting); STALLED" in text
    assert "  dispatch lock: no lock file (no Hermes dispatch has run here)" in text

    spawned = hermes_board.dispatch()  # Hermes's own tick: claims both, spawns workers
    assert sorted(spawned) == sorted([first, second])
    [line] = check(hermes_board.path, checker)
    assert (line["event"], line["log_level"]) == ("dispatcher resumed", "info")
    last_claim, oldest = gauges(hermes_board.path)
    assert last_claim is not None and time.time() - 60 < last_claim <= time.time()
    assert oldest == 0
    facts, text = status_of(hermes_board.path)
    assert not facts["stalled"] and facts["running"] == 2
    assert "STALLED" not in text and "dispatcher: last claim" in text


@pytest.mark.interop
def test_a_claim_within_stall_seconds_is_no_stall_however_old_the_ready_work(
    hermes_board: HermesBoard,
) -> None:
    """The dispatcher claimed one task 5 minutes ago; another has waited an hour: fine."""
    old = hermes_board.create("old")
    hermes_board.create("claimed")
    age(hermes_board.path, 3600)
    with hermes_board.connect() as conn:
        [claimed] = hermes_board.tasks_titled("claimed")
        assert kb.claim_task(conn, claimed.id) is not None
    age(hermes_board.path, 300)
    checker = Dispatcher(ProcessProbe())
    assert check(hermes_board.path, checker) == []
    due = checker.deadline(hermes_board.path)
    assert due is not None and abs(due - (time.time() + 300)) < 5  # when that claim is 10m old
    facts, _ = status_of(hermes_board.path)
    assert not facts["stalled"] and facts["oldest_ready_task"] == old


@pytest.mark.interop
def test_ready_work_held_back_by_hermes_config_is_no_stall(
    hermes_home: Path, hermes_board: HermesBoard
) -> None:
    """kanban.max_in_progress reached, or an assignee that is no profile: Hermes would not
    spawn them either, so an hour of waiting is no stall."""
    running = hermes_board.create("running")
    hermes_board.create("capped")
    hermes_board.create("a terminal's lane", assignee="orion-cc")
    with hermes_board.connect() as conn:
        assert kb.claim_task(conn, running) is not None
    age(hermes_board.path, 3600)
    (hermes_home / "config.yaml").write_text(
        yaml.safe_dump({"kanban": {"max_in_progress": 1}}), encoding="utf-8"
    )
    with hermes_board.connect() as conn:  # Hermes agrees: nothing to spawn
        assert kb.dispatch_once(conn, dry_run=True, max_in_progress=1).spawned == []
    assert check(hermes_board.path, Dispatcher(ProcessProbe())) == []
    facts, _ = status_of(hermes_board.path)
    assert facts["held_back"] == {"global_cap": 2} and not facts["stalled"]

    (hermes_home / "config.yaml").write_text("kanban: {}\n", encoding="utf-8")
    [line] = check(hermes_board.path, Dispatcher(ProcessProbe()))
    assert line["event"] == "dispatcher stalled" and line["ready"] == 1  # orion-cc is no profile


@pytest.mark.interop
def test_the_stall_line_names_the_process_holding_hermes_dispatch_lock(
    hermes_board: HermesBoard,
) -> None:
    """A dispatcher stuck inside its tick holds the lock: its pid is in the error line."""
    hermes_board.create("waits")
    age(hermes_board.path, 1200)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_DISPATCH_LOCK, str(hermes_board.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=os.environ.copy(),
    )
    try:
        assert holder.stdout is not None
        assert os.read(holder.stdout.fileno(), 64) == b"held\n"
        [line] = check(hermes_board.path, Dispatcher(ProcessProbe()))
        assert line["dispatch_lock"].startswith(f"held by pid {holder.pid} (python")
        assert line["dispatch_lock_pids"] == [holder.pid]
    finally:
        holder.communicate(b"go\n", timeout=PROCESS_TIMEOUT)
    [line] = check(hermes_board.path, Dispatcher(ProcessProbe()))
    assert line["dispatch_lock"] == "no process holds it"
