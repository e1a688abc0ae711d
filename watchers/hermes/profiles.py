"""Which profile runs on which LLM provider, and where its work may go instead.

From the Hermes profiles on disk (`default` is the Hermes root's own `config.yaml`,
others `<root>/profiles/<name>/config.yaml`, key `model.provider`), with the TOML's
`[profiles.<name>]` adding or overriding `provider`, `fallbacks` and `group`. A bare
string `model` or `provider: auto` leaves the provider unknown, and an unknown provider
is never "different" from anything. Files are re-read when they change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from watchers.settings import ProfileSettings

UNKNOWN_PROVIDERS = frozenset({"", "auto"})


def normalize_provider(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    p = value.strip().lower()
    return None if p in UNKNOWN_PROVIDERS else p


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    provider: str | None
    fallbacks: tuple[str, ...] = ()
    group: str | None = None
    source: str = "config.yaml"


@dataclass(frozen=True, slots=True)
class ProviderMap:
    profiles: Mapping[str, Profile] = field(default_factory=dict)

    def provider_of(self, profile: str | None, override: str | None = None) -> str | None:
        """A task's provider: its own override when known, else its profile's."""
        forced = normalize_provider(override)
        if forced is not None:
            return forced
        if profile is None:
            return None
        known = self.profiles.get(profile)
        return known.provider if known else None

    def route(self, profile: str | None) -> list[str]:
        """Fallback profiles in order: explicit `fallbacks`, then the rest of its group."""
        if profile is None or profile not in self.profiles:
            return []
        me = self.profiles[profile]
        out = [p for p in me.fallbacks if p != profile]
        if me.group:
            out += sorted(
                p.name for p in self.profiles.values() if p.group == me.group and p.name != profile
            )
        return list(dict.fromkeys(out))


def hermes_root(configured: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """The Hermes root as Hermes resolves it: HERMES_HOME (or ~/.hermes); a HERMES_HOME
    that is itself `<root>/profiles/<name>` means `<root>`."""
    if configured is not None:
        return configured.expanduser()
    environ = os.environ if env is None else env
    home = Path(environ.get("HERMES_HOME") or "~/.hermes").expanduser()
    if home.parent.name == "profiles":
        return home.parent.parent
    return home


CONFIG_LIMIT = 1 << 20
"""A profile's config.yaml is read up to 1 MiB (agents can write it)."""


def _read_provider(config: Path) -> str | None:
    try:
        with config.open(encoding="utf-8") as fh:
            text = fh.read(CONFIG_LIMIT + 1)
        if len(text) > CONFIG_LIMIT:
            return None  # no profile's config is that large: not one we read
        data = yaml.safe_load(text) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError, RecursionError, ValueError):
        return None
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, dict):
        return normalize_provider(model.get("provider"))
    return None


class ProfileReader:
    """Reads the profiles under a Hermes root; a file is parsed again only when it changed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[Path, tuple[float, str | None]] = {}

    def _provider(self, config: Path) -> tuple[bool, str | None]:
        try:
            mtime = config.stat().st_mtime
        except OSError:
            self._cache.pop(config, None)
            return False, None
        cached = self._cache.get(config)
        if cached is None or cached[0] != mtime:
            cached = (mtime, _read_provider(config))
            self._cache[config] = cached
        return True, cached[1]

    def read(self, overrides: Mapping[str, ProfileSettings]) -> ProviderMap:
        found: dict[str, Profile] = {}
        exists, provider = self._provider(self.root / "config.yaml")
        if exists:
            found["default"] = Profile("default", provider)
        profiles_dir = self.root / "profiles"
        try:
            names = sorted(p.name for p in profiles_dir.iterdir() if p.is_dir())
        except OSError:
            names = []
        for name in names:
            exists, provider = self._provider(profiles_dir / name / "config.yaml")
            found[name.lower()] = Profile(name.lower(), provider if exists else None)
        for name, o in overrides.items():
            key = name.lower()
            base = found.get(key, Profile(key, None, source="toml"))
            found[key] = Profile(
                key,
                normalize_provider(o.provider) if o.provider is not None else base.provider,
                tuple(f.lower() for f in o.fallbacks),
                o.group,
                "toml" if o.provider is not None else base.source,
            )
        return ProviderMap(found)
