"""How calls are timed and summarised: `timed` (n calls, each timed on its own),
`once`, `Samples.summary` (median, nearest-rank p95, min, max, rounded), a cProfile of
a few more calls when a median misses its target."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


_STATS: dict[str, Callable[[Sequence[float]], float]] = {
    "median": statistics.median,
    "p95": lambda values: pct(values, 95),
    "min": min,
    "max": max,
}


@dataclass(frozen=True)
class Samples:
    """Figures of one kind (durations in `unit`), one per call or event."""

    values: list[float]
    unit: str = "ms"

    def __len__(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def summary(
        self, digits: int, stats: Sequence[str] = ("median", "p95", "min", "max")
    ) -> dict[str, float | None]:
        """`{"median_ms": ..., "p95_ms": ..., "min_ms": ..., "max_ms": ...}` (the unit as
        given), rounded to `digits`; None for each when there are no values."""
        return {
            f"{stat}_{self.unit}": round(_STATS[stat](self.values), digits) if self.values else None
            for stat in stats
        }


def once(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """One call of `fn(*args)`: what it returned and how long it took (ms)."""
    t0 = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t0) * 1000


def timed(n: int, fn: Callable[..., T], *args: Any) -> tuple[Samples, list[T]]:
    """`n` calls of `fn(*args)`, each timed on its own (ms; only the call is inside the
    clock): the samples, and what each call returned, in order."""
    samples: list[float] = []
    results: list[T] = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn(*args)
        samples.append((time.perf_counter() - t0) * 1000)
        results.append(out)
    return Samples(samples), results


def profile_ticks(fn: Callable[[], Any], n: int) -> str:
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        fn()
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(12)
    return buf.getvalue()


def profile_if_slow(
    wanted: bool, samples: Samples, target_ms: float, fn: Callable[[], Any]
) -> str | None:
    """A cProfile of 20 more calls when asked for, or when the median misses its target."""
    if wanted or samples.median > target_ms:
        return profile_ticks(fn, 20)
    return None
