"""The `watchers` command as scripts use it: names, flags, output and exit codes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import rows
from watchers.store.schema import create_board


def watchers(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHERS_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "watchers", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def make_dead(dispatcher) -> str:
    task = dispatcher.create_task("dead", "alice")
    dispatcher.claim(task)
    dispatcher.start_worker(task)
    dispatcher.backdate_attempt(task, 60)
    dispatcher.kill_worker(task)
    return task


def test_once_heals_and_prints_one_line_per_action(board, dispatcher):
    """`watchers once` reaps a dead worker and says so on one line."""
    task = make_dead(dispatcher)
    r = watchers("once", "--board", str(board))
    assert r.returncode == 0, r.stderr
    [line] = r.stdout.splitlines()
    assert line.startswith(f"auto-heal default {task} reap worker_gone applied")
    assert rows(board, "SELECT status FROM tasks WHERE id = ?", (task,)) == [("ready",)]


def test_once_json_has_the_contract_fields(board, dispatcher):
    """--json prints an array; each action has the documented keys."""
    task = make_dead(dispatcher)
    r = watchers("once", "--board", str(board), "--json")
    assert r.returncode == 0, r.stderr
    [action] = json.loads(r.stdout)
    assert {
        "watcher",
        "board",
        "task_id",
        "action",
        "reason",
        "evidence",
        "applied",
    } <= action.keys()
    assert (action["watcher"], action["task_id"], action["action"]) == ("auto-heal", task, "reap")
    assert action["applied"] is True and isinstance(action["evidence"], dict)
    second = watchers("once", "--board", str(board), "--json")
    assert json.loads(second.stdout) == []


def test_dry_run_reports_applied_false_and_changes_nothing(board, dispatcher):
    """--dry-run decides, prints applied: false, writes nothing."""
    task = make_dead(dispatcher)
    r = watchers("once", "--board", str(board), "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    [action] = json.loads(r.stdout)
    assert action["applied"] is False and action["result"] == "dry_run"
    assert rows(board, "SELECT status FROM tasks WHERE id = ?", (task,)) == [("running",)]


def test_the_start_grace_can_be_set_from_the_environment(board, dispatcher):
    """WATCHERS_AUTO_HEAL__START_GRACE_SECONDS=0 judges a brand-new attempt."""
    task = dispatcher.create_task("fresh", "alice")
    dispatcher.claim(task)
    dispatcher.start_worker(task)
    dispatcher.kill_worker(task)
    assert json.loads(watchers("once", "--board", str(board), "--json").stdout) == []
    r = watchers(
        "once",
        "--board",
        str(board),
        "--json",
        env={"WATCHERS_AUTO_HEAL__START_GRACE_SECONDS": "0"},
    )
    assert [a["task_id"] for a in json.loads(r.stdout)] == [task]


def test_the_guard_holds_reaps_and_says_guard(board, dispatcher):
    """Most workers looking dead: nothing applied, 'guard' in the output, an error logged."""
    for _ in range(6):
        make_dead(dispatcher)
    r = watchers("once", "--board", str(board), "--json")
    actions = json.loads(r.stdout)
    assert len(actions) == 6 and not any(a["applied"] for a in actions)
    assert all(a["result"] == "held" and "guard" in a["held"] for a in actions)
    assert "guard" in r.stderr and '"level": "error"' in r.stderr
    plain = watchers("once", "--board", str(board))
    assert "guard" in plain.stdout and "guard" in plain.stderr
    assert rows(board, "SELECT COUNT(*) FROM tasks WHERE status = 'running'") == [(6,)]


def test_status_shows_each_running_tasks_verdict_and_ages(board, dispatcher):
    """status --json: counts by status and every running task's worker verdict."""
    dead = make_dead(dispatcher)
    live = dispatcher.create_task("live", "alice")
    dispatcher.claim(live)
    dispatcher.start_worker(live)
    dispatcher.heartbeat(live)
    remote = dispatcher.create_task("remote", "alice")
    dispatcher.claim(remote)
    dispatcher.conn.execute(
        "UPDATE tasks SET claim_lock = 'elsewhere:1', worker_pid = 1 WHERE id = ?", (remote,)
    )
    r = watchers("status", "--board", str(board), "--json")
    assert r.returncode == 0, r.stderr
    [data] = json.loads(r.stdout)["boards"]
    assert data["tasks"]["running"] == 3
    verdicts = {row["task_id"]: row["verdict"] for row in data["running"]}
    assert verdicts == {dead: "gone", live: "alive", remote: "remote"}
    row = next(r for r in data["running"] if r["task_id"] == live)
    assert row["heartbeat_age_seconds"] is not None and row["attempt_age_seconds"] is not None
    text = watchers("status", "--board", str(board))
    assert "gone" in text.stdout and "alive" in text.stdout and "remote" in text.stdout


