"""The distress synthesizer: cross-provider reassignment, and [BLOCKED] cards for
workers that cannot ask for help themselves."""

WATCHER = "distress"
