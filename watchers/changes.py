"""Noticing that a board changed, without reading it.

`board_version(path)` is the cheap test a pass makes before it scans: the identity, size
and modification time of the board file, its WAL and its rollback journal (three `stat`
calls, no open, no lock; not the change time: SQLite touches the WAL's attributes
whenever it opens it).
Every commit in WAL mode appends to the WAL or, after a checkpoint, rewrites the board
file, so a board whose version equals the one a pass started from has not been written
since. (The `-shm` file is not used: SQLite touches it when any connection opens, and
reading it would need an open file that, once closed, drops this process's POSIX locks
on it: the locks of a pass running in another thread.)

`ChangeFeed` reports Hermes's writes as they happen: one thread blocks on inotify for
the boards' directories and calls `on_change(board)` within about a second of a write
(a short window first, then at most once a second per board while writes continue). It
costs nothing while nothing is written. Where inotify is unavailable or its watches are
scarce (the per-user limit is shared with every other program of the user), boards are
polled with `board_version` once a second instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import struct
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

log = structlog.get_logger("watchers.changes")

Version = tuple[int, ...]

FIRST_WINDOW_SECONDS = 0.05
"""A write is reported this long after it is seen (a commit is several writes)."""
MIN_GAP_SECONDS = 1.0
"""While writes continue, a board is reported at most this often."""
POLL_SECONDS = 1.0
"""Boards without an inotify watch are compared this often."""
MAX_WATCH_SHARE = 8
"""At most 1/8 of the user's inotify watch limit is ours ..."""
MAX_WATCHES = 4096
"""... and never more than this many directories; the rest are polled."""

_IN_MODIFY = 0x00000002
_IN_MOVED_FROM = 0x00000040
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_IN_IGNORED = 0x00008000
_IN_Q_OVERFLOW = 0x00004000
_IN_ONLYDIR = 0x01000000
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_MASK = (_IN_MODIFY | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE) | _IN_ONLYDIR
_EVENT = struct.Struct("iIII")