def test_status_says_when_the_dispatcher_is_stalled_and_who_holds_its_lock(board, dispatcher):
    """status --json: a `dispatcher` key per board; the text view says STALLED."""
    now = int(time.time())
    waiting = dispatcher.create_task("waits", "alice", now=now - 1200)
    r = watchers("status", "--board", str(board), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["schema_version"] == 1
    facts = report["boards"][0]["dispatcher"]
    assert facts["stalled"] is True and facts["stall_seconds"] == 600
    assert (facts["ready"], facts["dispatchable"], facts["last_claim_at"]) == (1, 1, None)
    assert facts["oldest_ready_task"] == waiting and facts["oldest_ready_age_seconds"] >= 1200
    assert facts["dispatch_lock"]["state"] == "no_file"
    text = watchers("status", "--board", str(board)).stdout
    assert "dispatcher: no claim ever; oldest ready 20m (1 waiting); STALLED" in text
    dispatcher.claim(waiting)
    facts = json.loads(watchers("status", "--board", str(board), "--json").stdout)["boards"][0]
    assert facts["dispatcher"]["stalled"] is False
    assert now - 5 <= facts["dispatcher"]["last_claim_at"] <= time.time()


def test_a_missing_board_exits_66_and_names_it(tmp_path):
    """Exit 66 with the path in the message."""
    missing = tmp_path / "nope" / "kanban.db"
    for cmd in ("once", "status"):
        r = watchers(cmd, "--board", str(missing))
        assert r.returncode == 66
        assert str(missing) in r.stderr and "does not exist" in r.stderr


def test_a_file_that_is_not_a_hermes_board_exits_66(tmp_path):
    """Exit 66 for a database without the kanban tables."""
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE x (a)").connection.commit()
    r = watchers("once", "--board", str(path))
    assert r.returncode == 66 and "not a Hermes board" in r.stderr


def test_one_bad_board_does_not_stop_the_others(tmp_path, board, dispatcher):
    """The good board is healed; the bad one is named; the exit code says 66."""
    task = make_dead(dispatcher)
    r = watchers("once", "--board", str(tmp_path / "missing.db"), "--board", str(board), "--json")
    assert r.returncode == 66
    assert [a["task_id"] for a in json.loads(r.stdout)] == [task]


def test_invalid_configuration_exits_78_naming_the_field_without_the_value(tmp_path, board):
    """Exit 78; the field is named; the value is not echoed."""
    r = watchers(
        "once", "--board", str(board), env={"WATCHERS_AUTO_HEAL__FAILURE_LIMIT": "sekrit-value"}
    )
    assert r.returncode == 78
    assert "auto_heal.failure_limit" in r.stderr and "sekrit" not in r.stderr
    cfg = tmp_path / "w.toml"
    cfg.write_text("[auto_heal]\nbogus = 1\n")
    r = watchers("check-config", "--config", str(cfg))
    assert r.returncode == 78 and "auto_heal.bogus" in r.stderr
    r = watchers("run", "--config", str(tmp_path / "absent.toml"), "--board", str(board))
    assert r.returncode == 78 and "absent.toml" in r.stderr


def test_check_config_prints_effective_settings_with_secrets_masked(tmp_path):
    """check-config shows the merged settings; the password shows only as a mask."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "metrics-password").write_text("topsecret")
    r = watchers(
        "check-config",
        env={"CREDENTIALS_DIRECTORY": str(creds), "WATCHERS_AUTO_HEAL__MAX_RESETS": "5"},
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["auto_heal"]["max_resets"] == 5
    assert data["http"]["basic_auth_password"] == "**********"
    assert "topsecret" not in r.stdout + r.stderr


def test_an_unknown_watcher_is_a_usage_error():
    """A name the daemon does not know is refused clearly."""
    r = watchers("once", "--watcher", "nonsense")
    assert r.returncode == 2 and "unknown watcher 'nonsense'" in r.stderr


def test_boards_are_discovered_as_hermes_finds_them(tmp_path, dispatcher, board):
    """Without --board: HERMES_KANBAN_HOME's kanban.db plus kanban/boards/*/kanban.db."""
    home = tmp_path / "home"
    root_board = create_board(home / "kanban.db")
    named = create_board(home / "kanban" / "boards" / "ops" / "kanban.db")
    r = watchers("status", "--json", env={"HERMES_KANBAN_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    assert {d["board"]: d["path"] for d in json.loads(r.stdout)["boards"]} == {
        "default": str(root_board),
        "ops": str(named),
    }
    r = watchers("status", "--json", env={"HERMES_KANBAN_DB": str(board)})
    assert [d["path"] for d in json.loads(r.stdout)["boards"]] == [str(board)]
    r = watchers("status", env={"HERMES_KANBAN_HOME": str(tmp_path / "empty")})
    assert r.returncode == 66 and "no Hermes boards" in r.stderr


def test_init_board_creates_an_empty_board_once(tmp_path):
    """init-board makes a board; a second time it refuses to overwrite."""
    path = tmp_path / "new" / "kanban.db"
    assert watchers("init-board", str(path)).returncode == 0
    assert watchers("status", "--board", str(path)).returncode == 0
    assert watchers("init-board", str(path)).returncode == 66


def test_python_dash_m_and_the_console_script_are_the_same_command():
    """`python -m watchers` and `watchers` both answer --version."""
    script = Path(sys.executable).with_name("watchers")
    a = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    b = watchers("--version")
    assert a.stdout == b.stdout and a.stdout.startswith("kanban-watchers ")
