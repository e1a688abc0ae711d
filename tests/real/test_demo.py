"""`watchers demo` end to end: the README's first command must work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import rows


def test_the_demo_shows_all_three_watchers_and_leaves_its_board():
    """Five deaths healed, the infra crash loop reset, the buggy task left blocked; a
    rate-limited task moved to another provider, a card for one with no safe route; a
    budget warning then a split card; 80 columns, about a minute, exit 0."""
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
    assert max(len(line) for line in out.splitlines()) <= 80
    for reason in ("worker_gone", "worker_zombie", "worker_reused"):
        assert f"reap {reason}" in out
    assert "requeued: its worker hit a rate limit" in out
    assert re.search(r"distress +t_\w+ moved coder-claude \(anthropic\) -> coder-gpt \(opena", out)
    assert re.search(r"distress +t_\w+ rate_limited card for orchestrator", out)
    assert re.search(r"budget +t_\w+ warned: \d+s of its 25s time budget", out)
    assert re.search(r"budget +t_\w+ iteration_budget card for orchestrator", out)
    for line in (
        "dead workers healed 5 of 5",
        "infrastructure crash loop reset: yes",
        "task-caused crash loop left blocked: yes",
        "rate-limited task moved to openai: yes",
        "[BLOCKED] card for work with no safe route: yes",
        "budget: warned at 80%: yes; split card at 100%: yes",
        "board before -> after:",
    ):
        assert line in out, line
    board = Path(re.search(r"watchers status --board (\S+)", out).group(1))
    assert board.exists()
    counts = dict(rows(board, "SELECT status, COUNT(*) FROM tasks GROUP BY status"))
    assert counts.get("running", 0) == 0 and counts["blocked"] == 1 and counts["done"] == 15
    cards = rows(board, "SELECT title FROM tasks WHERE title LIKE '[BLOCKED]%' ORDER BY title")
    assert sorted(t.split()[-1] for (t,) in cards) == ["iteration_budget", "rate_limited"]
    status = subprocess.run(
        [sys.executable, "-m", "watchers", "status", "--board", str(board)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "blocked 1" in status.stdout and "done 15" in status.stdout
