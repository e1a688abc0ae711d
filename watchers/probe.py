"""The one OS seam: whether a running task's worker process is still its worker.

Only this module touches psutil, /proc and process file descriptors. Tests swap in
`StaticProbe` for the decision layer and run `ProcessProbe` against real processes.

How a worker is judged (the first matching layer wins):
- GONE    no process has that PID;
- ZOMBIE  the process exited and its parent has not reaped it;
- REUSED  a process has that PID but it is not the worker: it started well after the
          attempt was claimed (or before it), its start time differs from the
          recorded `worker_started_at`, or its readable command line lacks the task id;
- UNKNOWN we may not inspect it (permissions);
- ALIVE   otherwise.

Once a worker is verified ALIVE the probe keeps a pidfd for it: a pidfd names that
one process, never a later process with the same PID, and one poll() over all of
them answers "who exited?" for a thousand workers in well under a millisecond.
Where pidfds are unavailable it compares /proc/<pid>/stat's start time instead.

The same pidfds tell of an exit as it happens: `exited_scopes` blocks (in its own
thread) until a watched worker exits, and names the scopes that watched it, so the
daemon can wake the watcher of that board at once instead of at its next tick.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import select
import socket
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import psutil

from watchers.model import Observation, Verdict

VERIFIED = "verified worker"  # alive, and its identity checked: only these are cached
_BORN_BEFORE_CLAIM_TOLERANCE = 2.0  # claim times are whole seconds; process start times are not
_FINGERPRINT_TOLERANCE = 1.0
_FD_RESERVE = 256
STAT_POLL_SECONDS = 1.0
"""Workers watched without a pidfd are looked at this often for the reflex."""


@dataclass(frozen=True, slots=True)
class WorkerRef:
    """What the board says about one host-local worker."""

    task_id: str
    pid: int
    run_id: int | None
    claimed_at: int | None  # the attempt's claim time (task_runs.started_at)
    worker_started_at: float | None = None


class Probe(Protocol):
    hostname: str

    def observe(
        self, refs: Sequence[WorkerRef], spawn_slack: float, scope: str = "default"
    ) -> dict[str, Observation]:
        """An observation per task id in `refs`. Workers watched for this `scope` and not
        in `refs` are forgotten; other scopes' watches are kept."""

    def exited_scopes(self, timeout: float) -> set[str]:
        """Block up to `timeout` for watched workers to exit; the scopes that watched them."""

    def interrupt(self) -> None:
        """Make a blocked `exited_scopes` return now (its caller is stopping)."""

    def close(self) -> None: ...


def board_scope(watcher: str, board: object) -> str:
    """The scope a watcher observes one board's workers under: `<watcher>:<board path>`."""
    return f"{watcher}:{board}"


def scope_board(scope: str) -> str | None:
    """The board path of a `board_scope`, or None for another kind of scope."""
    _, sep, board = scope.partition(":")
    return board if sep and board else None


class StaticProbe:
    """A probe that answers from a table: for decision tests and the demo's dry runs."""

    def __init__(
        self, verdicts: Mapping[str, Observation] | None = None, hostname: str = "testhost"
    ) -> None:
        self.hostname = hostname
        self.verdicts = dict(verdicts or {})
        self._idle = threading.Event()

    def observe(
        self, refs: Sequence[WorkerRef], spawn_slack: float, scope: str = "default"
    ) -> dict[str, Observation]:
        return {
            r.task_id: self.verdicts.get(r.task_id, Observation(Verdict.ALIVE, "static"))
            for r in refs
        }

    def exited_scopes(self, timeout: float) -> set[str]:
        if self._idle.wait(timeout):  # a table never sees an exit: only interrupted
            self._idle.clear()
        return set()

    def interrupt(self) -> None:
        self._idle.set()

    def close(self) -> None:
        pass


_Key = tuple[str, str, int, int | None, int | None, float | None]
"""The caller's scope, then every identity fact the board gives: a change in any of them
means look again."""


