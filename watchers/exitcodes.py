"""Process exit codes; part of the CLI contract (sysexits.h where one fits)."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1  # anything unforeseen, or a tick that failed: one-line reason on stderr
    USAGE = 2  # bad command line (argparse's own code)
    NO_INPUT = 66  # EX_NOINPUT: a board is missing, unreadable or not a Hermes board
    UNAVAILABLE = 69  # EX_UNAVAILABLE: the HTTP address (http.listen) cannot be bound
    CONFIG = 78  # EX_CONFIG: invalid configuration; systemd must not restart on it
