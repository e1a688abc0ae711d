"""A worker's last output: read from the board's own log directory, bounded, never
through a link, a FIFO or a path a task id could steer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from watchers.hermes.provider_errors import Signal, provider_error_line
from watchers.hermes.worker_log import TAIL_BYTES, worker_log_tail


@pytest.fixture
def board(tmp_path: Path) -> Path:
    """The default board's layout: `<root>/kanban.db`, logs in `<root>/kanban/logs/`."""
    (tmp_path / "kanban" / "logs").mkdir(parents=True)
    db = tmp_path / "kanban.db"
    db.write_bytes(b"")
    return db


def test_the_last_words_of_a_worker_are_read_from_either_layout(
    board: Path, tmp_path: Path
) -> None:
    """Default board and named board (`logs/` beside its kanban.db)."""
    (board.parent / "kanban" / "logs" / "t_0000aaaa.log").write_text(
        "hello\n429 Too Many Requests\n"
    )
    assert worker_log_tail(board, "t_0000aaaa") == "hello\n429 Too Many Requests\n"
    named = tmp_path / "kanban" / "boards" / "ops"
    (named / "logs").mkdir(parents=True)
    (named / "logs" / "t_0000bbbb.log").write_text("401 Unauthorized\n")
    assert worker_log_tail(named / "kanban.db", "t_0000bbbb") == "401 Unauthorized\n"


def test_only_the_tail_of_a_large_log_is_read(board: Path) -> None:
    """A 1 MiB log: the last TAIL_BYTES, nothing more."""
    log = board.parent / "kanban" / "logs" / "t_0000aaaa.log"
    log.write_bytes(b"x" * (1 << 20) + b"\nRateLimitError: 429\n")
    tail = worker_log_tail(board, "t_0000aaaa")
    assert tail is not None and len(tail.encode()) == TAIL_BYTES
    assert tail.endswith("RateLimitError: 429\n")


def test_links_fifos_odd_task_ids_and_older_logs_are_not_read(board: Path, tmp_path: Path) -> None:
    """Nothing outside a plain file in the board's log directory; nothing written before `since`."""
    logs = board.parent / "kanban" / "logs"
    secret = tmp_path / "secret.txt"
    secret.write_text("401 key sk-abcdefghijklmnop\n")
    (logs / "t_0000aaaa.log").symlink_to(secret)
    assert worker_log_tail(board, "t_0000aaaa") is None
    os.mkfifo(logs / "t_0000bbbb.log")
    assert worker_log_tail(board, "t_0000bbbb") is None  # would block if it were opened plainly
    assert worker_log_tail(board, "../../secret") is None
    assert worker_log_tail(board, "t_0000cccc") is None  # no log at all
    old = logs / "t_0000dddd.log"
    old.write_text("429\n")
    os.utime(old, (1_000_000_000, 1_000_000_000))
    assert worker_log_tail(board, "t_0000dddd", since=1_500_000_000) is None
    assert worker_log_tail(board, "t_0000dddd", since=900_000_000) == "429\n"


def test_a_logs_directory_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    """`logs` pointing elsewhere is refused."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "t_0000aaaa.log").write_text("429\n")
    (tmp_path / "kanban").mkdir()
    (tmp_path / "kanban" / "logs").symlink_to(elsewhere)
    assert worker_log_tail(tmp_path / "kanban.db", "t_0000aaaa") is None


def test_the_provider_line_is_the_last_one_that_names_a_signal_with_keys_masked() -> None:
    """Credentials first, as everywhere; anything key-like is masked before it is quoted."""
    text = "start\nError 429 retry later\nAuthenticationError: Incorrect API key sk-proj-abcdefgh123456\nbye\n"
    signal, line = provider_error_line(text) or (None, "")
    assert signal is Signal.CREDENTIAL
    assert "sk-proj" not in line and "[redacted]" in line
    assert provider_error_line("all fine\nexit 0\n") is None
    assert provider_error_line("x" * 10 + " 429 " + "y" * 500, limit=50)[1].__len__() <= 50  # type: ignore[index]
