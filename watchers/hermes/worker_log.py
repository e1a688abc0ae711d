"""The end of a worker's output, as Hermes's dispatcher saved it. Read only, bounded.

Hermes sends a spawned worker's stdout and stderr to `<board dir>/logs/<task id>.log`:
for the default board (`<root>/kanban.db`) that is `<root>/kanban/logs/`, for every
other board (`<root>/kanban/boards/<slug>/kanban.db`) the `logs/` beside it. Agents can
write there, so nothing here follows a symbolic link, opens anything but a regular file
(a FIFO would block, a device would never end), or reads more than the last
`TAIL_BYTES`, and a task id that is not a plain name is never made into a path.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

TAIL_BYTES = 16 * 1024
"""What is read from the end of a worker's log: its last words, not its history."""

_TASK_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def log_dirs(board: Path) -> list[Path]:
    """Where Hermes keeps the worker logs of `board` (both layouts; the first that
    exists is the one in use)."""
    return [board.parent / "logs", board.parent / "kanban" / "logs"]


def worker_log_tail(board: Path, task_id: str, since: float | None = None) -> str | None:
    """The last `TAIL_BYTES` of the task's worker log, decoded leniently; None when
    there is none, it is not a plain file inside the board's own log directory, or it
    was last written before `since` (epoch seconds: then it is an earlier attempt's)."""
    if not _TASK_ID.fullmatch(task_id):
        return None
    for directory in log_dirs(board):
        text = _tail(directory, f"{task_id}.log", since)
        if text is not None:
            return text
    return None


def _tail(directory: Path, name: str, since: float | None) -> str | None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fd = os.open(
                name,
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                dir_fd=dir_fd,
            )
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            if since is not None and st.st_mtime < since:
                return None
            start = max(0, st.st_size - TAIL_BYTES)
            data = os.pread(fd, TAIL_BYTES, start)
        finally:
            os.close(fd)
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            os.close(dir_fd)
    return data.decode("utf-8", errors="replace")
