"""One figure family per module.

ticks.py      the auto-heal tick as the daemon makes it, and the steady-state ticks of
              the distress and budget watchers (timed, checked to write nothing)
distress.py   the distress tick, and what the watcher followed
budget.py     the budget tick, and what the watcher followed (its observer's memory)
unchanged.py  the daemon's pass over an unchanged board with nothing due
hermes.py     Hermes's own `detect_crashed_workers` on the same board
daemon.py     `watchers run`: start and first round, RSS, shutdown, its log
heal.py       heal time: workers SIGKILLed under the daemon, until their task is healed
machine.py    the machine and the code the figures were taken on
"""
