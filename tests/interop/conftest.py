"""Fixtures for the interop tests (the harness itself is in interop_harness.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hermes_cli import kanban_db as kb

from tests.interop.interop_harness import (
    PROCESS_TIMEOUT,
    PROFILE,
    HermesBoard,
    WatchersCli,
    hold_open,
)


@pytest.fixture
def hermes_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private Hermes root (HERMES_HOME = HERMES_KANBAN_HOME) with one profile, immediate
    crash detection, and Hermes's per-process caches emptied."""
    root = tmp_path / "hermes"
    (root / "profiles" / PROFILE).mkdir(parents=True)
    monkeypatch.setenv("HERMES_HOME", str(root))
    monkeypatch.setenv("HERMES_KANBAN_HOME", str(root))
    monkeypatch.setenv("HERMES_KANBAN_CRASH_GRACE_SECONDS", "0")
    for name in ("HERMES_KANBAN_DB", "HERMES_KANBAN_BOARD", "HERMES_KANBAN_WORKSPACES_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(kb, "_INITIALIZED_PATHS", set())
    monkeypatch.setattr(kb, "_recent_worker_exits", {})
    return root


@pytest.fixture
def hermes_board(hermes_home: Path) -> Iterator[HermesBoard]:
    """Hermes's default board (`<root>/kanban.db`), created by Hermes itself; every worker
    it spawned is ended at teardown."""
    path = hermes_home / "kanban.db"
    kb.connect(path).close()
    hermes_board = HermesBoard(path)
    try:
        yield hermes_board
    finally:
        hermes_board.close()


@pytest.fixture
def held_open(hermes_board: HermesBoard) -> Iterator[None]:
    """The board held open by another process for the whole test (see `hold_open`)."""
    keeper = hold_open(hermes_board.path)
    try:
        yield
    finally:
        keeper.communicate(timeout=PROCESS_TIMEOUT)


@pytest.fixture
def watchers() -> Iterator[WatchersCli]:
    """The real `watchers` CLI, run from the project root."""
    cli = WatchersCli(Path(__file__).resolve().parents[2])
    try:
        yield cli
    finally:
        cli.close()


def _one_watcher_cli(
    tmp_path: Path, watcher: str, section: str
) -> Iterator[Callable[..., WatchersCli]]:
    """`make(toml, **settings)`: `watchers --watcher <watcher>`, a `--config` TOML, and
    settings of `[<section>]` as WATCHERS_<SECTION>__<NAME> variables."""
    made: list[WatchersCli] = []

    def make(toml: str = "", **settings: float | int | str) -> WatchersCli:
        config = None
        if toml:
            config = tmp_path / f"{watcher}-{len(made)}.toml"
            config.write_text(toml, encoding="utf-8")
        prefix = f"WATCHERS_{section.upper()}__"
        cli = WatchersCli(
            Path(__file__).resolve().parents[2],
            watcher=watcher,
            config=config,
            extra_env={f"{prefix}{k.upper()}": str(v) for k, v in settings.items()},
        )
        made.append(cli)
        return cli

    try:
        yield make
    finally:
        for cli in made:
            cli.close()


DistressCli = Callable[..., WatchersCli]
"""`distress(toml="", **settings)`: the CLI running only the distress watcher."""


@pytest.fixture
def distress(tmp_path: Path) -> Iterator[DistressCli]:
    """The CLI running only the distress watcher."""
    yield from _one_watcher_cli(tmp_path, "distress", "distress")


BudgetCli = Callable[..., WatchersCli]
"""`budget(toml="", **settings)`: the CLI running only the iteration-budget watcher."""


@pytest.fixture
def budget(tmp_path: Path) -> Iterator[BudgetCli]:
    """The CLI running only the iteration-budget watcher."""
    yield from _one_watcher_cli(tmp_path, "budget", "budget")
