"""Who holds a board's dispatch lock (`<db>.dispatch.lock`, Hermes's `flock` around each
dispatcher tick), read from `/proc/locks` and never from the lock itself.

The lock file is only `stat`ed: never opened, created, locked or removed (opening it and
closing again would drop nothing of Hermes's, but any lock attempt of ours could make a
tick of Hermes's skip). `/proc/locks` names each lock's file as `MAJOR:MINOR:INODE`, the
device in hex; a holder's PID as this PID namespace sees it, 0 when the holder lives in
another one. Lines after `->` are waiters, not holders. The file is read up to MAX_BYTES or MAX_LINES, whichever comes first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

MAX_BYTES = 8 << 20
MAX_LINES = 100_000
LOCK_SUFFIX = ".dispatch.lock"
HOLDING_KINDS = frozenset({"FLOCK", "POSIX"})
"""Hermes takes a `flock`; on NFS the kernel emulates that with a POSIX lock."""


class LockState(StrEnum):
    HELD = "held"  # by the listed PIDs
    HELD_ELSEWHERE = "held_elsewhere"  # by a process whose PID this namespace cannot see
    FREE = "free"  # the file exists and no process holds it
    NO_FILE = "no_file"  # Hermes creates it at its first dispatch
    UNKNOWN = "unknown"  # the file or /proc/locks could not be read


@dataclass(frozen=True, slots=True)
class LockEntry:
    """One line of /proc/locks."""

    kind: str  # FLOCK, POSIX, OFDLCK, LEASE...
    pid: int
    major: int
    minor: int
    inode: int
    waiting: bool  # a `->` line: blocked on the lock, not holding it


@dataclass(frozen=True, slots=True)
class LockHolder:
    path: str
    state: LockState
    pids: tuple[int, ...] = ()
    names: tuple[str | None, ...] = ()  # each PID's /proc/<pid>/comm, when readable
    problem: str | None = None

    def describe(self) -> str:
        """For people: `held by pid 1234 (hermes)`, `no process holds it`, ..."""
        if self.state is LockState.HELD:
            who = ", ".join(
                f"{pid} ({name})" if name else str(pid)
                for pid, name in zip(self.pids, self.names, strict=True)
            )
            return f"held by pid{'s' if len(self.pids) > 1 else ''} {who}"
        if self.state is LockState.HELD_ELSEWHERE:
            return "held by a process outside this PID namespace"
        if self.state is LockState.FREE:
            return "no process holds it"
        if self.state is LockState.NO_FILE:
            return "no lock file (no Hermes dispatch has run here)"
        return f"unknown ({self.problem})"

    def as_record(self) -> dict[str, object]:
        return {
            "path": self.path,
            "state": self.state.value,
            "pids": list(self.pids),
            "detail": self.describe(),
        }


def lock_path(board: Path) -> Path:
    """Hermes's dispatch lock for the board file `board`."""
    return board.with_name(board.name + LOCK_SUFFIX)


def parse_proc_locks(lines: Iterable[str]) -> list[LockEntry]:
    """The entries of /proc/locks text; lines that do not parse are passed over.

    `1: FLOCK  ADVISORY  WRITE 1234 fe:01:524291 0 EOF`
    `1: -> FLOCK  ADVISORY  WRITE 1240 fe:01:524291 0 EOF` (a waiter)"""
    out: list[LockEntry] = []
    for count, line in enumerate(lines):
        if count >= MAX_LINES:
            break
        fields = line.split()
        if len(fields) < 6 or not fields[0].endswith(":"):
            continue
        waiting = fields[1] == "->"
        rest = fields[2:] if waiting else fields[1:]
        if len(rest) < 5:
            continue
        kind, pid_text, device = rest[0], rest[3], rest[4]
        parts = device.split(":")
        if len(parts) != 3:
            continue
        try:
            pid = int(pid_text)
            major, minor, inode = int(parts[0], 16), int(parts[1], 16), int(parts[2])
        except ValueError:
            continue
        out.append(LockEntry(kind, pid, major, minor, inode, waiting))
    return out


def read_proc_locks(proc: Path = Path("/proc")) -> list[LockEntry]:
    """/proc/locks, bounded; OSError when it cannot be read."""
    with open(proc / "locks", "rb") as fh:
        raw = fh.read(MAX_BYTES)
    return parse_proc_locks(raw.decode("ascii", "replace").splitlines())


def holders(entries: Iterable[LockEntry], st_dev: int, st_ino: int) -> list[int]:
    """PIDs holding a lock on the file (0 for a holder in another PID namespace)."""
    major, minor = os.major(st_dev), os.minor(st_dev)
    return [
        e.pid
        for e in entries
        if not e.waiting
        and e.kind in HOLDING_KINDS
        and (e.major, e.minor, e.inode) == (major, minor, st_ino)
    ]


def _comm(proc: Path, pid: int) -> str | None:
    try:
        with open(proc / str(pid) / "comm", "rb") as fh:
            return fh.read(64).decode("utf-8", "replace").strip() or None
    except OSError:
        return None


def lock_holder(board: Path, proc: Path = Path("/proc")) -> LockHolder:
    """Who holds the board's dispatch lock now, from a stat of the lock file and
    /proc/locks (never the lock file's contents)."""
    path = lock_path(board)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return LockHolder(str(path), LockState.NO_FILE)
    except OSError as exc:
        return LockHolder(str(path), LockState.UNKNOWN, problem=f"stat failed: {exc.strerror}")
    try:
        entries = read_proc_locks(proc)
    except OSError as exc:
        problem = f"/proc/locks unreadable: {exc.strerror}"
        return LockHolder(str(path), LockState.UNKNOWN, problem=problem)
    found = holders(entries, st.st_dev, st.st_ino)
    visible = tuple(sorted({pid for pid in found if pid > 0}))
    if visible:
        names = tuple(_comm(proc, pid) for pid in visible)
        return LockHolder(str(path), LockState.HELD, visible, names)
    if found:
        return LockHolder(str(path), LockState.HELD_ELSEWHERE)
    return LockHolder(str(path), LockState.FREE)
