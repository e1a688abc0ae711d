"""Defects seen on real boards with the real daemon: one bad row, a swapped file, a
planted secret, a regex that cannot compile. Each must leave the rest working."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog

from tests.conftest import rows, settings, tick
from tests.real.test_daemon import dead, run_daemon, status, wait_for  # noqa: F401 (fixture)
from tests.real.test_http import serve  # noqa: F401  (a fixture)
from tests.real.test_store import dead_task
from watchers.budget.watcher import Budget
from watchers.clock import SystemClock
from watchers.distress.watcher import Distress
from watchers.logs import configure_logging
from watchers.probe import ProcessProbe
from watchers.runner import run_tick
from watchers.store.board import BoardStore, host_pid_max
from watchers.store.schema import create_board

NESTED = '{"a":' * 5000


def watchers_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WATCHERS_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "watchers", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
        check=False,
    )


def set_task(board: Path, task: str, **columns: object) -> None:
    conn = sqlite3.connect(board)
    names = ", ".join(f"{c} = ?" for c in columns)
    conn.execute(f"UPDATE tasks SET {names} WHERE id = ?", (*columns.values(), task))
    conn.commit()
    conn.close()


# -- one bad row never stops a board ------------------------------------------------------


@pytest.mark.parametrize("pid", [-1, 0, -(2**31), 2**40, "host_pid_max"])
def test_a_pid_outside_the_hosts_range_is_a_malformed_row_and_the_rest_is_healed(
    board, dispatcher, pid
):
    """Skipped with a warning naming board and task; the dead worker next to it is reaped."""
    bad_pid = host_pid_max() if pid == "host_pid_max" else pid
    healthy_dead = dead_task(dispatcher, "dies")
    odd = dead_task(dispatcher, "odd pid")
    set_task(board, odd, worker_pid=bad_pid)

    report = tick(board)

    assert report.ok, report.error
    assert [(o.action.task_id, o.action.kind.value) for o in report.outcomes] == [
        (healthy_dead, "reap")
    ]
    [skipped] = report.skipped
    assert (skipped.board, skipped.task_id) == ("default", odd)
    assert "worker_pid" in skipped.problem and "not a PID" in skipped.problem


def test_once_and_status_exit_0_beside_a_negative_pid(board, dispatcher):
    """The commands a person runs first keep working on such a board."""
    odd = dead_task(dispatcher, "odd pid")
    set_task(board, odd, worker_pid=-5)

    once = watchers_cli("once", "--board", str(board))
    shown = watchers_cli("status", "--board", str(board), "--json")

    assert once.returncode == 0, once.stderr
    assert shown.returncode == 0, shown.stderr
    [entry] = json.loads(shown.stdout)["boards"]
    assert any(odd == s["task_id"] for s in entry["skipped"])


def test_an_empty_claim_lock_is_no_claim_and_is_reclaimed(board, dispatcher):
    """'' is not a claim from some other host: the row is reclaimed past the grace."""
    task = dead_task(dispatcher, "blank claim")
    set_task(board, task, claim_lock="")

    report = tick(board)

    assert [(o.action.task_id, o.action.reason, o.applied) for o in report.outcomes] == [
        (task, "no_claim", True)
    ]
    assert rows(board, "SELECT status, claim_lock FROM tasks WHERE id = ?", (task,)) == [
        ("ready", None)
    ]


def _event(board: Path, task: str, kind: str, payload: str) -> int:
    conn = sqlite3.connect(board)
    cur = conn.execute(
        "INSERT INTO task_events (task_id, kind, payload, created_at) VALUES (?, ?, ?, ?)",
        (task, kind, payload, int(time.time())),
    )
    conn.commit()
    conn.close()
    assert cur.lastrowid is not None
    return cur.lastrowid


@pytest.mark.parametrize("payload", [NESTED, "[" * 100_000, '{"x": "' + "y" * 200_000 + '"}'])
def test_a_hostile_event_payload_is_empty_and_reported_once(board, dispatcher, payload):
    """Too deep or too large: distress and budget ticks go on; one report per event."""
    task = dispatcher.create_task("victim", "alice")
    for kind in ("blocked", "unblocked", "budget_warning", "crashed"):
        _event(board, task, kind, payload)
    probe = ProcessProbe()
    store = BoardStore.open(board)
    try:
        for watcher in (Distress(probe), Budget(probe)):
            first = run_tick(watcher, store, settings(), SystemClock())
            again = run_tick(watcher, store, settings(), SystemClock())
            assert first.ok and again.ok, (first.error, again.error)
            assert again.skipped == ()
        problems = [s.problem for s in first.skipped]
    finally:
        store.close()
        probe.close()
    assert problems and all("JSON ignored" in p for p in problems)


def test_one_bad_board_never_fails_the_scrape_of_the_others(tmp_path, board, dispatcher, serve):
    """A negative PID and a nested payload on one board, a file that is no database as
    another: /metrics answers 200; the broken board's error metric says why."""
    from tests.real.test_http import config, samples, value

    task = dead_task(dispatcher, "odd pid")
    set_task(board, task, worker_pid=-1)
    _event(board, task, "rate_limited", NESTED)
    other = create_board(tmp_path / "other" / "kanban.db")
    served = serve(config(tmp_path, watchers=("auto-heal", "distress", "budget")), [board, other])
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a database" * 100)
    os.replace(garbage, other)  # the second board becomes a file that is no database

    code, _, body = served.get("/metrics")

    assert code == 200
    parsed = samples(body)
    slugs = {b for (_n, labels) in parsed for k, b in labels if k == "board"}
    [other] = slugs - {"default"}
    assert value(parsed, "watchers_board_tasks", board="default", status="running") == 1
    assert value(parsed, "watchers_board_read_error", board="default", reason="unexpected") == 0
    assert value(parsed, "watchers_board_read_error", board=other, reason="unusable") == 1
    assert value(parsed, "watchers_board_tasks", board=other, status="ready") is None


