"""Configuration: one frozen, validated model.

Sources, strongest first: environment (`WATCHERS_…`, `__` for nesting), the
credentials directory (`$CREDENTIALS_DIRECTORY`), the TOML file (`--config` or
`WATCHERS_CONFIG`), defaults. Unknown keys are errors. Errors name the field and
never echo the value, so a mistyped secret never reaches a log.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from watchers.errors import ConfigError

ENV_PREFIX = "WATCHERS_"
CONFIG_ENV = "WATCHERS_CONFIG"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
METRICS_PASSWORD_CREDENTIAL = "metrics-password"  # noqa: S105 - a file name, not a secret


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Section):
    """A named regular expression over a failed attempt's error text.

    `outcomes` limits the rule to attempts that ended with one of those run
    outcomes (empty: any outcome)."""

    name: str = Field(min_length=1)
    pattern: str = Field(min_length=1)
    outcomes: tuple[str, ...] = ()

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        except (OverflowError, RecursionError, MemoryError, ValueError) as exc:
            # e.g. `a{99999999999}`: a repeat count the engine cannot hold
            raise ValueError(f"not a usable regular expression ({type(exc).__name__})") from None
        return value


DEFAULT_INFRA_RULES: tuple[Rule, ...] = (
    Rule(name="sigkill", pattern=r"killed by signal 9\b|\bSIGKILL\b"),
    Rule(name="exit-137", pattern=r"exited with code 137\b"),
    Rule(name="oom", pattern=r"out of memory|\boom[-_ ]?kill|Cannot allocate memory|\bENOMEM\b"),
    Rule(
        name="disk-full",
        pattern=r"No space left on device|\bENOSPC\b|disk (?:is )?full|Disk quota exceeded",
    ),
    Rule(name="db-locked", pattern=r"database is locked|database is busy"),
    Rule(name="connection-refused", pattern=r"Connection refused|\bECONNREFUSED\b"),
    Rule(name="connection-reset", pattern=r"Connection reset|\bECONNRESET\b"),
    Rule(
        name="dns",
        pattern=r"Name or service not known|Temporary failure in name resolution"
        r"|nodename nor servname|getaddrinfo failed|No address associated with hostname",
    ),
    Rule(
        name="local-service-timeout",
        pattern=r"(?:timed out|timeout)[^\n]{0,80}(?:localhost|127\.0\.0\.1|\[::1\]|\.sock\b)"
        r"|(?:localhost|127\.0\.0\.1|\[::1\]|\.sock\b)[^\n]{0,80}(?:timed out|timeout)",
    ),
    Rule(
        name="spawn-os-error",
        pattern=r"\[Errno \d+\]|\bOSError\b|\bBlockingIOError\b|Resource temporarily unavailable"
        r"|Too many open files",
        outcomes=("spawn_failed", "gave_up"),
    ),
)
"""Failures caused by the machine, not by the task: resetting them is safe."""

DEFAULT_TASK_RULES: tuple[Rule, ...] = (
    Rule(name="protocol-violation", pattern=r"protocol violation"),
    Rule(name="traceback", pattern=r"Traceback \(most recent call last\)"),
    Rule(name="runtime-limit", pattern=r"elapsed \d+s > limit"),
    Rule(name="no-heartbeat", pattern=r"no heartbeat for"),
)
"""Failures caused by the task itself; they win over infra rules and are never reset."""


class AutoHealSettings(_Section):
    enabled: bool = True
    interval_seconds: float = Field(15.0, gt=0)
    jitter_seconds: float = Field(1.0, ge=0)
    start_grace_seconds: float = Field(30.0, ge=0)
    failure_limit: int = Field(2, ge=1)
    reset_backoff_base_seconds: float = Field(60.0, ge=0)
    reset_backoff_cap_seconds: float = Field(3600.0, ge=0)
    max_resets: int = Field(3, ge=0)
    reset_window_seconds: float = Field(86400.0, gt=0)
    guard_max_share: float = Field(0.5, ge=0, le=1)
    guard_min_tasks: int = Field(5, ge=1)
    host_aliases: tuple[str, ...] = ()
    spawn_slack_seconds: float = Field(120.0, ge=0)
    infra_rules: tuple[Rule, ...] = DEFAULT_INFRA_RULES
    extra_infra_rules: tuple[Rule, ...] = ()
    task_rules: tuple[Rule, ...] = DEFAULT_TASK_RULES


class DistressSettings(_Section):
    enabled: bool = True
    interval_seconds: float = Field(30.0, gt=0)
    jitter_seconds: float = Field(2.0, ge=0)
    hermes_home: Path | None = None
    orchestrator_profile: str = Field("orchestrator", min_length=1)
    reassign: Literal["auto", "orchestrator"] = "auto"
    max_reassignments: int = Field(2, ge=0)
    stuck_after_seconds: float = Field(1200.0, gt=0)
    parked_seconds: float = Field(3600.0, gt=0)
    card_priority: int = 10
    signal_window_seconds: float = Field(21600.0, gt=0)
    cooldown_window_seconds: float = Field(600.0, gt=0)
    cooldown_min_tasks: int = Field(2, ge=1)
    cooldown_min_signals: int = Field(3, ge=1)
    cooldown_base_seconds: float = Field(300.0, ge=0)
    cooldown_cap_seconds: float = Field(3600.0, ge=0)
    cooldown_memory_seconds: float = Field(21600.0, gt=0)
    git_timeout_seconds: float = Field(2.0, gt=0)


class ProfileSettings(_Section):
    provider: str | None = None
    fallbacks: tuple[str, ...] = ()
    group: str | None = None
    time_budget_seconds: float | None = Field(None, gt=0)
    iteration_budget: int | None = Field(None, gt=0)
    attempt_budget: int | None = Field(None, gt=0)
    no_progress_seconds: float | None = Field(None, gt=0)


class BudgetSettings(_Section):
    enabled: bool = True
    interval_seconds: float = Field(60.0, gt=0)
    jitter_seconds: float = Field(3.0, ge=0)
    time_budget_seconds: float | None = Field(7200.0, gt=0)
    iteration_budget: int | None = Field(None, gt=0)
    attempt_budget: int | None = Field(5, gt=0)
    no_progress_seconds: float | None = Field(1800.0, gt=0)
    warn_fraction: float = Field(0.8, gt=0, lt=1)
    repeat_threshold: int = Field(3, ge=2)
    block_recurrence_limit: int = Field(2, ge=1)
    review_profile: str | None = None
    git_timeout_seconds: float = Field(2.0, gt=0)


class CardsSettings(_Section):
    # Who a [BLOCKED] card is assigned to: "orchestrator" (distress.orchestrator_profile)
    # or "creator" (the source task's created_by when that is a known Hermes profile,
    # else the orchestrator).
    route: Literal["orchestrator", "creator"] = "orchestrator"


class DispatcherSettings(_Section):
    enabled: bool = True
    interval_seconds: float = Field(60.0, gt=0)
    jitter_seconds: float = Field(3.0, ge=0)
    stall_seconds: float = Field(600.0, gt=0)


class StoreSettings(_Section):
    busy_timeout_seconds: float = Field(2.0, ge=0)


class DaemonSettings(_Section):
    misfire_grace_seconds: float = Field(30.0, gt=0)
    shutdown_timeout_seconds: float = Field(8.0, gt=0)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


def parse_listen(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 hosts in brackets: `[::1]:18464`) as (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected host:port, e.g. 127.0.0.1:18464 or [::1]:18464")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 host goes in brackets, e.g. [::1]:18464")
    return host, int(port)


class HttpSettings(_Section):
    enabled: bool = True
    # 18464: outside Prometheus's exporter port range (9100-9999, every port of it
    # allocated; 9464 is OpenTelemetry's Prometheus exporter default, common on agent
    # hosts) and below Linux's ephemeral ports (32768 and up)
    listen: str = "127.0.0.1:18464"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    basic_auth_user: str | None = Field(None, min_length=1)
    basic_auth_password: SecretStr | None = None  # only from the credentials directory

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_listen(value)
        return value

    @model_validator(mode="after")
    def _pairs(self) -> HttpSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.basic_auth_user is not None and self.basic_auth_password is None:
            raise ValueError(
                f"basic_auth_user is set but the credential '{METRICS_PASSWORD_CREDENTIAL}' "
                f"is missing from the credentials directory (${CREDENTIALS_ENV})"
            )
        return self

    @property
    def address(self) -> tuple[str, int]:
        return parse_listen(self.listen)


_load_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("_load_context")


class _DictSource(PydanticBaseSettingsSource):
    """A settings source that serves one pre-read mapping (TOML or credentials)."""

    def __init__(self, settings_cls: type[BaseSettings], key: str) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = _load_context.get({}).get(key, {})

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    boards: tuple[Path, ...] = ()
    hostname: str | None = None
    auto_heal: AutoHealSettings = AutoHealSettings()
    distress: DistressSettings = DistressSettings()
    budget: BudgetSettings = BudgetSettings()
    cards: CardsSettings = CardsSettings()
    dispatcher: DispatcherSettings = DispatcherSettings()
    profiles: dict[str, ProfileSettings] = Field(default_factory=dict)
    store: StoreSettings = StoreSettings()
    daemon: DaemonSettings = DaemonSettings()
    log: LogSettings = LogSettings()
    http: HttpSettings = HttpSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _DictSource(settings_cls, "credentials"),
            _DictSource(settings_cls, "toml"),
        )

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets shown as '**********'."""
        data: dict[str, Any] = self.model_dump(mode="json")
        if self.http.basic_auth_password is not None:
            data["http"]["basic_auth_password"] = "**********"  # noqa: S105 - the mask
        return data


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist or is not a file")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read: {exc.strerror}") from None


