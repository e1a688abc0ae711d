"""The board store on real SQLite files, with real workers: reads, writes, races, bad rows."""

from __future__ import annotations

import sqlite3
import time

import pytest
from structlog.testing import capture_logs

from tests.conftest import events, give_up, rows, settings, tick
from watchers.autoheal.watcher import AutoHeal
from watchers.clock import SystemClock
from watchers.errors import BoardError, StoreBusy
from watchers.model import Result
from watchers.probe import ProcessProbe
from watchers.runner import execute, run_tick
from watchers.store.board import BoardStore, board_slug
from watchers.store.schema import create_board


def dead_task(dispatcher, title="dead") -> str:
    task = dispatcher.create_task(title, "alice")
    dispatcher.claim(task)
    dispatcher.start_worker(task)
    dispatcher.backdate_attempt(task, 60)
    dispatcher.kill_worker(task)
    return task


def live_task(dispatcher, title="live") -> str:
    task = dispatcher.create_task(title, "alice")
    dispatcher.claim(task)
    dispatcher.start_worker(task)
    dispatcher.backdate_attempt(task, 60)
    return task


# -- opening ------------------------------------------------------------------------


def test_a_missing_board_is_a_board_error(tmp_path):
    """A path with no file says so (exit 66)."""
    with pytest.raises(BoardError, match="does not exist") as err:
        BoardStore.open(tmp_path / "none.db")
    assert err.value.exit_code == 66


def test_a_file_that_is_not_sqlite_is_a_board_error(tmp_path):
    """Garbage is not a board."""
    path = tmp_path / "kanban.db"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(BoardError, match="not a SQLite database"):
        BoardStore.open(path)


def test_a_sqlite_file_without_the_kanban_tables_is_not_a_hermes_board(tmp_path):
    """An unrelated database is refused by name of what it lacks."""
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE x (a)").connection.commit()
    with pytest.raises(BoardError, match="missing tables"):
        BoardStore.open(path)


def test_opening_never_creates_a_file(tmp_path):
    """A typo in --board must not leave an empty database behind."""
    with pytest.raises(BoardError):
        BoardStore.open(tmp_path / "typo.db")
    assert not (tmp_path / "typo.db").exists()


def test_board_slugs_follow_hermess_layout(tmp_path):
    """default for the root board, the folder name for named boards."""
    assert board_slug(tmp_path / "kanban.db") == "default"
    assert board_slug(tmp_path / "kanban" / "boards" / "ops" / "kanban.db") == "ops"


# -- reaping through the store ------------------------------------------------------


def test_a_dead_worker_is_reaped_in_hermess_terms(board, dispatcher):
    """Task back to ready, claim cleared, run closed as crashed, a crashed event by watchers."""
    task = dead_task(dispatcher)
    live = live_task(dispatcher)
    report = tick(board)
    assert [(o.action.task_id, o.result) for o in report.outcomes] == [(task, Result.APPLIED)]
    [(status, lock, pid, run, fails, err)] = rows(
        board,
        "SELECT status, claim_lock, worker_pid, current_run_id, consecutive_failures, "
        "last_failure_error FROM tasks WHERE id = ?",
        (task,),
    )
    assert (status, lock, pid, run, fails) == ("ready", None, None, None, 1)
    assert err.startswith("pid ") and "not alive" in err
    [(r_status, outcome, ended, r_err, r_pid)] = rows(
        board,
        "SELECT status, outcome, ended_at, error, worker_pid FROM task_runs WHERE task_id = ?",
        (task,),
    )
    assert (r_status, outcome, r_pid) == ("crashed", "crashed", None)
    assert ended is not None and r_err == err
    [crashed] = events(board, task, "crashed")
    assert crashed["by"] == "watchers" and crashed["evidence"]["verdict"] == "gone"
    assert rows(board, "SELECT status FROM tasks WHERE id = ?", (live,)) == [("running",)]


def test_a_second_pass_adds_nothing(board, dispatcher):
    """Idempotent: the next tick finds nothing to do."""
    dead_task(dispatcher)
    assert len(tick(board).outcomes) == 1
    assert tick(board).outcomes == ()


def test_the_breaker_trips_with_a_gave_up_event(board, dispatcher):
    """At the limit: blocked, one crashed and one gave_up event, in one transaction."""
    task = dispatcher.create_task("fragile", "alice", max_retries=1)
    dispatcher.claim(task)
    dispatcher.start_worker(task)
    dispatcher.backdate_attempt(task, 60)
    dispatcher.kill_worker(task)
    tick(board)
    assert rows(board, "SELECT status, consecutive_failures FROM tasks WHERE id = ?", (task,)) == [
        ("blocked", 1)
    ]
    [gave_up] = events(board, task, "gave_up")
    assert gave_up["by"] == "watchers" and gave_up["limit_source"] == "task"


