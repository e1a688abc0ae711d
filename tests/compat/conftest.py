"""The release matrix: the compatibility subset against whichever `hermes_cli` this
process imports.

`make matrix` runs this folder once per older Hermes release, each installed on its own
(`pip install --no-deps --target`) and put first on PYTHONPATH with HERMES_RELEASE naming
it; the main test run covers it with the 0.19.0 in the venv. Every board is made by the
imported release's own code; on 0.19.0 the same tests also run on that board migrated to
the newer (0.20/0.21) schema, with the review lane's rows written as the newer release
writes them (see `newer_hermes`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from hermes_cli import kanban_db as kb

from tests.compat import newer_hermes
from tests.interop.conftest import (  # noqa: F401  (fixtures, shared with the interop suite)
    budget,
    distress,
    hermes_home,
    watchers,
)
from tests.interop.interop_harness import BLOCKING_WORKER, PROFILE, HermesBoard

RELEASE = os.environ.get("HERMES_RELEASE") or metadata.version("hermes-agent")
FLAVOURS = ["made"] + (["newer"] if RELEASE == "0.19.0" else [])


def pytest_report_header() -> str:
    return f"hermes-agent {RELEASE} ({Path(kb.__file__).parent.parent}); boards: {FLAVOURS}"


def pytest_configure(config: pytest.Config) -> None:
    wanted = os.environ.get("HERMES_RELEASE")
    if wanted and metadata.version("hermes-agent") != wanted:
        raise pytest.UsageError(
            f"HERMES_RELEASE={wanted} but hermes_cli comes from "
            f"{metadata.version('hermes-agent')} at {kb.__file__}: is PYTHONPATH set?"
        )


class CompatBoard(HermesBoard):
    """A board made by the imported release; `newer` boards were migrated to the newer
    schema and get the rows the newer release writes for each task it creates."""

    def __init__(self, path: Path, flavour: str) -> None:
        super().__init__(path)
        self.flavour = flavour

    @property
    def newer(self) -> bool:
        return self.flavour == "newer"

    def create(
        self,
        title: str,
        *,
        max_retries: int | None = None,
        worker: str = BLOCKING_WORKER,
        assignee: str = PROFILE,
        body: str | None = None,
    ) -> str:
        task_id = super().create(
            title, max_retries=max_retries, worker=worker, assignee=assignee, body=body
        )
        if self.newer:
            newer_hermes.created(self.path, task_id)
        return task_id


@pytest.fixture(params=FLAVOURS)
def compat_board(request: pytest.FixtureRequest, hermes_home: Path) -> Iterator[CompatBoard]:
    """Hermes's default board, created by the imported release (then migrated, for
    `newer`); every worker it spawned is ended at teardown."""
    path = hermes_home / "kanban.db"
    kb.connect(path).close()
    if request.param == "newer":
        newer_hermes.migrate(path)
    board = CompatBoard(path, request.param)
    try:
        yield board
    finally:
        board.close()