def _read_credentials(env: Mapping[str, str]) -> dict[str, Any]:
    directory = env.get(CREDENTIALS_ENV)
    if not directory:
        return {}
    secret_file = Path(directory) / METRICS_PASSWORD_CREDENTIAL
    if not secret_file.is_file():
        return {}
    try:
        secret = secret_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise ConfigError(
            f"http.basic_auth_password: credential {METRICS_PASSWORD_CREDENTIAL} cannot be read"
        ) from None
    return {"http": {"basic_auth_password": secret}} if secret else {}


def _refuse_plain_secrets(toml_data: Mapping[str, Any], env: Mapping[str, str]) -> None:
    http = toml_data.get("http")
    if isinstance(http, Mapping) and "basic_auth_password" in http:
        raise ConfigError(
            "http.basic_auth_password: not accepted from the config file; "
            f"provide it as the credential '{METRICS_PASSWORD_CREDENTIAL}' "
            f"in the credentials directory (${CREDENTIALS_ENV})"
        )
    names = {k.upper(): k for k in env}
    whole = names.get(f"{ENV_PREFIX}HTTP")
    if f"{ENV_PREFIX}HTTP__BASIC_AUTH_PASSWORD" in names or (
        whole is not None and "basic_auth_password" in _json_keys(env[whole])
    ):
        raise ConfigError(
            "http.basic_auth_password: not accepted from the environment; "
            f"provide it as the credential '{METRICS_PASSWORD_CREDENTIAL}' "
            f"in the credentials directory (${CREDENTIALS_ENV})"
        )


