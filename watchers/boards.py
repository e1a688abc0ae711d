"""Which boards to watch: `--board` paths, else the `boards` setting, else Hermes's
own resolution (`HERMES_KANBAN_DB`, else `$HERMES_KANBAN_HOME` or `~/.hermes`:
its `kanban.db` plus every `kanban/boards/*/kanban.db`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from watchers.store.board import board_slug


def hermes_kanban_root(env: Mapping[str, str]) -> Path:
    home = env.get("HERMES_KANBAN_HOME")
    if home:
        return Path(home).expanduser()
    return Path(env.get("HERMES_HOME") or "~/.hermes").expanduser()


def discover_boards(
    explicit: Sequence[Path], configured: Sequence[Path], env: Mapping[str, str] | None = None
) -> tuple[list[Path], str]:
    """The board paths and where they came from (for messages)."""
    environ = os.environ if env is None else env
    if explicit:
        return _unique(explicit), "--board"
    if configured:
        return _unique(configured), "the boards setting"
    if environ.get("HERMES_KANBAN_DB"):
        return [Path(environ["HERMES_KANBAN_DB"]).expanduser()], "HERMES_KANBAN_DB"
    root = hermes_kanban_root(environ)
    found = []
    if (root / "kanban.db").exists():
        found.append(root / "kanban.db")
    found.extend(sorted((root / "kanban" / "boards").glob("*/kanban.db")))
    return _unique(found), f"boards under {root}"


def _unique(paths: Sequence[Path]) -> list[Path]:
    seen: set[Path] = set()
    out = []
    for p in paths:
        key = Path(p).expanduser().resolve()
        if key not in seen:
            seen.add(key)
            out.append(Path(p).expanduser())
    return out


def unique_slugs(paths: Sequence[Path]) -> dict[Path, str]:
    """Each board's name for logs, health and metric labels: its Hermes slug, with `-2`,
    `-3`, ... added (in path order) where two boards would otherwise share one."""
    out: dict[Path, str] = {}
    taken: set[str] = set()
    for path in sorted(paths, key=str):
        base = slug = board_slug(path)
        n = 1
        while slug in taken:
            n += 1
            slug = f"{base}-{n}"
        taken.add(slug)
        out[path] = slug
    return out
