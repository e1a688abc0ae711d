"""One answer per signal: a second tick, a second process or a worker's card adds none."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hermes_cli import kanban_db as kb

from tests.interop.conftest import DistressCli
from tests.interop.interop_harness import (
    HermesBoard,
    WatchersCli,
    anthropic,
    provider_model,
    write_profile,
)


def board_state(board: HermesBoard) -> list[dict[str, Any]]:
    """Every task (its row, runs and events) and every link on the board."""
    with board.connect() as conn:
        ids = sorted(t.id for t in kb.list_tasks(conn, include_archived=True))
        links = conn.execute("SELECT parent_id, child_id FROM task_links ORDER BY 1, 2").fetchall()
    return [*(board.state(t) for t in ids), {"links": [tuple(r) for r in links]}]


@pytest.fixture
def no_route(
    hermes_home: Path, hermes_board: HermesBoard, distress: DistressCli
) -> tuple[str, WatchersCli]:
    """A task on anthropic's coder-a, rate-limited by Hermes, with no fallback at all."""
    write_profile(hermes_home, "coder-a", anthropic())
    task_id = hermes_board.create("rate limited", assignee="coder-a")
    hermes_board.rate_limit([task_id])
    return task_id, distress()


@pytest.mark.interop
def test_a_second_tick_adds_nothing_after_a_reassignment(
    hermes_home: Path, hermes_board: HermesBoard, distress: DistressCli
) -> None:
    """The reassignment answered the signal: the next pass changes nothing."""
    write_profile(hermes_home, "coder-a", anthropic())
    write_profile(hermes_home, "coder-b", provider_model("openai"))
    cli = distress('[profiles.coder-a]\nfallbacks = ["coder-b"]\n')
    task_id = hermes_board.create("rate limited", assignee="coder-a")
    hermes_board.rate_limit([task_id])
    assert [r["action"] for r in cli.once(hermes_board.path)] == ["reassign"]
    before = board_state(hermes_board)

    assert cli.once(hermes_board.path) == []
    assert board_state(hermes_board) == before


@pytest.mark.interop
def test_a_second_tick_adds_nothing_after_a_card(
    hermes_board: HermesBoard, no_route: tuple[str, WatchersCli]
) -> None:
    """The open card answers the signal: the next pass changes nothing."""
    _, cli = no_route
    assert [r["action"] for r in cli.once(hermes_board.path)] == ["card"]
    before = board_state(hermes_board)

    assert cli.once(hermes_board.path) == []
    assert board_state(hermes_board) == before


@pytest.mark.interop
def test_two_concurrent_passes_write_one_card(
    hermes_board: HermesBoard, no_route: tuple[str, WatchersCli]
) -> None:
    """Two `watchers once` let go together on one board: one card, one link, one comment."""
    task_id, cli = no_route
    procs = [cli.start_once(hermes_board.path, gated=True) for _ in range(2)]
    for proc in procs:
        cli.release(proc)
    records = [r for proc in procs for r in cli.finish(proc)]

    # both usually decide to write it; the loser finds the winner's card under the write lock
    assert {r["action"] for r in records} == {"card"}
    assert [r["result"] for r in records].count("applied") == 1
    assert {r["result"] for r in records} <= {"applied", "race_lost"}
    [card] = hermes_board.tasks_titled(f"[BLOCKED] {task_id} rate_limited")
    assert hermes_board.parents(task_id) == [card.id]
    assert len(hermes_board.comments(task_id)) == 1


@pytest.mark.interop
def test_a_worker_written_card_suppresses_ours(
    hermes_board: HermesBoard, no_route: tuple[str, WatchersCli]
) -> None:
    """The worker's own `[BLOCKED] <id> rate_limited` is the one open card: none is added."""
    task_id, cli = no_route
    title = f"[BLOCKED] {task_id} rate_limited"
    with hermes_board.connect() as conn:
        kb.create_task(
            conn,
            title=title,
            body="quota wall on anthropic; please move me",
            assignee="orchestrator",
            created_by="coder-a",
        )
    before = board_state(hermes_board)

    assert cli.once(hermes_board.path) == []
    assert board_state(hermes_board) == before
    [card] = hermes_board.tasks_titled(title)
    assert card.created_by == "coder-a"


@pytest.mark.interop
def test_a_card_in_a_reused_rowid_is_seen_by_a_running_daemon(hermes_home: Path) -> None:
    """Hermes deletes the newest task; the worker's own card takes its rowid; the daemon
    that already indexed that rowid still sees the card and does not act a second time."""
    from watchers.distress.watcher import Distress
    from watchers.probe import StaticProbe
    from watchers.settings import ProfileSettings, Settings
    from watchers.store.board import BoardStore

    db = hermes_home / "kanban.db"
    conn = kb.connect(db)
    src = kb.create_task(conn, title="src", assignee="coder")
    junk = kb.create_task(conn, title="[BLOCKED] t_00000000 rate_limited")
    conn.close()
    settings = Settings(
        profiles={
            "coder": ProfileSettings(provider="anthropic", fallbacks=("coder-b",)),
            "coder-b": ProfileSettings(provider="openai"),
        }
    )
    watcher = Distress(StaticProbe())
    store = BoardStore.open(db)
    try:
        assert watcher.plan(store, settings, time.time())[0] == []
        conn = kb.connect(db)
        kb.delete_task(conn, junk)
        kb.claim_task(conn, src)
        kb._record_spawn_failure(conn, src, "HTTP 429 Too Many Requests")
        kb.create_task(conn, title=f"[BLOCKED] {src} rate_limited", assignee="orchestrator")
        conn.close()
        assert watcher.plan(store, settings, time.time())[0] == []
    finally:
        store.close()
