"""`python -m bench.fleet`: the many-board scenarios by themselves (see bench/fleet/)."""

from __future__ import annotations

import signal
import sys

from bench.common import _on_signal
from bench.fleet import parser
from bench.fleet.report import report
from bench.fleet.scenario import collect


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.boards < 1 or args.thousand_boards < 1:
        ap.error("--boards and --thousand-boards must be >= 1")
    if args.workers < 0 or args.thousand_workers < 1:
        ap.error("--workers must be >= 0 and --thousand-workers >= 1")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    res = collect(args)
    report(res, args.out)
    return 0 if res["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
