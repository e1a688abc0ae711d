"""`watchers demo` end to end: the README's first command must work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import rows


def test_the_demo_heals_every_death_and_leaves_its_board():
    """Five deaths healed, the infra crash loop reset, the buggy task left blocked, exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHERS_")}
    r = subprocess.run(
        [sys.executable, "-m", "watchers", "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    for reason in ("worker_gone", "worker_zombie", "worker_reused"):
        assert f"reap {reason}" in out
    assert "dead workers healed: 5 of 5" in out
    assert "infrastructure crash loop reset: yes" in out
    assert "task-caused crash loop left blocked: yes" in out
    board = Path(re.search(r"watchers status --board (\S+)", out).group(1))
    assert board.exists()
    assert rows(board, "SELECT status, COUNT(*) FROM tasks GROUP BY status ORDER BY status") == [
        ("blocked", 1),
        ("done", 13),
    ]
    status = subprocess.run(
        [sys.executable, "-m", "watchers", "status", "--board", str(board)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "blocked 1" in status.stdout and "done 13" in status.stdout