def board_version(path: Path) -> Version | None:
    """The board file's, its WAL's and its rollback journal's identity, size and
    modification time; None when the board file cannot be looked at (the pass that
    follows will say why)."""
    try:
        db = os.stat(path)
    except OSError:
        return None
    out: list[int] = [db.st_ino, db.st_dev, db.st_size, db.st_mtime_ns]
    for suffix in ("-wal", "-journal"):
        try:
            st = os.stat(f"{path}{suffix}")
        except OSError:
            out.append(-1)
            continue
        out.extend((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def watch_limit() -> int:
    """How many directories this process may watch with inotify."""
    try:
        limit = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text().strip())
    except (OSError, ValueError):
        return 0
    return max(0, min(MAX_WATCHES, limit // MAX_WATCH_SHARE))


class _Inotify:
    """A minimal inotify binding (Linux, through libc)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        self._rm = libc.inotify_rm_watch
        self._rm.argtypes = (ctypes.c_int, ctypes.c_int)
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.fd: int = fd

    def add(self, directory: Path) -> int:
        wd = int(self._add(self.fd, os.fsencode(directory), _MASK))
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return wd

    def remove(self, wd: int) -> None:
        self._rm(self.fd, wd)  # the kernel may have dropped it already: nothing to undo

    def read(self) -> list[tuple[int, int, str]]:
        """Pending events as (watch, mask, name); [] when none."""
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return []
        out = []
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            name = data[offset : offset + length].split(b"\0", 1)[0]
            offset += length
            out.append((wd, mask, os.fsdecode(name)))
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class ChangeFeed:
    """Calls `on_change(board)` when a board's files are written."""

    def __init__(
        self,
        on_change: Callable[[Path], object],
        *,
        use_inotify: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_change = on_change
        self._clock = clock
        self._use_inotify = use_inotify
        self._lock = threading.Lock()
        self._boards: tuple[Path, ...] = ()
        self._names: dict[tuple[int, str], list[Path]] = {}  # (watch, file name) -> boards
        self._dirs: dict[Path, int] = {}  # watched directory -> watch
        self._polled: dict[Path, Version | None] = {}  # boards compared every POLL_SECONDS
        self._due: dict[Path, float] = {}  # board -> when to report it
        self._last: dict[Path, float] = {}  # board -> when it was last reported
        self._next_poll = 0.0
        self._inotify: _Inotify | None = None
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None

    # -- set up --------------------------------------------------------------------

    def start(self, boards: Iterable[Path]) -> None:
        if self._use_inotify:
            try:
                self._inotify = _Inotify()
            except (OSError, AttributeError) as exc:
                log.warning("inotify unavailable; boards are polled once a second", error=str(exc))
        self.watch(boards)
        self._thread = threading.Thread(target=self._run, name="change-feed", daemon=True)
        self._thread.start()

    def watch(self, boards: Iterable[Path]) -> None:
        """Watch exactly these boards (a reload calls it again)."""
        boards = tuple(dict.fromkeys(Path(b) for b in boards))
        names: dict[tuple[int, str], list[Path]] = {}
        dirs: dict[Path, int] = {}
        polled: dict[Path, Version | None] = {}
        limit = watch_limit()
        for board in boards:
            directory = board.parent
            wd = dirs.get(directory)
            if wd is None and self._inotify is not None and len(dirs) < limit:
                try:
                    wd = self._dirs.get(directory)
                    if wd is None:
                        wd = self._inotify.add(directory)
                    dirs[directory] = wd
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                        log.warning(
                            "board directory not watched; polled instead",
                            directory=str(directory),
                            error=str(exc),
                        )
                    wd = None
            if wd is None:
                polled[board] = board_version(board)
                continue
            for name in (board.name, f"{board.name}-wal", f"{board.name}-journal"):
                names.setdefault((wd, name), []).append(board)
        with self._lock:
            gone = set(self._dirs.values()) - set(dirs.values())
            self._boards, self._names, self._dirs, self._polled = boards, names, dirs, polled
            self._due = {b: t for b, t in self._due.items() if b in boards}
            self._last = {b: t for b, t in self._last.items() if b in boards}
        if self._inotify is not None:
            for wd in gone:
                self._inotify.remove(wd)

    @property
    def polled(self) -> list[Path]:
        with self._lock:
            return sorted(self._polled)

    def stop(self, timeout: float = 2.0) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the thread ------------------------------------------------------------------

    def changed(self, board: Path) -> None:
        """`board` was written now: report it after the window, or a second after its
        last report while writes go on."""
        now = self._clock()
        with self._lock:
            if board in self._due or board not in self._boards:
                return
            last = self._last.get(board)
            due = now + FIRST_WINDOW_SECONDS
            if last is not None:
                due = max(due, last + MIN_GAP_SECONDS)
            self._due[board] = due

    def _timeout(self, now: float) -> float | None:
        with self._lock:
            waits = [t - now for t in self._due.values()]
            if self._polled:
                waits.append(self._next_poll - now)
        return max(0.0, min(waits)) if waits else None

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        if self._inotify is not None:
            poller.register(self._inotify.fd, select.POLLIN)
        while True:
            timeout = self._timeout(self._clock())
            ready = poller.poll(None if timeout is None else max(1, int(timeout * 1000) + 1))
            if any(fd == self._stop_r for fd, _ in ready):
                return
            try:
                self._step(bool(ready))
            except Exception:  # the feed must outlive anything one report runs into
                log.exception("change feed: a step failed")

    def _step(self, readable: bool) -> None:
        if readable and self._inotify is not None:
            for wd, mask, name in self._inotify.read():
                if mask & _IN_Q_OVERFLOW:  # events were lost: every board may have changed
                    for board in self._boards:
                        self.changed(board)
                    continue
                if mask & _IN_IGNORED:  # the directory went away: poll its boards
                    self._unwatched(wd)
                    continue
                for board in self._names.get((wd, name), ()):
                    self.changed(board)
        now = self._clock()
        if self._polled and now >= self._next_poll:
            self._next_poll = now + POLL_SECONDS
            self._poll_versions()
        with self._lock:
            due = [b for b, t in self._due.items() if t <= now]
            for board in due:
                del self._due[board]
                self._last[board] = now
        for board in due:
            try:
                self._on_change(board)
            except Exception:
                log.exception("change feed: reporting a change failed", board=str(board))

    def _poll_versions(self) -> None:
        with self._lock:
            polled = list(self._polled.items())
        for board, before in polled:
            now = board_version(board)
            if now != before:
                with self._lock:
                    if board in self._polled:
                        self._polled[board] = now
                self.changed(board)

    def _unwatched(self, wd: int) -> None:
        with self._lock:
            for key in [k for k in self._names if k[0] == wd]:
                for board in self._names.pop(key):
                    self._polled[board] = board_version(board)
            self._dirs = {d: w for d, w in self._dirs.items() if w != wd}
