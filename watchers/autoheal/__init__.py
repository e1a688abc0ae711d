"""The auto-heal watcher: reap dead workers, reset infrastructure crash loops."""

WATCHER = "auto-heal"
