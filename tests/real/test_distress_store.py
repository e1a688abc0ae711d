"""The distress watcher on real board files and real profile files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import events, rows
from watchers.clock import SystemClock
from watchers.distress.watcher import Distress
from watchers.hermes.profiles import ProfileReader
from watchers.model import Result
from watchers.probe import ProcessProbe
from watchers.runner import execute, run_tick
from watchers.settings import ProfileSettings, Settings, load_settings
from watchers.store.board import BoardStore, insert_event


def write_profile(root: Path, name: str, provider: str | None) -> None:
    folder = root if name == "default" else root / "profiles" / name
    folder.mkdir(parents=True, exist_ok=True)
    model = f"model:\n  provider: {provider}\n  default: m\n" if provider else "model: some-model\n"
    (folder / "config.yaml").write_text(model)


@pytest.fixture
def hermes_root(tmp_path) -> Path:
    root = tmp_path / "hermes"
    write_profile(root, "default", "anthropic")
    write_profile(root, "claude", "anthropic")
    write_profile(root, "gpt", "openai")
    write_profile(root, "orchestrator", None)
    return root


def settings_for(root: Path, **distress: object) -> Settings:
    base = load_settings()
    return base.model_copy(
        update={
            "distress": base.distress.model_copy(update={"hermes_home": root, **distress}),
            "profiles": {"claude": ProfileSettings(fallbacks=("gpt",))},
        }
    )


def rate_limited(dispatcher, task_id: str, error: str = "HTTP 429 Too Many Requests") -> None:
    """An attempt that ended on a provider quota wall, as Hermes records it (exit 75)."""
    dispatcher.claim(task_id)
    run = dispatcher.conn.execute(
        "SELECT current_run_id FROM tasks WHERE id = ?", (task_id,)
    ).fetchone()[0]
    now = int(time.time())
    with dispatcher._txn():
        dispatcher.conn.execute(
            "UPDATE task_runs SET status = 'rate_limited', outcome = 'rate_limited', ended_at = ?, "
            "error = ? WHERE id = ?",
            (now, error, run),
        )
        dispatcher.conn.execute(
            "UPDATE tasks SET status = 'ready', claim_lock = NULL, claim_expires = NULL, "
            "worker_pid = NULL, current_run_id = NULL, last_failure_error = ? WHERE id = ?",
            (error, task_id),
        )
        insert_event(dispatcher.conn, task_id, "rate_limited", {"exit_code": 75}, now, run)


def distress_tick(board: Path, s: Settings, watcher: Distress | None = None):
    store = BoardStore.open(board, busy_timeout=0.5)
    own = watcher is None
    watcher = watcher or Distress(ProcessProbe())
    try:
        return run_tick(watcher, store, s, SystemClock())
    finally:
        store.close()
        if own:
            watcher.probe.close()


def test_profiles_are_read_from_disk_and_changes_are_picked_up(hermes_root):
    """A provider changed in config.yaml is seen on the next read, no restart."""
    reader = ProfileReader(hermes_root)
    assert reader.read({}).provider_of("gpt") == "openai"
    assert reader.read({}).provider_of("default") == "anthropic"
    assert reader.read({}).provider_of("orchestrator") is None
    config = hermes_root / "profiles" / "gpt" / "config.yaml"
    config.write_text("model:\n  provider: google\n")
    stat = config.stat()
    os.utime(config, (stat.st_atime, stat.st_mtime + 5))
    assert reader.read({}).provider_of("gpt") == "google"
    assert reader.read({"gpt": ProfileSettings(provider="mistral")}).provider_of("gpt") == "mistral"


def test_a_rate_limited_task_is_reassigned_once(board, dispatcher, hermes_root):
    """Moved to a profile on another provider; the next tick has nothing to add."""
    task = dispatcher.create_task("Add retries", "claude")
    rate_limited(dispatcher, task)
    s = settings_for(hermes_root)
    [outcome] = distress_tick(board, s).outcomes
    assert outcome.applied and outcome.action.kind.value == "reassign"
    assert rows(
        board, "SELECT assignee, status, consecutive_failures FROM tasks WHERE id = ?", (task,)
    ) == [("gpt", "ready", 0)]
    [assigned] = events(board, task, "assigned")
    assert (assigned["by"], assigned["from"], assigned["to_provider"]) == (
        "watchers",
        "claude",
        "openai",
    )
    assert distress_tick(board, s).outcomes == ()
    assert distress_tick(board, s, Distress(ProcessProbe())).outcomes == ()  # a restart too


def test_two_daemons_write_one_card(board, dispatcher, hermes_root):
    """Both decide to write it; the second finds the first one's card under the lock."""
    task = dispatcher.create_task("Docs", "gpt")
    rate_limited(dispatcher, task)
    s = settings_for(hermes_root)
    now = time.time()
    plans = []
    for _ in range(2):
        store = BoardStore.open(board)
        watcher = Distress(ProcessProbe())
        actions, _ = watcher.plan(store, s, now)
        plans.append((store, watcher, actions))
    results = [execute(store, actions, now, dry_run=False) for store, _, actions in plans]
    for store, watcher, _ in plans:
        store.close()
        watcher.probe.close()
    assert [[o.result for o in r] for r in results] == [[Result.APPLIED], [Result.RACE_LOST]]
    cards = rows(
        board,
        "SELECT id, assignee, status, created_by FROM tasks WHERE title = ?",
        (f"[BLOCKED] {task} rate_limited",),
    )
    assert len(cards) == 1 and cards[0][1:] == ("orchestrator", "ready", "watchers")
    assert rows(board, "SELECT parent_id FROM task_links WHERE child_id = ?", (task,)) == [
        (cards[0][0],)
    ]
    assert rows(board, "SELECT status FROM tasks WHERE id = ?", (task,)) == [("todo",)]
    [(author, body)] = rows(
        board, "SELECT author, body FROM task_comments WHERE task_id = ?", (task,)
    )
    assert author == "watchers" and cards[0][0] in body