# -- the board is the file at its path ------------------------------------------------------


def test_a_board_replaced_under_the_daemon_is_reopened_and_healed(
    tmp_path, board, dispatcher, run_daemon
):
    """`mv new.db B; rm B-wal B-shm`: the next tick reads the new file, heals its dead."""
    d = run_daemon("--board", str(board))
    assert wait_for(lambda: d.logged("started"))
    fresh = create_board(tmp_path / "new" / "kanban.db")
    from watchers.demo.dispatcher import DemoDispatcher

    other = DemoDispatcher(fresh)
    try:
        task = dead(other)
    finally:
        other.close()
    os.replace(fresh, board)
    for suffix in ("-wal", "-shm"):
        Path(f"{board}{suffix}").unlink(missing_ok=True)

    assert wait_for(lambda: status(board, task) == "ready"), d.log.read_text()
    assert d.logged("board file changed; reopening")
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0


def test_a_deleted_board_makes_health_name_it_until_it_returns(tmp_path, board, serve):
    """503 naming the board while it is gone; 200 again once a board is back."""
    from tests.real.test_http import config

    served = serve(config(tmp_path), [board])
    assert wait_for(lambda: served.get("/healthz")[0] == 200, 10)
    saved = tmp_path / "saved.db"
    shutil.copy(board, saved)
    board.unlink()

    assert wait_for(lambda: served.get("/healthz")[0] == 503, 10)
    _code, _, body = served.get("/healthz")
    report = json.loads(body)
    assert report["status"] == "board_unusable"
    assert report["boards"][0]["board"] == "default"
    assert "does not exist" in report["boards"][0]["problem"]

    shutil.copy(saved, board)
    assert wait_for(lambda: served.get("/healthz")[0] == 200, 10)


def test_a_tick_whose_writes_fail_is_a_failed_tick(board, dispatcher):
    """A full disk (SQLite's max_page_count reached): the reap fails, the tick says so,
    and nothing of the action was written."""
    task = dead_task(dispatcher, "dies on a full disk")
    before = rows(board, "SELECT status, consecutive_failures FROM tasks WHERE id = ?", (task,))
    store = BoardStore.open(board)
    probe = ProcessProbe()
    try:
        conn = store._conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        for _ in range(100_000):  # fill what is left, as a full disk leaves it
            try:
                conn.execute(
                    "INSERT INTO task_events (task_id, kind, payload, created_at) "
                    "VALUES ('t_filler', 'filler', ?, 0)",
                    ("x" * 64,),
                )
            except sqlite3.OperationalError as exc:
                assert "full" in str(exc)
                break
        else:
            pytest.fail("the board never filled up")
        from watchers.autoheal.watcher import AutoHeal

        report = run_tick(AutoHeal(probe), store, settings(), SystemClock())
    finally:
        store.close()
        probe.close()

    assert not report.ok and not report.transient
    assert "write(s) failed" in (report.error or "") and "full" in (report.error or "")
    assert [o.result.value for o in report.outcomes] == ["failed"]
    assert rows(board, "SELECT status, consecutive_failures FROM tasks WHERE id = ?", (task,)) == (
        before
    )


