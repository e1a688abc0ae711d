"""kanban-watchers: self-healing watchers for Hermes Agent Kanban boards."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kanban-watchers")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"

WATCHER_NAMES = ("auto-heal", "distress", "budget", "dispatcher")
"""Every watcher name the daemon knows; the CLI contract refers to these."""

AVAILABLE_WATCHERS = ("auto-heal", "distress", "budget", "dispatcher")
"""The watchers this release can run."""
