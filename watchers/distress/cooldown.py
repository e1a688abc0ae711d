"""Provider cooldowns, derived from the board's history of rate-limit signals. Pure.

A provider cools when, within `cooldown_window_seconds`, at least `cooldown_min_tasks`
different tasks or `cooldown_min_signals` signals hit it, or when a signal carried a
retry-after. Each cooling episode lasts base * 2^(episodes before it in the last
`cooldown_memory_seconds`), capped, counted from its latest signal; a retry-after
extends it. Because the state is a function of the signals alone, rebuilding it from
the board after a restart gives the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from watchers.settings import DistressSettings


@dataclass(frozen=True, slots=True)
class ProviderSignal:
    provider: str
    task_id: str
    at: float
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Cooldown:
    provider: str
    until: float  # epoch seconds; the provider is eligible again from then
    episode: int  # 1 for the first cooling in memory, 2 for the next, ...
    reason: str

    def cooling(self, now: float) -> bool:
        return now < self.until


def cooldowns(signals: Iterable[ProviderSignal], s: DistressSettings) -> dict[str, Cooldown]:
    """The latest cooldown per provider (it may already be over: check `cooling(now)`)."""
    by_provider: dict[str, list[ProviderSignal]] = {}
    for sig in signals:
        by_provider.setdefault(sig.provider, []).append(sig)
    out: dict[str, Cooldown] = {}
    for provider, sigs in by_provider.items():
        sigs.sort(key=lambda x: x.at)
        episodes: list[float] = []  # start times
        current: Cooldown | None = None
        window: list[ProviderSignal] = []
        for sig in sigs:
            window = [w for w in window if sig.at - w.at <= s.cooldown_window_seconds]
            window.append(sig)
            tasks = {w.task_id for w in window}
            tripped = len(tasks) >= s.cooldown_min_tasks or len(window) >= s.cooldown_min_signals
            if current is not None and sig.at < current.until:
                # still cooling: later signals extend it
                until = max(current.until, sig.at + _duration(current.episode, s))
                if sig.retry_after:
                    until = max(until, sig.at + sig.retry_after)
                current = Cooldown(provider, until, current.episode, current.reason)
                continue
            if not tripped and not sig.retry_after:
                continue
            episodes = [e for e in episodes if sig.at - e <= s.cooldown_memory_seconds]
            episode = len(episodes) + 1
            episodes.append(sig.at)
            until = sig.at + _duration(episode, s) if tripped else sig.at
            if sig.retry_after:
                until = max(until, sig.at + sig.retry_after)
            reason = (
                f"{len(tasks)} task(s), {len(window)} signal(s) in {s.cooldown_window_seconds:.0f}s"
                if tripped
                else f"retry-after {sig.retry_after:.0f}s"
            )
            current = Cooldown(provider, until, episode, reason)
        if current is not None:
            out[provider] = current
    return out


def _duration(episode: int, s: DistressSettings) -> float:
    return float(min(s.cooldown_cap_seconds, s.cooldown_base_seconds * 2.0 ** (episode - 1)))