# -- secrets stay secret ----------------------------------------------------------------------


def test_no_local_variable_reaches_a_logged_traceback():
    """A secret held in a local of a failing frame never appears in the JSON log."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = structlog.get_logger("test")

    def fails(password: str) -> None:
        token = f"bearer {password}"  # noqa: F841 - the planted local
        raise RuntimeError("boom")

    try:
        fails("hunter2-SECRET-9f8e7d")
    except RuntimeError:
        log.exception("it failed")
    configure_logging()

    text = out.getvalue()
    assert "it failed" in text and "RuntimeError" in text
    assert "hunter2" not in text and "SECRET" not in text


def test_a_password_in_a_whole_section_variable_is_refused_by_name(tmp_path):
    """WATCHERS_HTTP='{...}' is another way in: refused like the others, value not echoed."""
    r = watchers_cli("check-config", WATCHERS_HTTP='{"basic_auth_password": "hunter2-SECRET"}')
    assert r.returncode == 78
    assert "http.basic_auth_password" in r.stderr
    assert "hunter2" not in r.stderr + r.stdout


def test_a_rule_pattern_that_cannot_compile_for_any_reason_exits_78(tmp_path):
    """`a{99999999999}` overflows the regex engine: a configuration error naming the field."""
    cfg = tmp_path / "w.toml"
    cfg.write_text('[[auto_heal.infra_rules]]\nname = "huge"\npattern = "a{99999999999}"\n')
    r = watchers_cli("check-config", "--config", str(cfg))
    assert r.returncode == 78, r.stderr
    assert "infra_rules" in r.stderr and "pattern" in r.stderr
    assert "Traceback" not in r.stderr


def test_sighup_with_an_overflowing_pattern_keeps_the_running_config_and_the_secret(
    tmp_path, board, dispatcher, run_daemon
):
    """Refused, logged without the password, and the daemon goes on healing."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "metrics-password").write_text("hunter2-SECRET-pw\n")
    cfg = tmp_path / "w.toml"
    cfg.write_text('[http]\nbasic_auth_user = "prom"\n')
    d = run_daemon("--board", str(board), "--config", str(cfg), CREDENTIALS_DIRECTORY=str(creds))
    cfg.write_text(
        '[http]\nbasic_auth_user = "prom"\n'
        '[[auto_heal.infra_rules]]\nname = "huge"\npattern = "a{99999999999}"\n'
    )
    d.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: d.logged("reload refused; keeping the running configuration")), (
        d.log.read_text()
    )
    task = dead(dispatcher)
    assert wait_for(lambda: status(board, task) == "ready"), d.log.read_text()
    assert d.proc.poll() is None
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0
    assert "hunter2" not in d.log.read_text()


def test_a_task_in_an_unknown_status_is_reported_once_and_left_alone(board, dispatcher):
    """Named with its board and status on the first tick, not again; its row is unchanged."""
    odd = dispatcher.create_task("odd", "alice")
    set_task(board, odd, status="limbo")
    healer_probe = ProcessProbe()
    from watchers.autoheal.watcher import AutoHeal

    healer = AutoHeal(healer_probe)
    try:
        first = tick(board, healer=healer)
        again = tick(board, healer=healer)
    finally:
        healer_probe.close()

    [skipped] = first.skipped
    assert (skipped.board, skipped.task_id) == ("default", odd)
    assert skipped.problem == "unknown status 'limbo'"
    assert again.skipped == ()
    assert rows(board, "SELECT status FROM tasks WHERE id = ?", (odd,)) == [("limbo",)]