def test_dry_run_changes_nothing(board, dispatcher):
    """--dry-run decides and reports, writes nothing."""
    task = dead_task(dispatcher)
    before = rows(board, "SELECT COUNT(*) FROM task_events")
    report = tick(board, dry_run=True)
    assert [o.result for o in report.outcomes] == [Result.DRY_RUN]
    assert not report.outcomes[0].applied
    assert rows(board, "SELECT COUNT(*) FROM task_events") == before
    assert rows(board, "SELECT status FROM tasks WHERE id = ?", (task,)) == [("running",)]


# -- compare-and-swap, atomicity, locks ------------------------------------------------


def test_a_row_that_changed_after_the_decision_is_left_alone(board, dispatcher):
    """If the dispatcher acts first, our write matches nothing and is reported as a lost race."""
    task = dead_task(dispatcher)
    store = BoardStore.open(board)
    healer = AutoHeal(ProcessProbe())
    actions, _ = healer.plan(store, settings(), time.time())
    # Hermes's own crash detection gets there first:
    dispatcher.conn.execute(
        "UPDATE tasks SET status = 'ready', claim_lock = NULL, worker_pid = NULL, "
        "current_run_id = NULL, consecutive_failures = 1 WHERE id = ?",
        (task,),
    )
    before = rows(board, "SELECT COUNT(*) FROM task_events")
    [outcome] = execute(store, actions, time.time(), dry_run=False)
    store.close()
    healer.probe.close()
    assert outcome.result is Result.RACE_LOST and not outcome.applied
    assert rows(board, "SELECT COUNT(*) FROM task_events") == before
    assert rows(board, "SELECT consecutive_failures FROM tasks WHERE id = ?", (task,)) == [(1,)]


def test_a_write_commits_whole_or_not_at_all(board, dispatcher):
    """A failure half-way (the event insert) leaves task and run exactly as they were."""
    task = dead_task(dispatcher)
    dispatcher.conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON task_events WHEN NEW.kind = 'crashed' "
        "BEGIN SELECT RAISE(ABORT, 'simulated I/O error'); END"
    )
    report = tick(board)
    [outcome] = report.outcomes
    assert outcome.result is Result.FAILED and "simulated I/O error" in outcome.detail
    assert rows(
        board, "SELECT status, worker_pid IS NOT NULL FROM tasks WHERE id = ?", (task,)
    ) == [("running", 1)]
    assert rows(board, "SELECT ended_at FROM task_runs WHERE task_id = ?", (task,)) == [(None,)]
    dispatcher.conn.execute("DROP TRIGGER boom")
    assert tick(board).outcomes[0].result is Result.APPLIED


