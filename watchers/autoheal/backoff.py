"""Capped exponential backoff with deterministic jitter. Pure."""

from __future__ import annotations

import functools
import hashlib

JITTER_SPAN = 0.25  # a delay lands in [75 %, 100 %] of its capped value


@functools.lru_cache(maxsize=20_000)  # pure; a board keeps the same give-ups for hours
def jitter_fraction(key: str) -> float:
    """A stable number in [0, 1) for `key`: spreads resets of many tasks that gave up
    together, yet the same task and give-up always get the same delay (no RNG in
    decisions, so tests and two daemons agree)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    value: int = int.from_bytes(digest, "big")
    return value / float(2**64)


def compute_backoff(attempt: int, base: float, cap: float, key: str) -> float:
    """Delay before reset number `attempt + 1`: min(cap, base * 2**attempt), jittered down."""
    exponent = min(max(attempt, 0), 62)
    delay = min(cap, base * (2.0**exponent))
    return delay * (1.0 - JITTER_SPAN * jitter_fraction(key))