@dataclass(slots=True)
class _Watch:
    pid: int
    create_time: float
    stat_start: int | None  # /proc/<pid>/stat field 22, for the no-pidfd path
    pidfd: int | None
    alive: Observation  # what a pass that finds it still running reports (one object)


def _key(ref: WorkerRef, scope: str) -> _Key:
    return (scope, ref.task_id, ref.pid, ref.run_id, ref.claimed_at, ref.worker_started_at)


def _read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return data.rsplit(b")", 1)[-1].decode("ascii", "replace").split()


def _zombie_exit(pid: int) -> tuple[int | None, int | None]:
    """(exit code, signal) of a zombie, from /proc/<pid>/stat field 52.

    The kernel shows 0 there both for a clean exit and when we may not see the status
    (no ptrace read access: another user's process, unless we are root). So 0 counts
    as a clean exit only when the process is ours to inspect."""
    fields = _read_stat(pid)
    if fields is None or len(fields) <= 49:
        return None, None
    try:
        status = int(fields[49])
    except ValueError:
        return None, None
    if status == 0:
        return (0, None) if _may_read_exit_status(pid) else (None, None)
    if status & 0x7F:
        return None, status & 0x7F
    return (status >> 8) & 0xFF, None


def _may_read_exit_status(pid: int) -> bool:
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return False
    euid = os.geteuid()
    return euid in (0, owner)


def _zombie_observation(pid: int, started: float | None) -> Observation:
    code, sig = _zombie_exit(pid)
    if sig is not None:
        detail = f"zombie: killed by signal {sig}, not reaped by its parent"
    elif code is not None:
        detail = f"zombie: exited with code {code}, not reaped by its parent"
    else:
        detail = "zombie: exited, not reaped by its parent"
    return Observation(
        Verdict.ZOMBIE, detail, exit_code=code, signal=sig, process_started_at=started
    )