def test_a_locked_board_is_reported_and_retried_next_tick(board, dispatcher):
    """Hermes holding the write lock past the busy timeout makes the tick fail
    transiently (its reads wait for the lock too), not the daemon; the next one heals."""
    task = dead_task(dispatcher)
    other = sqlite3.connect(str(board), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        report = tick(board)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert report.outcomes == () and report.transient and "locked" in (report.error or "")
    assert rows(board, "SELECT status FROM tasks WHERE id = ?", (task,)) == [("running",)]
    assert tick(board).outcomes[0].result is Result.APPLIED


def test_an_exclusively_locked_board_fails_the_tick_transiently(tmp_path):
    """A rollback-journal board locked even for readers: a transient tick error, no raise."""
    path = create_board(tmp_path / "kanban.db")
    setup = sqlite3.connect(str(path), isolation_level=None)
    setup.execute("PRAGMA journal_mode=DELETE")
    setup.close()
    store = BoardStore.open(path, busy_timeout=0.1)  # the daemon keeps its boards open
    healer = AutoHeal(ProcessProbe())
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        report = run_tick(healer, store, settings(), SystemClock())
        with pytest.raises(StoreBusy):  # transient, so not exit 66
            BoardStore.open(path, busy_timeout=0.1)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert report.error is not None and report.transient
    assert "locked" in report.error
    assert run_tick(healer, store, settings(), SystemClock()).ok
    store.close()
    healer.probe.close()


# -- malformed rows ------------------------------------------------------------------


def test_malformed_rows_are_skipped_and_named_while_the_rest_is_healed(board, dispatcher):
    """Bad text, a non-numeric PID and an unknown status cost only their own rows."""
    task = dead_task(dispatcher)
    bad_text = live_task(dispatcher, "bad text")
    bad_pid = live_task(dispatcher, "bad pid")
    odd = dispatcher.create_task("odd", "alice")
    c = dispatcher.conn
    c.execute("UPDATE tasks SET assignee = CAST(X'FFFE' AS TEXT) WHERE id = ?", (bad_text,))
    c.execute("UPDATE tasks SET worker_pid = 'twelve' WHERE id = ?", (bad_pid,))
    c.execute("UPDATE tasks SET status = 'runnning' WHERE id = ?", (odd,))
    with capture_logs() as logs:
        report = tick(board)
    assert [o.action.task_id for o in report.outcomes] == [task]
    assert {(s.task_id, s.problem) for s in report.skipped} == {
        (bad_text, "assignee is not valid UTF-8"),
        (bad_pid, "worker_pid is not an integer"),
        (odd, "unknown status 'runnning'"),
    }
    warned = {e.get("task") for e in logs if e["event"] == "row skipped"}
    assert warned == {bad_text, bad_pid, odd}
    store = BoardStore.open(board, readonly=True)
    counts, skipped = store.status_counts()
    store.close()
    assert "runnning" not in counts and "unknown status 'runnning'" in skipped[0].problem


def test_events_with_malformed_json_payloads_do_not_break_a_tick(board, dispatcher):
    """Bad JSON in an event payload is ignored; the give-up behind it is still handled."""
    task = dispatcher.create_task("noisy history", "alice")
    dispatcher.conn.execute(
        "INSERT INTO task_events (task_id, kind, payload, created_at) VALUES (?, 'unblocked', '{not json', 1)",
        (task,),
    )
    give_up(board, task, ["pid 1 killed by signal 9"], at=int(time.time()) - 10)
    dispatcher.conn.execute("UPDATE task_runs SET metadata = '[[[' WHERE task_id = ?", (task,))
    [outcome] = tick(board, settings(reset_backoff_base_seconds=0)).outcomes
    assert outcome.applied and outcome.action.kind.value == "reset"


# -- newer Hermes columns ---------------------------------------------------------------


def test_worker_started_at_is_used_when_the_column_exists(board, dispatcher):
    """On newer boards the recorded process start time identifies the worker."""
    dispatcher.conn.execute("ALTER TABLE tasks ADD COLUMN worker_started_at REAL")
    honest = live_task(dispatcher, "honest")
    liar = live_task(dispatcher, "liar")
    import psutil

    for task, skew in ((honest, 0), (liar, -40)):
        pid = rows(board, "SELECT worker_pid FROM tasks WHERE id = ?", (task,))[0][0]
        started = psutil.Process(pid).create_time() + skew
        dispatcher.conn.execute(
            "UPDATE tasks SET worker_started_at = ? WHERE id = ?", (started, task)
        )
    report = tick(board)
    assert [(o.action.task_id, o.action.reason) for o in report.outcomes] == [
        (liar, "worker_reused")
    ]


def test_a_board_without_optional_columns_is_read(tmp_path, dispatcher):
    """max_retries and the newer columns are detected, never required."""
    path = tmp_path / "legacy.db"
    create_board(path)
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE tasks DROP COLUMN max_retries")
    conn.commit()
    conn.close()
    store = BoardStore.open(path)
    assert not store.has_task_column("max_retries")
    assert store.running_tasks() == ([], [])
    store.close()


def test_the_running_rows_memo_keeps_one_copy_of_each_value(board, dispatcher):
    """A row read again keeps its parsed task and the key it was parsed from (whose
    values the task shares), not the new, equal row; a changed row is parsed again and a
    row that is gone leaves the memo."""
    steady, moving, ending = (live_task(dispatcher, t) for t in ("steady", "moving", "ending"))
    store = BoardStore.open(board, readonly=True)
    memo: dict = {}
    first, _ = store.running_tasks(memo)
    keys = {k[0]: k for k in memo}
    assert set(keys) == {steady, moving, ending}
    by_id = {t.task_id: t for t in first}
    assert keys[steady][2] is by_id[steady].claim_lock  # the key's values are the task's
    dispatcher.conn.execute(
        "UPDATE tasks SET claim_expires = claim_expires + 5 WHERE id = ?", (moving,)
    )
    dispatcher.conn.execute("UPDATE tasks SET status = 'done' WHERE id = ?", (ending,))
    again, skipped = store.running_tasks(memo)
    store.close()
    assert skipped == []
    after = {t.task_id: t for t in again}
    assert set(after) == {steady, moving} == {k[0] for k in memo}
    assert after[steady] is by_id[steady]  # not parsed again
    assert next(k for k in memo if k[0] == steady) is keys[steady]  # nor its key replaced
    assert after[moving] is not by_id[moving]
    assert after[moving].claim_expires == (by_id[moving].claim_expires or 0) + 5


# -- crash-loop resets, durable across restarts --------------------------------------------


def test_an_infrastructure_crash_loop_is_reset_and_counted_durably(board, dispatcher):
    """Reset with an unblocked event and a comment; a restarted daemon still counts it."""
    task = dispatcher.create_task("flaky host", "alice")
    now = int(time.time())
    give_up(board, task, ["pid 1 killed by signal 9", "pid 2 killed by signal 9"], at=now - 10)
    s = settings(reset_backoff_base_seconds=0, max_resets=1)
    [outcome] = tick(board, s).outcomes
    assert (outcome.action.kind.value, outcome.result) == ("reset", Result.APPLIED)
    assert rows(
        board,
        "SELECT status, consecutive_failures, last_failure_error FROM tasks WHERE id = ?",
        (task,),
    ) == [("ready", 0, None)]
    [unblocked] = events(board, task, "unblocked")
    assert unblocked["by"] == "watchers" and unblocked["reset"] == 1
    [(author, body)] = rows(
        board, "SELECT author, body FROM task_comments WHERE task_id = ?", (task,)
    )
    assert author == "watchers" and "reset this task to ready" in body
    assert tick(board, s).outcomes == ()

    # it fails the same way again; a fresh daemon (no memory) must still see the reset
    give_up(board, task, ["pid 3 killed by signal 9", "pid 4 killed by signal 9"], at=now)
    [outcome] = tick(board, s).outcomes
    assert outcome.action.kind.value == "escalate" and outcome.applied
    assert rows(board, "SELECT status FROM tasks WHERE id = ?", (task,)) == [("blocked",)]
    [escalated] = events(board, task, "escalated")
    assert escalated["by"] == "watchers" and escalated["reason"] == "reset_limit"
    assert tick(board, s).outcomes == ()


def test_a_task_caused_crash_loop_is_never_reset(board, dispatcher):
    """The agent's own non-zero exits stay blocked."""
    task = dispatcher.create_task("buggy", "alice")
    give_up(
        board,
        task,
        ["pid 1 exited with code 1", "pid 2 exited with code 1"],
        at=int(time.time()) - 999,
    )
    assert tick(board, settings(reset_backoff_base_seconds=0)).outcomes == ()


def test_a_task_caused_give_up_holds_no_history_between_passes(board, dispatcher):
    """Left blocked until an event names it: its failures are not kept in memory; a later
    infrastructure give-up of the same task is read and reset as usual."""
    task = dispatcher.create_task("buggy", "alice")
    now = int(time.time())
    give_up(board, task, ["pid 1 exited with code 1"], at=now - 999)
    healer = AutoHeal(ProcessProbe())
    s = settings(reset_backoff_base_seconds=0)
    try:
        assert tick(board, s, healer=healer).outcomes == ()
        observer = healer._observers.peek(board)
        assert observer is not None and task in observer.quiet and not observer.history
        give_up(board, task, ["pid 2 killed by signal 9"], at=now - 5)
        [outcome] = tick(board, s, healer=healer).outcomes
        assert outcome.applied and outcome.action.task_id == task
    finally:
        healer.probe.close()


def test_a_reset_keeps_the_task_waiting_for_unfinished_parents(board, dispatcher):
    """As Hermes's unblock does: with an open parent the task goes to todo, not ready."""
    parent = dispatcher.create_task("parent", "alice")
    task = dispatcher.create_task("child", "alice")
    dispatcher.conn.execute(
        "INSERT INTO task_links (parent_id, child_id) VALUES (?, ?)", (parent, task)
    )
    give_up(board, task, ["pid 1 killed by signal 9"], at=int(time.time()) - 10)
    [outcome] = tick(board, settings(reset_backoff_base_seconds=0)).outcomes
    assert outcome.applied
    assert rows(board, "SELECT status FROM tasks WHERE id = ?", (task,)) == [("todo",)]


def test_a_give_up_seen_by_a_running_daemon_is_picked_up_on_a_later_tick(board, dispatcher):
    """The event cursor follows new give-ups without re-reading history."""
    task = dispatcher.create_task("later", "alice")
    healer = AutoHeal(ProcessProbe())
    s = settings(reset_backoff_base_seconds=0)
    try:
        assert tick(board, s, healer=healer).outcomes == ()
        give_up(board, task, ["[Errno 28] No space left on device"], at=int(time.time()) - 5)
        [outcome] = tick(board, s, healer=healer).outcomes
        assert outcome.applied and outcome.action.evidence["failed_runs"][0]["rule"] == "disk-full"
        assert tick(board, s, healer=healer).outcomes == ()
    finally:
        healer.probe.close()


def test_the_clock_is_injected(board, dispatcher):
    """A tick uses the clock it is given (here: the system clock)."""
    assert SystemClock().now() > 1_700_000_000
