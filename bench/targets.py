"""Every target the benchmark checks, and the constants its modules share."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"

# the one-board run (python -m bench)
TARGET_TICK_MS = 10.0  # a full auto-heal pass, as the daemon makes it (board opened and closed)
TARGET_RATIO = 8.0  # ... and this many times faster than Hermes's detect_crashed_workers
TARGET_HEAL_P95_S = 2.0  # a death is healed about a second later (the reflex)
TARGET_RSS_MB = 50.0  # MiB of VmRSS, 100,000-task board, three watchers, HTTP on
TARGET_UNCHANGED_MS = 1.0  # a pass over an unchanged board with nothing due
TARGET_DISTRESS_TICK_MS = 20.0
TARGET_BUDGET_TICK_MS = 20.0
TARGET_NEW_CHECK_MS = 2.0  # what each check beyond liveness adds to a pass (issue: <= 2 ms)

# the fleet (python -m bench.fleet)
FLEET_TARGET_IDLE_CPU_PCT = 0.2  # % of one core, 101 boards, 60 s after the first round
FLEET_TARGET_RSS_MIB = 60.0

CLAIM_BACKDATE_S = 60  # > the 30 s start grace, < the probe's 120 s spawn slack
POLL_S = 0.1  # how often a task's status is read while a heal is awaited
SHUTDOWN_WAIT_S = 20.0  # after SIGTERM, before SIGKILL

# the budget watcher's defaults, which the board's history and its checks follow
BUDGET_BLOCKER = "iteration_budget"
WARN_FRACTION = 0.8  # budget.warn_fraction (default)
