"""What a failed attempt's text says about the provider. Pure.

Shared knowledge: auto-heal reads it in the output of a worker that exited 0 right after a
provider error (Hermes books that as a protocol violation), distress in every failure."""

from __future__ import annotations

import re
from enum import StrEnum


class Signal(StrEnum):
    RATE_LIMITED = "rate_limited"
    CREDENTIAL = "credential_failure"


_RATE = re.compile(
    r"\b429\b|too many requests|rate[- _]?limit|\bquota\b|overloaded|retry[- _]after"
    r"|\b503\b[^\n]{0,80}overload|overload[^\n]{0,80}\b503\b|quota wall|exited rate-limited",
    re.IGNORECASE,
)
_CREDENTIAL = re.compile(
    r"\b401\b|\b403\b|unauthori[sz]ed|forbidden|(?:invalid|incorrect)[^\n]{0,20}(?:api[- _]?)?key"
    r"|authenticationerror"
    r"|(?:api[- _]?)?key[^\n]{0,20}(?:invalid|revoked|expired)|revoked|authentication failed"
    r"|billing|payment required|\b402\b|insufficient[_ ]credit",
    re.IGNORECASE,
)
_RETRY_AFTER = re.compile(
    r"retry[- _]?after\D{0,12}?(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|sec|seconds?|m|min|minutes?|h|hours?)?",
    re.IGNORECASE,
)


def classify_text(text: str | None, outcome: str | None = None) -> Signal | None:
    """A rate-limit run outcome, or the text of an error, names the signal; credentials
    first (a 401 mentioning a quota is still a key problem)."""
    if outcome == "rate_limited":
        return Signal.RATE_LIMITED
    if not text:
        return None
    if _CREDENTIAL.search(text):
        return Signal.CREDENTIAL
    if _RATE.search(text):
        return Signal.RATE_LIMITED
    return None


_SECRETISH = re.compile(
    r"\b(?:sk|pk|rk|ak)-[A-Za-z0-9_\-]{6,}|\bxox[abprs]-[A-Za-z0-9\-]{6,}"
    r"|\b(?:bearer|token|key|secret|password)\b\s*[:=]?\s*\S{6,}"
    r"|[A-Za-z0-9_\-+/]{32,}=*",
    re.IGNORECASE,
)


def provider_error_line(text: str | None, limit: int = 200) -> tuple[Signal, str] | None:
    """The last line of `text` that names a provider signal, with anything that looks
    like a key or token masked (such a line may be written onto the board), at most
    `limit` characters; None when no line does."""
    if not text:
        return None
    for line in reversed(text.splitlines()):
        signal = classify_text(line)
        if signal is not None:
            quoted = _SECRETISH.sub("[redacted]", " ".join(line.split()))
            return signal, quoted[:limit]
    return None


def _seconds_per(unit: str) -> float:
    u = unit.lower()
    if u in ("ms", "millisecond", "milliseconds"):
        return 0.001
    if u.startswith("h"):
        return 3600.0
    if u.startswith("m"):  # m, min, minute(s)
        return 60.0
    return 1.0


def retry_after_seconds(text: str | None) -> float | None:
    """A `retry-after` delay found in the text (seconds unless a unit says otherwise)."""
    if not text:
        return None
    m = _RETRY_AFTER.search(text)
    if not m:
        return None
    return float(m.group(1)) * _seconds_per(m.group(2) or "s")
