"""The benchmark's board: a Hermes board with a month of realistic history.

rows.py      the rows (tasks, runs, events, comments, links) and the shapes every
             history uses: a task row, a closed attempt, a `[BLOCKED]` card
builder.py   everyday tasks and the auto-heal history (give-ups, resets, escalations)
distress.py  the distress history (rate limits, 401s, reassignments, cards)
budget.py    the budget history (budget lines, overruns with their cards, warnings)
build.py     build_board: the mix of tasks, drawn and bulk-inserted in one transaction
profiles.py  the Hermes profiles on disk and the watchers' TOML
running.py   the running tasks, claimed on live workers
"""

from bench.board.build import build_board
from bench.board.profiles import write_profiles
from bench.board.running import start_running

__all__ = ["build_board", "start_running", "write_profiles"]
