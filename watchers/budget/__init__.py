"""The iteration-budget watcher: long-running and over-scoped tasks, repeated failure
patterns, split recommendations, and tasks that need a person."""

WATCHER = "budget"
