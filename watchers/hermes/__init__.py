"""What the daemon knows about Hermes Agent itself, shared by every watcher: its event
vocabulary and lanes (`events`). Knowledge of one release lives beside the fact it
describes, with the releases it holds for."""
