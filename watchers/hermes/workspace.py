"""What a worker's workspace shows: its git state and the files it touched. Read only.

A workspace is the agents' ground: its repository's own configuration can name commands
(`core.fsmonitor`, hooks, pagers, `core.sshCommand`, filter and diff drivers, signature
programs), and any git process that reads it would run them as the daemon. So git runs
here with every such setting overridden on its command line (which wins over every
configuration file), filter and diff drivers the repository defines emptied by name,
submodules ignored, no system or global configuration, no optional locks (nothing is
written, no index refresh, no hook), a scrubbed environment, in a process group of its
own that is killed whole when it runs out of time, and with its output bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

OUTPUT_LIMIT = 64 * 1024
"""Bytes read from one git command; the rest is not needed and not read."""

_SAFE = (
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "core.pager=cat",
    "core.sshCommand=false",
    "core.askPass=",
    "core.editor=false",
    "core.untrackedCache=false",
    "core.alternateRefsCommand=",
    "credential.helper=",
    "diff.external=",
    "log.showSignature=false",
    "gpg.program=false",
    "status.submoduleSummary=false",
    "submodule.recurse=false",
    "color.ui=false",
    "protocol.allow=never",
)
"""Settings that would run a command, each forced off."""

_DRIVER_KEY = re.compile(
    r"^(filter\.[^\n]+\.(?:clean|smudge|process)|diff\.[^\n]+\.(?:command|textconv)"
    r"|merge\.[^\n]+\.driver)$",
    re.IGNORECASE,
)
_ENV_KEEP = ("PATH", "LANG", "TZ")


def _env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    env.update(
        {
            "LC_ALL": "C",
            "HOME": os.devnull,  # no ~/.gitconfig
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_OPTIONAL_LOCKS": "0",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_PAGER": "cat",
            "PAGER": "cat",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GIT_NO_REPLACE_OBJECTS": "1",
            "GIT_ATTR_NOSYSTEM": "1",
        }
    )
    return env


def run_bounded(
    argv: Sequence[str],
    timeout: float,
    limit: int = OUTPUT_LIMIT,
    env: dict[str, str] | None = None,
) -> tuple[int | None, bytes]:
    """Run `argv` in a new process group: (its exit code, or None if it ran out of time;
    at most `limit` bytes of its stdout). When it ends, runs out of time or has written
    `limit` bytes, its whole group is killed before it is reaped (its PID, the group's id,
    cannot have been reused by then), so nothing it started outlives it."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: killed whole
            close_fds=True,
        )
    except OSError:
        return None, b""
    assert proc.stdout is not None
    out = bytearray()
    deadline = time.monotonic() + timeout
    pidfd = _pidfd(proc.pid)
    exited = False
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ, "exit")  # readable once it exits
        while len(out) < limit:
            left = deadline - time.monotonic()
            events = sel.select(left) if left > 0 else []
            if not events:
                break
            if any(key.data == "exit" for key, _ in events):
                exited = True  # what it wrote is in the pipe: take it, do not wait for EOF
                _drain(proc.stdout.fileno(), out, limit)
                break
            chunk = os.read(proc.stdout.fileno(), min(65536, limit - len(out)))
            if not chunk:
                break
            out.extend(chunk)
    if pidfd is not None:
        os.close(pidfd)
    enough = len(out) >= limit
    exited = exited or enough or _exited_by(proc.pid, deadline)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the leader is alive or a zombie: still ours
    proc.stdout.close()
    code = proc.wait()
    if enough:
        return 0, bytes(out)  # what was asked is known; the rest was not needed
    return (code if exited and code >= 0 else None), bytes(out)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _drain(fd: int, out: bytearray, limit: int) -> None:
    """Read what is already in the pipe, without waiting for more."""
    os.set_blocking(fd, False)
    try:
        while len(out) < limit:
            chunk = os.read(fd, min(65536, limit - len(out)))
            if not chunk:
                return
            out.extend(chunk)
    except BlockingIOError:
        return


def _exited_by(pid: int, deadline: float) -> bool:
    """Wait, without reaping it, until our child `pid` has exited or `deadline` passes."""
    fd = _pidfd(pid)
    if fd is not None:
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                return bool(sel.select(max(0.0, deadline - time.monotonic())))
        finally:
            os.close(fd)
    while True:  # no pidfds (old kernels): look without reaping, a few times a second
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        if info is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