def _json_keys(raw: str) -> set[str]:
    """The keys of a JSON object given for a whole section (`WATCHERS_HTTP='{…}'`), at
    any depth; unreadable text has none (the settings loader then rejects it by name)."""
    try:
        value = json.loads(raw[:65536])
    except (ValueError, RecursionError):
        return set()
    keys: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            keys.update(str(k).lower() for k in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return keys


def _refuse_unknown_env(environ: Mapping[str, str]) -> None:
    """`WATCHERS_AUTO_HEAL_START_GRACE_SECONDS` (one underscore) would otherwise be
    ignored without a word; name every variable that matches no setting."""
    known = set(Settings.model_fields) | {"config"}
    for name in environ:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        head = name[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        if head not in known:
            raise ConfigError(
                f"invalid configuration: environment variable {name} matches no setting "
                f"(nested settings use '__', e.g. {ENV_PREFIX}AUTO_HEAL__INTERVAL_SECONDS)"
            )


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(settings)"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid configuration: " + "; ".join(parts)


def load_settings(config: Path | None = None) -> Settings:
    """Read and validate the configuration, or raise ConfigError (exit 78)."""
    environ = os.environ
    path = config
    if path is None and environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
    toml_data = _read_toml(path) if path is not None else {}
    _refuse_plain_secrets(toml_data, environ)
    _refuse_unknown_env(environ)
    context = {"toml": toml_data, "credentials": _read_credentials(environ)}
    token = _load_context.set(context)
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    finally:
        _load_context.reset(token)
