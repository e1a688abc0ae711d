"""The tree reads as the architecture: no watcher imports another watcher (what several
know about Hermes lives in `watchers.hermes`)."""

from __future__ import annotations

import ast
from pathlib import Path

WATCHERS = ("autoheal", "distress", "budget", "dispatcher")
PACKAGE = Path(__file__).resolve().parents[2] / "watchers"


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


def test_no_watcher_imports_another_watcher():
    crossings = []
    for watcher in WATCHERS:
        for path in sorted((PACKAGE / watcher).glob("*.py")):
            for module in imported(path):
                parts = module.split(".")
                other = len(parts) > 1 and parts[0] == "watchers" and parts[1] in WATCHERS
                if other and parts[1] != watcher:
                    crossings.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert crossings == []
