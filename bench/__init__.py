"""The kanban-watchers benchmark, as a package.

`python -m bench` (`make bench`; `python bench/run.py` does the same) builds a
100,000-task board, measures every figure, prints the summary and writes
bench/out/results.json; `python -m bench.fleet` runs the many-board scenarios alone.

  __main__.py     the run: options, phases, the measurements in order, the exit code
  targets.py      every target, and the constants the modules share
  board/          the board: its rows and histories (auto-heal, distress, budget), the
                  bulk insert, the Hermes profiles, the running tasks on live workers
  measure/        one figure family per module: the ticks, the pass over an unchanged
                  board, Hermes's own pass, the daemon, heal time, the machine; how calls
                  are timed and summarised (timing.py)
  report.py       the summary table with PASS/FAIL, and results.json
  fleet/          the many-board scenarios (101 boards idle, 1,000 boards)
  common.py       process control both runs share (phases, workers, signals)
  procfs.py       what /proc says about a process
  torn_extend.py  `make bench-torn`, a script of its own
"""
