"""The dispatcher check: Hermes's own dispatcher stopped claiming while dispatchable work
waits. It tells people (a log line, metrics, an alert, `watchers status`); it never
writes to the board, since any card it wrote would wait for that same dispatcher."""

WATCHER = "dispatcher"
