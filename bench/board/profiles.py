"""The Hermes profiles on disk (6 workers on 3 providers, plus the orchestrator) and
the watchers' TOML that points the distress watcher at them."""

from __future__ import annotations

import json
from pathlib import Path

PROFILES = ("default", "coder", "researcher", "writer", "reviewer", "ops")
# Hermes profiles on disk (`model: {provider, default}`): 6 workers over 3 providers,
# plus the orchestrator that distress cards go to. All workers share one fallback group.
MODELS = {
    "default": ("anthropic", "claude-sonnet-4-5"),
    "coder": ("anthropic", "claude-sonnet-4-5"),
    "researcher": ("openai", "gpt-5"),
    "writer": ("openai", "gpt-5-mini"),
    "reviewer": ("gemini", "gemini-2.5-pro"),
    "ops": ("gemini", "gemini-2.5-flash"),
    "orchestrator": ("anthropic", "claude-opus-4-1"),
}
ORCHESTRATOR = "orchestrator"
PROFILE_GROUP = "workers"


def write_profiles(root: Path, config: Path) -> None:
    """Hermes profiles on disk (`default` is the root's own config.yaml) and the
    watchers' TOML: where they are, and one fallback group for the workers."""
    for name, (provider, model) in MODELS.items():
        d = root if name == "default" else root / "profiles" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.yaml").write_text(
            f"model:\n  provider: {provider}\n  default: {model}\n", encoding="utf-8"
        )
    lines = ["[distress]", f"hermes_home = {json.dumps(str(root))}", ""]
    for name in PROFILES:
        lines += [f"[profiles.{name}]", f'group = "{PROFILE_GROUP}"', ""]
    config.write_text("\n".join(lines), encoding="utf-8")
