"""One error tree. Whether an error is transient is decided here, once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from watchers.exitcodes import ExitCode


class WatchersError(Exception):
    """Base of every error the daemon raises on purpose."""

    exit_code: ExitCode = ExitCode.UNEXPECTED
    transient = False


class ConfigError(WatchersError):
    """Invalid configuration. The message names the field, never a value."""

    exit_code = ExitCode.CONFIG


class UsageError(WatchersError):
    exit_code = ExitCode.USAGE


class BoardError(WatchersError):
    """A board cannot be used at all (missing, unreadable, not a Hermes board)."""

    exit_code = ExitCode.NO_INPUT

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"board {path}: {problem}")
        self.path = path
        self.problem = problem


class ListenError(WatchersError):
    """The HTTP server cannot bind its address (in use, not permitted, no such host)."""

    exit_code = ExitCode.UNAVAILABLE


class StoreBusy(WatchersError):
    """The board was locked by another writer; the next tick retries."""

    transient = True


class StoreFailure(WatchersError):
    """SQLite failed in a way a retry will not fix (corruption, I/O error, disk full)."""


_TRANSIENT_MARKERS = ("database is locked", "database is busy", "database table is locked")


def classify_sqlite_error(exc: sqlite3.Error, board: str) -> WatchersError:
    """Map a sqlite3 error to the tree: locked is transient, the rest is not."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and any(
        marker in text.lower() for marker in _TRANSIENT_MARKERS
    ):
        return StoreBusy(f"board {board}: {text}")
    return StoreFailure(f"board {board}: {type(exc).__name__}: {text}")