class Git:
    """Read-only git in one workspace, under the rules in the module docstring."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._overrides: list[str] | None = None

    def _base(self) -> list[str]:
        return ["git", "--no-pager", "-C", self.path]

    def _drivers(self) -> list[str]:
        """`-c` overrides that empty every filter, diff and merge driver command the
        repository's configuration (with its includes) defines."""
        if self._overrides is None:
            self._overrides = []
            _code, out = run_bounded(
                [
                    *self._base(),
                    *self._flags(_SAFE),
                    "config",
                    "--null",
                    "--get-regexp",
                    r"^(filter|diff|merge)\.",
                ],
                self.timeout,
                env=_env(),
            )
            for entry in out.decode("utf-8", "replace").split("\0"):
                key = entry.split("\n", 1)[0]
                if _DRIVER_KEY.match(key):
                    self._overrides.append(f"{key}=")
                    if key.lower().startswith("filter."):
                        self._overrides.append(f"{key.rsplit('.', 1)[0]}.required=false")
        return self._overrides

    @staticmethod
    def _flags(settings: Sequence[str]) -> list[str]:
        return [arg for s in settings for arg in ("-c", s)]

    def run(self, *args: str, limit: int = OUTPUT_LIMIT) -> str | None:
        """The command's output, or None if it failed or ran out of time."""
        argv = [*self._base(), *self._flags((*_SAFE, *self._drivers())), *args]
        code, out = run_bounded(argv, self.timeout, limit, env=_env())
        return out.decode("utf-8", "replace") if code == 0 else None


def _usable(path: str | None) -> bool:
    return bool(path) and os.path.isabs(path or "") and Path(path or "").is_dir()


def workspace_state(path: str | None, timeout: float) -> str:
    """committed | uncommitted | stashed(<name>) | unknown, from git, with a short timeout."""
    if not _usable(path):
        return "unknown"
    assert path is not None
    git = Git(path, timeout)
    status = git.run("status", "--porcelain", "--ignore-submodules=all", "--no-renames", limit=64)
    if status is None:
        return "unknown"
    if status:  # any line at all is a change; the first few bytes tell
        return "uncommitted"
    stash = git.run("stash", "list", "--no-show-signature", "--format=%gd", limit=256)
    first = stash.strip().splitlines()[0] if stash and stash.strip() else ""
    return f"stashed({first[:64]})" if first else "committed"


def _diff_stat(git: Git, base: str) -> str | None:
    """`git diff --stat` of the working tree against `base` (no drivers, no submodules)."""
    return git.run(
        "diff",
        "--stat=200",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--ignore-submodules=all",
        base,
        "--",
    )


def touched_files(path: str | None, timeout: float) -> tuple[str, ...]:
    """Files changed in a git workspace against its base branch (short timeout)."""
    if not _usable(path):
        return ()
    assert path is not None
    git = Git(path, timeout)
    base = None
    for ref in ("origin/HEAD", "main", "master"):
        found = git.run("merge-base", "HEAD", ref, limit=128)
        if found:
            base = found.strip()
            break
    stat = _diff_stat(git, base or "HEAD")
    if not stat:
        return ()
    files = [line.split("|")[0].strip() for line in stat.splitlines() if "|" in line]
    return tuple(f[:200] for f in files[:10])


def workspace_fingerprint(path: str | None, timeout: float) -> tuple[str, str] | None:
    """What a worker's progress in its workspace looks like from outside: a digest of git
    HEAD, the working tree's `diff --stat` against it and the untracked files, with a
    one-line summary; None when the workspace is not a git repository (or git failed)."""
    if not _usable(path):
        return None
    assert path is not None
    git = Git(path, timeout)
    head = git.run("rev-parse", "--verify", "-q", "HEAD", limit=128)
    if head is None:
        return None
    stat = _diff_stat(git, "HEAD")
    untracked = git.run("ls-files", "--others", "--exclude-standard", "-z")
    if stat is None or untracked is None:
        return None
    digest = hashlib.sha256("\0".join((head, stat, untracked)).encode()).hexdigest()[:16]
    changed = stat.strip().splitlines()[-1].strip() if stat.strip() else "no changes"
    files = [f for f in untracked.split("\0") if f]
    summary = f"HEAD {head.strip()[:12]}; {changed}; {len(files)} untracked"
    return digest, summary
