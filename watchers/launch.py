"""The `watchers` command's entry point (and `python -m watchers`'s).

structlog imports rich, when it happens to be installed, for pretty console tracebacks;
this program never uses them (its console renderer prints plain ones, never locals), and
rich with pygments costs a long-running daemon about 4 MiB of resident memory. The
command marks rich as absent before anything imports structlog; a library user's own
process is left alone.
"""

from __future__ import annotations

import sys


def main() -> int:
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    from watchers.cli import main as cli_main  # noqa: PLC0415 - after the mark above

    return cli_main()
