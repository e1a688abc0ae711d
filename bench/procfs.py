"""What /proc says about a process: its status lines, CPU seconds (and per thread),
open fds by kind."""

from __future__ import annotations

import contextlib
import os
from collections import Counter


def proc_status(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def kib(value: str | None) -> int | None:
    if not value:
        return None
    return int(value.split()[0])


def _stat_cpu(path: str) -> float | None:
    try:
        with open(path, "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime+stime of the process."""
    return _stat_cpu(f"/proc/{pid}/stat")


def thread_cpu(pid: int) -> dict[int, float]:
    """utime+stime of each of the process's threads (by tid)."""
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            s = _stat_cpu(f"/proc/{pid}/task/{tid}/stat")
            if s is not None:
                out[int(tid)] = s
    return out


def pidfd_count(pid: int) -> int:
    n = 0
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return -1
    for name in names:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{name}") == "anon_inode:[pidfd]":
                n += 1
    return n


def fd_counts(pid: int) -> dict[str, int]:
    """Open fds by kind: pidfd, socket, pipe, file (db, wal, shm, log...), other."""
    kinds: Counter[str] = Counter()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return {"total": -1}
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target == "anon_inode:[pidfd]":
            kinds["pidfd"] += 1
        elif target.startswith("socket:"):
            kinds["socket"] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        elif target.startswith("/"):
            kinds["file"] += 1
        else:
            kinds["other"] += 1
    return {"total": sum(kinds.values()), **dict(sorted(kinds.items()))}
