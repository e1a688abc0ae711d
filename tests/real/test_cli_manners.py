"""The CLI behaves like a well-made Unix tool: colour only where wanted, quiet on a closed
pipe, one line for a taken port, one line per action on a terminal, 80 columns, stable
board names, a versioned JSON, help with examples."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.real.test_cli import make_dead, watchers
from watchers.store.schema import create_board

COMMANDS = ("run", "once", "status", "check-config", "demo", "init-board")


def test_no_color_turns_the_console_logs_colours_off(board, dispatcher):
    """Console logs are coloured; with NO_COLOR set they are not (https://no-color.org).
    A task in a status no Hermes writes makes `once` log a warning."""
    odd = dispatcher.create_task("odd", "alice")
    dispatcher.conn.execute("UPDATE tasks SET status = 'bogus' WHERE id = ?", (odd,))
    env = {"WATCHERS_LOG__FORMAT": "console"}
    coloured = watchers("once", "--board", str(board), env=env)
    plain = watchers("once", "--board", str(board), env={**env, "NO_COLOR": "1"})
    assert coloured.returncode == plain.returncode == 0, coloured.stderr
    assert "row skipped" in coloured.stderr and "row skipped" in plain.stderr
    assert "\x1b[" in coloured.stderr
    assert "\x1b[" not in plain.stderr + plain.stdout


def test_a_closed_pipe_ends_quietly_with_0(board):
    """`watchers check-config | true`: the reader is gone before the first write."""
    for args in (("check-config",), ("status", "--board", str(board))):
        proc = subprocess.Popen(
            [sys.executable, "-m", "watchers", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.startswith("WATCHERS_")},
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader went away
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 0, err
        assert "BrokenPipe" not in err and "unexpected error" not in err, err


def test_a_taken_port_is_one_line_naming_the_address_and_exit_69(board):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        r = watchers("run", "--board", str(board), env={"WATCHERS_HTTP__LISTEN": address})
    assert r.returncode == 69, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert address in lines[0] and "http.listen" in lines[0] and "Traceback" not in r.stderr


def _on_a_terminal(*args: str) -> str:
    """Run `watchers <args>` with stdout and stderr on a pseudo-terminal; all it printed."""
    main, sub = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHERS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchers", *args], stdout=sub, stderr=sub, env=env
    )
    os.close(sub)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(main)
    return out.decode(errors="replace")


def test_once_on_a_terminal_prints_each_action_once(board, dispatcher):
    task = make_dead(dispatcher)
    out = _on_a_terminal("once", "--board", str(board))
    assert sum(task in line for line in out.splitlines()) == 1, out


def test_status_fits_80_columns_and_a_cut_line_ends_with_an_ellipsis(tmp_path, dispatcher, board):
    deep = create_board(tmp_path / ("very-long-folder-name-" * 4) / "kanban.db")
    make_dead(dispatcher)
    r = watchers("status", "--board", str(board), "--board", str(deep))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, r.stdout
    assert any(line.endswith("…") for line in lines)


def test_status_json_has_a_schema_version_and_names_a_missing_board(board):
    r = watchers("status", "--json", "--board", str(board), "--board", "/nonexistent/kanban.db")
    assert r.returncode == 66
    report = json.loads(r.stdout)
    assert report["schema_version"] == 1
    by_path = {b["path"]: b for b in report["boards"]}
    assert by_path[str(board)]["errors"] == []
    assert by_path["/nonexistent/kanban.db"]["errors"] == ["does not exist"]


def test_board_names_are_unique_and_do_not_depend_on_the_order_given(tmp_path):
    """Two `kanban.db` in different folders: two names, the same for either order (and
    the same as `watchers run` and its metrics use: boards.unique_slugs)."""
    a = create_board(tmp_path / "a" / "kanban.db")
    b = create_board(tmp_path / "b" / "kanban.db")

    def names(*paths: Path) -> dict[str, str]:
        r = watchers("status", "--json", *(x for p in paths for x in ("--board", str(p))))
        assert r.returncode == 0, r.stderr
        return {d["path"]: d["board"] for d in json.loads(r.stdout)["boards"]}

    forward, backward = names(a, b), names(b, a)
    assert forward == backward and len(set(forward.values())) == 2


def test_every_subcommands_help_says_what_it_does_with_an_example():
    for command in COMMANDS:
        r = watchers(command, "--help")
        assert r.returncode == 0, r.stderr
        assert "example:" in r.stdout and f"watchers {command}" in r.stdout, r.stdout
