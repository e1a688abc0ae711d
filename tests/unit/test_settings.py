"""Configuration: contract names, sources and their order, and errors that name the field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from watchers.errors import ConfigError
from watchers.exitcodes import ExitCode
from watchers.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("WATCHERS_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


def test_the_contract_names_have_their_documented_defaults():
    """The auto_heal option names and defaults other tools rely on."""
    a = load_settings().auto_heal
    assert (a.interval_seconds, a.start_grace_seconds, a.failure_limit) == (15, 30, 2)
    assert (a.reset_backoff_base_seconds, a.reset_backoff_cap_seconds) == (60, 3600)
    assert (a.max_resets, a.reset_window_seconds) == (3, 86400)
    assert (a.guard_max_share, a.guard_min_tasks, a.host_aliases) == (0.5, 5, ())


def test_an_environment_variable_overrides_a_nested_setting(monkeypatch):
    """WATCHERS_AUTO_HEAL__START_GRACE_SECONDS=0 works."""
    monkeypatch.setenv("WATCHERS_AUTO_HEAL__START_GRACE_SECONDS", "0")
    assert load_settings().auto_heal.start_grace_seconds == 0


def test_the_environment_wins_over_the_toml_file(tmp_path, monkeypatch):
    """TOML sets, the environment overrides, defaults fill the rest."""
    cfg = tmp_path / "w.toml"
    cfg.write_text('[auto_heal]\ninterval_seconds = 5\nfailure_limit = 4\nhost_aliases = ["a"]\n')
    monkeypatch.setenv("WATCHERS_AUTO_HEAL__FAILURE_LIMIT", "7")
    s = load_settings(cfg)
    assert (s.auto_heal.interval_seconds, s.auto_heal.failure_limit) == (5, 7)
    assert s.auto_heal.host_aliases == ("a",)
    assert s.auto_heal.max_resets == 3


def test_watchers_config_names_the_file(tmp_path, monkeypatch):
    """WATCHERS_CONFIG is used when --config is not given."""
    cfg = tmp_path / "w.toml"
    cfg.write_text("[auto_heal]\nmax_resets = 9\n")
    monkeypatch.setenv("WATCHERS_CONFIG", str(cfg))
    assert load_settings().auto_heal.max_resets == 9


def test_a_named_file_that_does_not_exist_is_an_error(tmp_path):
    """A missing --config file is not silently ignored."""
    with pytest.raises(ConfigError, match="does not exist") as err:
        load_settings(tmp_path / "nope.toml")
    assert err.value.exit_code == ExitCode.CONFIG == 78


def test_an_unknown_key_is_rejected_by_name(tmp_path):
    """A typo in the TOML names the key."""
    cfg = tmp_path / "w.toml"
    cfg.write_text("[auto_heal]\nintervl_seconds = 3\n")
    with pytest.raises(ConfigError, match=r"auto_heal\.intervl_seconds"):
        load_settings(cfg)


def test_an_unknown_environment_variable_is_rejected_by_name(monkeypatch):
    """One underscore instead of two would otherwise be ignored without a word."""
    monkeypatch.setenv("WATCHERS_AUTO_HEAL_START_GRACE_SECONDS", "0")
    with pytest.raises(ConfigError, match="WATCHERS_AUTO_HEAL_START_GRACE_SECONDS"):
        load_settings()


def test_a_bad_value_names_the_field_and_never_echoes_the_value(monkeypatch):
    """The message says which field; the value (it might be a secret) is not repeated."""
    monkeypatch.setenv("WATCHERS_AUTO_HEAL__GUARD_MAX_SHARE", "hunter2-secret")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "auto_heal.guard_max_share" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_out_of_range_values_are_rejected(tmp_path):
    """A share above 1 or a zero interval is invalid."""
    cfg = tmp_path / "w.toml"
    cfg.write_text("[auto_heal]\nguard_max_share = 1.5\ninterval_seconds = 0\n")
    with pytest.raises(ConfigError, match="guard_max_share") as err:
        load_settings(cfg)
    assert "interval_seconds" in str(err.value)


def test_invalid_toml_is_a_config_error(tmp_path):
    """Broken TOML exits 78 like any other config error."""
    cfg = tmp_path / "w.toml"
    cfg.write_text("[auto_heal\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg)


def test_an_invalid_rule_pattern_is_rejected(tmp_path):
    """Infra rules are regular expressions and must compile."""
    cfg = tmp_path / "w.toml"
    cfg.write_text('[[auto_heal.extra_infra_rules]]\nname = "x"\npattern = "(unclosed"\n')
    with pytest.raises(ConfigError, match="extra_infra_rules"):
        load_settings(cfg)


def test_the_metrics_password_comes_from_the_credentials_directory_and_is_masked(
    tmp_path, monkeypatch
):
    """$CREDENTIALS_DIRECTORY/metrics-password is read, and shown only masked."""
    (tmp_path / "metrics-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    s = load_settings()
    assert s.http.basic_auth_password is not None
    assert s.http.basic_auth_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.masked())
    assert s.masked()["http"]["basic_auth_password"] == "**********"


def test_a_password_in_the_toml_or_environment_is_refused(tmp_path, monkeypatch):
    """Secrets never come from the config file or an environment default."""
    cfg = tmp_path / "w.toml"
    cfg.write_text('[http]\nbasic_auth_password = "plain"\n')
    with pytest.raises(ConfigError, match="credentials") as err:
        load_settings(cfg)
    assert "plain" not in str(err.value)
    monkeypatch.setenv("WATCHERS_HTTP__BASIC_AUTH_PASSWORD", "plain")
    with pytest.raises(ConfigError, match="credentials"):
        load_settings()


def test_the_shipped_config_file_documents_every_option_with_its_default():
    """config/kanban-watchers.toml loads, and its values equal the built-in defaults."""
    shipped = ROOT / "config" / "kanban-watchers.toml"
    data = tomllib.loads(shipped.read_text())
    defaults = load_settings().model_dump(mode="json")
    for section, values in data.items():
        if not isinstance(values, dict):
            assert defaults[section] == values, section
            continue
        for key, value in values.items():
            if key.endswith("rules"):
                continue
            assert defaults[section][key] == value, f"{section}.{key}"
    text = shipped.read_text()
    for section, values in defaults.items():
        nested = isinstance(values, dict)
        for key in values if nested else [section]:
            table = data.get(section, {}) if nested else data
            documented = key in table or f"# {key} = " in text
            assert documented or key == "basic_auth_password", (
                f"{section}.{key} is not documented in {shipped.name}"
            )
    assert load_settings(shipped) == load_settings()


def test_http_listen_tls_and_auth_are_validated(tmp_path, monkeypatch):
    """A bad address, half a TLS pair or a user without the credential are config errors."""
    assert load_settings().http.address == ("127.0.0.1", 18464)
    assert load_settings().http.enabled is True
    monkeypatch.setenv("WATCHERS_HTTP__LISTEN", "[::1]:9100")
    assert load_settings().http.address == ("::1", 9100)
    for bad in ("18464", "localhost:http", "::1:18464", "host:70000"):
        monkeypatch.setenv("WATCHERS_HTTP__LISTEN", bad)
        with pytest.raises(ConfigError, match=r"http\.listen"):
            load_settings()
    monkeypatch.delenv("WATCHERS_HTTP__LISTEN")
    monkeypatch.setenv("WATCHERS_HTTP__TLS_CERT_FILE", str(tmp_path / "cert.pem"))
    with pytest.raises(ConfigError, match="tls_key_file"):
        load_settings()
    monkeypatch.delenv("WATCHERS_HTTP__TLS_CERT_FILE")
    monkeypatch.setenv("WATCHERS_HTTP__BASIC_AUTH_USER", "prom")
    with pytest.raises(ConfigError, match="metrics-password"):
        load_settings()
    (tmp_path / "metrics-password").write_text("pw\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load_settings().http.basic_auth_user == "prom"


def test_boards_get_unique_names_even_when_hermes_slugs_collide(tmp_path):
    """Two kanban.db files outside boards/<slug>/ are both 'default': the second is 'default-2'."""
    from watchers.boards import unique_slugs

    a, b = tmp_path / "a" / "kanban.db", tmp_path / "b" / "kanban.db"
    ops = tmp_path / "root" / "kanban" / "boards" / "ops" / "kanban.db"
    assert unique_slugs([b, ops, a]) == {a: "default", b: "default-2", ops: "ops"}


def test_a_credential_that_is_only_whitespace_is_no_password(tmp_path, monkeypatch):
    """The unit's default credential (a lone newline) means: no basic auth."""
    (tmp_path / "metrics-password").write_text("\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load_settings().http.basic_auth_password is None


def test_the_dispatcher_check_is_on_by_default_with_a_ten_minute_stall(monkeypatch):
    """[dispatcher]: enabled, every 60 s, a stall after 600 s; zero is refused."""
    d = load_settings().dispatcher
    assert (d.enabled, d.interval_seconds, d.stall_seconds) == (True, 60, 600)
    monkeypatch.setenv("WATCHERS_DISPATCHER__STALL_SECONDS", "0")
    with pytest.raises(ConfigError, match=r"dispatcher\.stall_seconds"):
        load_settings()
