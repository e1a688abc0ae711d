"""Who holds a board's dispatch lock, read from the real /proc/locks while real processes
take and drop a real `flock` on it; the lock file itself is never opened by us."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from watchers.dispatcher.locks import LockState, lock_holder, lock_path

HOLDER = (
    "import fcntl, os, sys\n"
    "fh = open(sys.argv[1], 'a+b')\n"
    "fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "os.write(1, b'held\\n')\n"
    "sys.stdin.readline()\n"
    "fcntl.flock(fh.fileno(), fcntl.LOCK_UN)\n"
    "os.write(1, b'released\\n')\n"
    "sys.stdin.readline()\n"
)
"""Takes the lock as Hermes's dispatcher does (non-blocking exclusive flock), says so,
drops it when told, says so, and exits when told."""

_opened: list[str] = []
_watching: list[str] = []


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _watching and event == "open" and args and str(args[0]) in _watching:
        _opened.append(str(args[0]))


sys.addaudithook(_audit)  # cannot be removed: it records only while a test watches a path


@pytest.fixture
def never_opened(tmp_path: Path) -> Iterator[Path]:
    """The board's lock path; the test fails if this process opens it meanwhile."""
    path = lock_path(tmp_path / "kanban.db")
    _opened.clear()
    _watching.append(str(path))
    try:
        yield path
    finally:
        _watching.clear()
    assert _opened == [], "the lock file was opened by the watcher's process"


def create(path: Path) -> None:
    """The lock file as Hermes leaves it, made by another process (as Hermes does)."""
    subprocess.run(["touch", str(path)], check=True, timeout=30)


def step(proc: subprocess.Popen[bytes], expect: bytes) -> None:
    assert proc.stdout is not None
    assert os.read(proc.stdout.fileno(), 64) == expect


def test_a_process_holding_the_lock_is_named_and_a_released_lock_is_free(tmp_path, never_opened):
    """flock by a child: held by its pid (and name); unlocked: no process holds it."""
    board = tmp_path / "kanban.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(never_opened)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        step(proc, b"held\n")
        holder = lock_holder(board)
        assert holder.state is LockState.HELD and holder.pids == (proc.pid,)
        assert holder.describe().startswith(f"held by pid {proc.pid} (python")
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        step(proc, b"released\n")
        holder = lock_holder(board)
        assert holder.state is LockState.FREE and holder.describe() == "no process holds it"
    finally:
        proc.communicate(b"go\n", timeout=30)
    assert lock_holder(board).state is LockState.FREE  # the file stays, nobody holds it


def test_no_lock_file_is_said_so_and_not_created(tmp_path, never_opened):
    """Before Hermes's first dispatch there is no file; looking does not make one."""
    holder = lock_holder(tmp_path / "kanban.db")
    assert holder.state is LockState.NO_FILE and "no lock file" in holder.describe()
    assert not never_opened.exists()


def test_a_holder_in_another_pid_namespace_is_said_to_be_outside_it(tmp_path, never_opened):
    """/proc/locks shows pid 0 for a holder this namespace cannot see."""
    create(never_opened)
    st = never_opened.stat()
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "locks").write_text(
        f"1: FLOCK  ADVISORY  WRITE 0 {os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:"
        f"{st.st_ino} 0 EOF\n"
    )
    holder = lock_holder(tmp_path / "kanban.db", proc=proc)
    assert holder.state is LockState.HELD_ELSEWHERE
    assert holder.describe() == "held by a process outside this PID namespace"


def test_an_unreadable_proc_locks_is_unknown_not_free(tmp_path, never_opened):
    """Without /proc/locks nobody can say; the answer must not read as 'free'."""
    create(never_opened)
    holder = lock_holder(tmp_path / "kanban.db", proc=tmp_path / "no-proc")
    assert holder.state is LockState.UNKNOWN and "unknown" in holder.describe()
