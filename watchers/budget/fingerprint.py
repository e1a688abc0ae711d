"""Error fingerprints: the same failure with the numbers taken out. Pure."""

from __future__ import annotations

import hashlib
import re

_RULES = (
    (
        re.compile(r"\b\d{4}-\d{2}-\d{2}[t ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:z|[+-]\d{2}:?\d{2})?"),
        "<ts>",
    ),
    (re.compile(r"(?:[a-z]:)?(?:[\w.-]*/)+[\w.-]+"), "<path>"),
    (re.compile(r"\b(?:t_)?[0-9a-f]{8,}\b"), "<hex>"),
    (re.compile(r"0x[0-9a-f]+"), "<hex>"),
    (re.compile(r"\bpid \d+"), "pid <n>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
)
"""Applied in order to lower-cased text."""


def normalize(text: str) -> str:
    out = text.strip().lower()[:2000]
    for pattern, replacement in _RULES:
        out = pattern.sub(replacement, out)
    return " ".join(out.split())


def fingerprint(text: str) -> str:
    """A short, stable id of the normalised text."""
    return hashlib.blake2b(normalize(text).encode(), digest_size=6).hexdigest()


FAILURE_TEXT_KEPT = 240
"""A failure's text is kept only as far as a card quotes it (its fingerprint is of the
whole text)."""