def test_a_card_write_commits_whole_or_not_at_all(board, dispatcher, hermes_root):
    """A failure at the link leaves no card behind."""
    task = dispatcher.create_task("Docs", "gpt")
    rate_limited(dispatcher, task)
    dispatcher.conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON task_links BEGIN SELECT RAISE(ABORT, 'simulated'); END"
    )
    [outcome] = distress_tick(board, settings_for(hermes_root)).outcomes
    assert outcome.result is Result.FAILED
    assert rows(board, "SELECT COUNT(*) FROM tasks WHERE title LIKE '[BLOCKED]%'") == [(0,)]
    assert rows(board, "SELECT status FROM tasks WHERE id = ?", (task,)) == [("ready",)]


def test_a_stuck_running_task_gets_a_card_and_keeps_running(board, dispatcher, hermes_root):
    """Alive but silent: env_blocker card as parent, the running source is not demoted."""
    task = dispatcher.create_task("Long job", "claude")
    dispatcher.claim(task)
    dispatcher.start_worker(task)
    dispatcher.heartbeat(task)
    dispatcher.backdate_attempt(task, 90)
    s = settings_for(hermes_root, stuck_after_seconds=60)
    [outcome] = distress_tick(board, s).outcomes
    assert outcome.applied and outcome.action.plan["blocker_type"] == "env_blocker"
    assert rows(board, "SELECT status FROM tasks WHERE id = ?", (task,)) == [("running",)]
    assert outcome.action.evidence["verdict"] == "alive"
    assert distress_tick(board, s).outcomes == ()


@pytest.mark.parametrize(
    "title",
    [
        "[BLOCKED]\t{task} rate_limited",
        "[BLOCKED]\u00a0{task}\u00a0rate_limited",
        "  [BLOCKED]  {task}   rate_limited (written by the worker)",
    ],
    ids=["tab", "no-break-space", "leading-and-double-spaces"],
)
def test_a_workers_own_card_however_spaced_is_the_one_open_card(
    board, dispatcher, hermes_root, title
):
    """The index and the write's duplicate check share one definition of a card."""
    task = dispatcher.create_task("Docs", "gpt")
    own = dispatcher.create_task(title.format(task=task), "orchestrator")
    rate_limited(dispatcher, task)
    s = settings_for(hermes_root)
    first = distress_tick(board, s)
    assert first.ok and first.outcomes == ()
    cards = rows(board, "SELECT id FROM tasks WHERE instr(title, '[BLOCKED]') > 0")
    assert cards == [(own,)]


def test_the_write_finds_a_differently_spaced_card_under_its_lock(board, dispatcher, hermes_root):
    """Decided before the worker's card appeared: the write itself refuses the duplicate."""
    task = dispatcher.create_task("Docs", "gpt")
    rate_limited(dispatcher, task)
    s = settings_for(hermes_root)
    probe = ProcessProbe()
    store = BoardStore.open(board)
    try:
        watcher = Distress(probe)
        actions, _ = watcher.plan(store, s, time.time())
        [card] = [a for a in actions if a.kind.value == "card"]
        dispatcher.create_task(f"[BLOCKED]\u00a0{task}\trate_limited", "orchestrator")
        [outcome] = execute(store, [card], time.time(), dry_run=False)
    finally:
        store.close()
        probe.close()
    assert outcome.result is Result.RACE_LOST
