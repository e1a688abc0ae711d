"""The distress watcher's signals: what a failed attempt's text says about the provider
(the classification itself is shared Hermes knowledge, `watchers.hermes.provider_errors`)."""

from __future__ import annotations

from watchers.hermes.provider_errors import Signal, classify_text, retry_after_seconds

__all__ = ["Signal", "classify_text", "retry_after_seconds"]