class ProcessProbe:
    """Judges host-local workers by their real processes."""

    def __init__(self, hostname: str | None = None) -> None:
        self.hostname = hostname or socket.gethostname()
        self._lock = threading.Lock()
        self._watches: dict[_Key, _Watch] = {}
        self._by_fd: dict[int, _Key] = {}
        self._poll = select.poll()
        # exits, reported once each (one-shot): a level-triggered poll would report a dead
        # worker's pidfd again on every wait until the next tick unwatched it
        self._exits = select.epoll()
        # written by `interrupt`: a wait on `_exits` with nothing pending may be long. It
        # lives as long as the probe, not until `close` (which only forgets the watches:
        # the daemon closes and reuses its probe on every (re)schedule).
        self._interrupt = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        weakref.finalize(self, os.close, self._interrupt)
        self._exits.register(self._interrupt, select.EPOLLIN)
        self._pidfd_ok = hasattr(os, "pidfd_open")
        self._next_stat_poll = 0.0
        self._stat_reported: set[_Key] = set()  # pidfd-less exits told to exited_scopes
        # per scope: the last refs (the very objects) and what was observed of them, while
        # every one is verified and watched by a pidfd (nothing to look at unless one exits)
        self._last: dict[str, tuple[list[WorkerRef], dict[str, Observation]]] = {}
        self._fd_budget = self._raise_fd_limit()

    @staticmethod
    def _raise_fd_limit() -> int:
        """Watching a thousand workers takes a thousand descriptors; ask for them."""
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            want = hard if hard != resource.RLIM_INFINITY else 65536
            want = min(want, 65536)
            if soft != resource.RLIM_INFINITY and soft < want:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                soft = want
            limit = soft if soft != resource.RLIM_INFINITY else 65536
        except (ValueError, OSError):
            limit = 1024
        return max(0, int(limit) - _FD_RESERVE)

    # -- public ------------------------------------------------------------------

    def observe(
        self, refs: Sequence[WorkerRef], spawn_slack: float, scope: str = "default"
    ) -> dict[str, Observation]:
        with self._lock:
            exited = self._exited()
            last = self._last.get(scope)
            if (
                last is not None
                and len(last[0]) == len(refs)
                and all(a is b for a, b in zip(last[0], refs, strict=True))
                and not any(k[0] == scope for k in exited)
            ):
                # the same workers as last time, all watched by pidfd, none exited
                return dict(last[1])
            self._last.pop(scope, None)
            out = self._observe(refs, spawn_slack, scope, exited)
            if all(
                (w := self._watches.get(_key(r, scope))) is not None and w.pidfd is not None
                for r in refs
            ):
                self._last[scope] = (list(refs), dict(out))
            return out

    def _observe(
        self, refs: Sequence[WorkerRef], spawn_slack: float, scope: str, exited: set[_Key]
    ) -> dict[str, Observation]:
        wanted = {_key(r, scope) for r in refs}
        for key in [k for k in self._watches if k[0] == scope and k not in wanted]:
            self._unwatch(key)
        out: dict[str, Observation] = {}
        for ref in refs:
            key = _key(ref, scope)
            watch = self._watches.get(key)
            if watch is not None and key not in exited and self._still_same(watch):
                out[ref.task_id] = watch.alive
                continue
            if watch is not None:
                self._unwatch(key)
            obs = self.inspect(ref, spawn_slack)
            if obs.detail == VERIFIED and obs.process_started_at is not None:
                self._watch(key, ref.pid, obs.process_started_at)
            out[ref.task_id] = obs
        return out

    def close(self) -> None:
        with self._lock:
            self._last.clear()
            for key in list(self._watches):
                self._unwatch(key)

    def interrupt(self) -> None:
        with contextlib.suppress(OSError):
            os.eventfd_write(self._interrupt, 1)

    def exited_scopes(self, timeout: float) -> set[str]:
        """Block up to `timeout` seconds for watched workers to exit; the scopes that
        watched them (each exit is reported once; the next `observe` judges it). Workers
        watched without a pidfd (none on this kernel, or past the descriptor budget) are
        compared by their /proc start time at least every STAT_POLL_SECONDS instead."""
        with self._lock:
            polled = len(self._watches) > len(self._by_fd)  # some are watched without one
        if polled:
            timeout = max(0.0, min(timeout, self._next_stat_poll - time.monotonic()))
        try:
            ready = self._exits.poll(timeout)
        except (OSError, ValueError):  # closed under us: nothing more to report
            return set()
        with self._lock:
            if any(fd == self._interrupt for fd, _ in ready):
                with contextlib.suppress(OSError):
                    os.eventfd_read(self._interrupt)
            scopes = {self._by_fd[fd][0] for fd, _ in ready if fd in self._by_fd}
            if polled and time.monotonic() >= self._next_stat_poll:
                self._next_stat_poll = time.monotonic() + STAT_POLL_SECONDS
                scopes |= self._stat_exits()
        return scopes

    def _stat_exits(self) -> set[str]:
        """Scopes of pidfd-less watches whose process is gone, a zombie or another one
        (each reported once)."""
        gone = set()
        for key, watch in self._watches.items():
            if (
                watch.pidfd is None
                and key not in self._stat_reported
                and not self._still_same(watch)
            ):
                self._stat_reported.add(key)
                gone.add(key[0])
        return gone

    @property
    def watching(self) -> int:
        return len(self._watches)

    # -- the full check ------------------------------------------------------------

    def inspect(self, ref: WorkerRef, spawn_slack: float) -> Observation:
        """Judge one worker from scratch (no cache)."""
        try:
            proc = psutil.Process(ref.pid)
            with proc.oneshot():
                status = proc.status()
                started = proc.create_time()
        except psutil.ZombieProcess:
            return _zombie_observation(ref.pid, None)
        except psutil.NoSuchProcess:
            return Observation(Verdict.GONE, "no such process")
        except psutil.AccessDenied:
            return Observation(Verdict.UNKNOWN, "not permitted to inspect the process")
        if status == psutil.STATUS_ZOMBIE:
            return _zombie_observation(ref.pid, started)

        reused = self._identity_mismatch(ref, started, spawn_slack)
        if reused:
            return Observation(Verdict.REUSED, reused, process_started_at=started)
        try:
            cmdline = proc.cmdline()
        except psutil.ZombieProcess:
            return _zombie_observation(ref.pid, started)
        except psutil.NoSuchProcess:
            return Observation(Verdict.GONE, "no such process (exited while inspected)")
        except psutil.AccessDenied:
            return Observation(
                Verdict.UNKNOWN,
                "not permitted to read the command line",
                process_started_at=started,
            )
        if not cmdline:
            # Empty while a process is between fork and exec: maybe a new process on a
            # recycled PID. Alive for now, but not verified (not cached): look again next tick.
            return Observation(
                Verdict.ALIVE, "command line not readable yet", process_started_at=started
            )
        if not any(ref.task_id in part for part in cmdline):
            shown = " ".join(cmdline)[:80]
            return Observation(
                Verdict.REUSED,
                f"pid now runs a command without {ref.task_id}: {shown!r}",
                process_started_at=started,
            )
        return Observation(Verdict.ALIVE, VERIFIED, process_started_at=started)

    @staticmethod
    def _identity_mismatch(ref: WorkerRef, started: float, spawn_slack: float) -> str | None:
        if ref.worker_started_at is not None:
            if abs(started - ref.worker_started_at) > _FINGERPRINT_TOLERANCE:
                return (
                    f"pid started at {started:.0f}, the worker started at "
                    f"{ref.worker_started_at:.0f} (worker_started_at)"
                )
            return None
        if ref.claimed_at is None:
            return None
        if started > ref.claimed_at + spawn_slack:
            late = started - ref.claimed_at
            return f"pid now belongs to a process started {late:.0f}s after the claim"
        if started < ref.claimed_at - _BORN_BEFORE_CLAIM_TOLERANCE:
            early = ref.claimed_at - started
            return f"pid now belongs to a process started {early:.0f}s before the claim"
        return None

    # -- the watch cache ------------------------------------------------------------

    def _watch(self, key: _Key, pid: int, create_time: float) -> None:
        fields = _read_stat(pid)
        stat_start = int(fields[19]) if fields and len(fields) > 19 else None
        pidfd: int | None = None
        if self._pidfd_ok and len(self._by_fd) < self._fd_budget:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError as exc:
                if exc.errno in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
                    self._pidfd_ok = False
                pidfd = None
            if pidfd is not None:
                # the PID could have been recycled between inspection and pidfd_open
                fresh = _read_stat(pid)
                if not fresh or len(fresh) <= 19 or int(fresh[19]) != stat_start:
                    os.close(pidfd)
                    return
                self._poll.register(pidfd, select.POLLIN)
                self._exits.register(pidfd, select.EPOLLIN | select.EPOLLONESHOT)
                self._by_fd[pidfd] = key
        alive = Observation(Verdict.ALIVE, VERIFIED, process_started_at=create_time)
        self._watches[key] = _Watch(pid, create_time, stat_start, pidfd, alive)

    def _unwatch(self, key: _Key) -> None:
        self._stat_reported.discard(key)
        watch = self._watches.pop(key, None)
        if watch is None or watch.pidfd is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._poll.unregister(watch.pidfd)
        with contextlib.suppress(OSError, ValueError):
            self._exits.unregister(watch.pidfd)
        self._by_fd.pop(watch.pidfd, None)
        os.close(watch.pidfd)

    def _exited(self) -> set[_Key]:
        if not self._by_fd:
            return set()
        return {self._by_fd[fd] for fd, _ in self._poll.poll(0) if fd in self._by_fd}

    @staticmethod
    def _still_same(watch: _Watch) -> bool:
        if watch.pidfd is not None:
            return True  # the poll already said it has not exited
        fields = _read_stat(watch.pid)
        if fields is None or len(fields) <= 19:
            return False
        return fields[0] != "Z" and int(fields[19]) == watch.stat_start
