"""`python bench/run.py`: the benchmark, as `python -m bench` runs it (bench/__main__.py)."""

import sys
from pathlib import Path

if not __package__:  # run as a script: import the package from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
