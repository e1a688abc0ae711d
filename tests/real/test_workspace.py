"""A worker's repository cannot run anything as the daemon: git reads it with every
command-running setting overridden, in a process group killed whole, output bounded."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import psutil
import pytest

from watchers.hermes.workspace import run_bounded, touched_files, workspace_state

TRAPS = (
    "fsmonitor",
    "hook",
    "pager",
    "ssh",
    "clean",
    "smudge",
    "process",
    "textconv",
    "diffcmd",
    "external",
    "gpg",
    "included",
)


def git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)


def trapped_repo(tmp_path: Path) -> tuple[Path, Path]:
    """A repository whose configuration runs `touch <markers>/<trap>` from every place git
    may run a command while reading status, stashes or diffs; a dirty tracked file (so a
    status would run the clean filter) and a stash."""
    repo, markers = tmp_path / "workspace", tmp_path / "markers"
    markers.mkdir()
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(repo, "config", "user.email", "w@example.invalid")
    git(repo, "config", "user.name", "worker")
    (repo / "app.py").write_text("print('v1')\n")
    (repo / "notes.txt").write_text("first\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "init")
    (repo / "notes.txt").write_text("stashed\n")
    git(repo, "stash", "-q")

    def touch(trap: str) -> str:
        return f"touch {markers / trap}"

    for key, value in (
        ("core.fsmonitor", touch("fsmonitor")),
        ("core.pager", touch("pager")),
        ("core.sshCommand", touch("ssh")),
        ("filter.evil.clean", f"{touch('clean')}; cat"),
        ("filter.evil.smudge", f"{touch('smudge')}; cat"),
        ("filter.evil.process", touch("process")),
        ("filter.evil.required", "true"),
        ("diff.evil.textconv", f"{touch('textconv')}; cat"),
        ("diff.evil.command", touch("diffcmd")),
        ("diff.external", touch("external")),
        ("log.showSignature", "true"),
        ("gpg.program", touch("gpg")),
        ("include.path", str(repo / ".git" / "extra.config")),
    ):
        git(repo, "config", key, value)
    (repo / ".git" / "extra.config").write_text(
        f'[filter "inc"]\n\tclean = {touch("included")}; cat\n'
    )
    info = repo / ".git" / "info"
    info.mkdir(exist_ok=True)
    (info / "attributes").write_text("*.py filter=evil diff=evil\n*.txt filter=inc\n")
    hooks = repo / ".git" / "hooks"
    for name in ("post-index-change", "pre-commit", "post-checkout", "reference-transaction"):
        hook = hooks / name
        hook.write_text(f"#!/bin/sh\n{touch('hook')}\n")
        hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    (repo / "app.py").write_text("print('v2')\n")  # dirty: a status must look inside
    os.utime(repo / "app.py", (1, 1))
    return repo, markers


def test_the_traps_are_live_for_a_plain_git(tmp_path: Path) -> None:
    """Unprotected, git runs the repository's commands: the test would catch a lapse."""
    repo, markers = trapped_repo(tmp_path)
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull}
    subprocess.run(["git", "-C", str(repo), "status"], env=env, capture_output=True, check=False)
    subprocess.run(
        ["git", "-C", str(repo), "diff", "HEAD"], env=env, capture_output=True, check=False
    )
    fired = {p.name for p in markers.iterdir()}
    assert "fsmonitor" in fired and fired & {"clean", "process", "included"}


def test_reading_a_hostile_workspace_runs_none_of_its_commands(tmp_path: Path) -> None:
    """State and touched files come back right, and no trap fired."""
    repo, markers = trapped_repo(tmp_path)

    state = workspace_state(str(repo), 5.0)
    touched = touched_files(str(repo), 5.0)

    assert state == "uncommitted"
    assert "app.py" in touched
    assert sorted(p.name for p in markers.iterdir()) == []
    assert not (repo / "fsmonitor").exists()


def test_a_clean_workspace_with_a_stash_says_so(tmp_path: Path) -> None:
    """Committed work with a stash on top is `stashed(<name>)`, still without a trap."""
    repo, markers = trapped_repo(tmp_path)
    (repo / "app.py").write_text("print('v1')\n")  # as committed; its stat still differs

    assert workspace_state(str(repo), 5.0) == "stashed(stash@{0})"
    assert sorted(p.name for p in markers.iterdir()) == []


@pytest.mark.parametrize("path", [None, "", "relative/dir", "/no/such/dir"])
def test_paths_that_are_not_absolute_directories_are_unknown(path: str | None) -> None:
    """Nothing is run for them."""
    assert workspace_state(path, 1.0) == "unknown"
    assert touched_files(path, 1.0) == ()


def test_a_command_that_outlives_its_time_is_killed_with_everything_it_started() -> None:
    """The group is killed whole: the grandchild left in the background dies too."""
    code, out = run_bounded(["sh", "-c", "sleep 60 & echo $!; exec sleep 60"], timeout=0.5)

    assert code is None
    grandchild = int(out.split()[0])
    assert not _running(grandchild)


def test_output_is_bounded_and_the_writer_stopped() -> None:
    """A command that writes forever is read up to the limit, then killed."""
    code, out = run_bounded(["sh", "-c", "echo $$; exec yes"], timeout=5.0, limit=4096)

    assert code == 0 and len(out) == 4096
    assert not _running(int(out.split()[0]))


def test_a_command_that_finishes_leaves_nothing_behind() -> None:
    """Even after a normal exit, what it left in the background is killed."""
    code, out = run_bounded(["sh", "-c", "sleep 60 & echo $!"], timeout=5.0)

    assert code == 0
    assert not _running(int(out.split()[0]))


def _running(pid: int) -> bool:
    """Still running once a SIGKILL has had time to land (10 s bound, a failure timeout)."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return False
    _gone, alive = psutil.wait_procs([proc], timeout=10)
    try:
        return bool(alive) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
