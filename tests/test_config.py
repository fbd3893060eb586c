"""Tests for ccrotate._server.config: layers, parsing, error messages, secrecy."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from ccrotate._exceptions import ConfigError
from ccrotate._server.config import FIELDS, FieldSpec, Settings, load_settings

SECRET = "sk-very-secret-token-0123456789"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the machine's ./.env and ~/.config out: cwd and HOME point into tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    return home


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(**kwargs: Any) -> Settings:
    kwargs.setdefault("env", {})
    return load_settings(**kwargs)


def error_of(**kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(**kwargs)
    return str(info.value)


# --- defaults and the table ----------------------------------------------------------


def test_defaults(isolated: Path) -> None:
    s = load()
    assert s == Settings()
    assert (s.host, s.port, s.allow_remote) == ("127.0.0.1", 8080, False)
    assert s.accounts_path == isolated / ".claude/accounts.json"
    assert s.credentials_path == isolated / ".claude/.credentials.json"
    assert s.upstream_url == "https://api.anthropic.com"
    assert s.oauth_token_url == "https://platform.claude.com/v1/oauth/token"
    assert s.oauth_authorize_url == "https://claude.ai/oauth/authorize"
    assert s.oauth_client_id == "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
    assert (s.rotation_enabled, s.strategy, s.hot_reload) == (True, "round_robin", True)
    assert (s.refresh_buffer, s.max_attempts, s.default_cooldown) == (600.0, 4, 60.0)
    assert s.inject_identity is True
    assert (s.auth_tokens, s.admin_token) == ((), None)
    assert s.max_body_size == 32 * 1024 * 1024
    assert (s.connect_timeout, s.read_timeout) == (10.0, 600.0)
    assert (s.header_timeout, s.body_timeout, s.max_connections) == (10.0, 60.0, 1000)
    assert dict(s.model_aliases) == {}
    assert (s.log_level, s.access_log_path) == ("info", None)
    assert set(s.sources.values()) == {"default"}


def test_table_matches_settings() -> None:
    names = [f.name for f in dataclasses.fields(Settings) if f.name != "sources"]
    assert [spec.name for spec in FIELDS] == names
    env_vars = [var for spec in FIELDS for var in spec.env]
    toml_keys = [key for spec in FIELDS for key in spec.toml]
    assert len(env_vars) == len(set(env_vars))
    assert len(toml_keys) == len(set(toml_keys))
    assert all(spec.help and spec.toml for spec in FIELDS)
    spec = next(s for s in FIELDS if s.name == "accounts_path")
    assert isinstance(spec, FieldSpec)
    assert spec.env == ("CCROTATE_ACCOUNTS_PATH", "CCPROXY_ACCOUNTS_PATH")
    assert str(spec.default) == "~/.claude/accounts.json"


def test_docs_list_every_setting() -> None:
    docs = (Path(__file__).parents[1] / "docs/configuration.md").read_text(encoding="utf-8")
    for spec in FIELDS:
        for name in (*spec.env, *spec.toml):
            assert f"`{name}`" in docs, name


# --- precedence ----------------------------------------------------------------------


def test_each_layer_beats_the_next(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", "[server]\nport = 1001\n")
    dotenv = write(tmp_path / "x.env", "CCROTATE_PORT=1002\n")
    env = {"CCROTATE_PORT": "1003"}
    cli = {"port": 1004}
    assert load(config_path=toml).port == 1001
    assert load(config_path=toml, dotenv_path=dotenv).port == 1002
    assert load(config_path=toml, dotenv_path=dotenv, env=env).port == 1003
    s = load(config_path=toml, dotenv_path=dotenv, env=env, cli=cli)
    assert s.port == 1004
    assert s.source_of("port") == "command line"


def test_source_of_names_each_layer(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", "[server]\nhost = 'h1'\n[rotation]\nmax_attempts = 2\n")
    dotenv = write(tmp_path / "x.env", "CCROTATE_PORT=1\n")
    s = load(config_path=toml, dotenv_path=dotenv, env={"CCROTATE_LOG_LEVEL": "debug"},
             cli={"allow_remote": True})
    assert s.source_of("max_attempts") == "config.toml"
    assert s.source_of("host") == "config.toml"
    assert s.source_of("port") == ".env"
    assert s.source_of("log_level") == "environment"
    assert s.source_of("allow_remote") == "command line"
    assert s.source_of("read_timeout") == "default"
    assert list(s.sources) == [spec.name for spec in FIELDS]


def test_cli_none_means_not_given() -> None:
    s = load(env={"CCROTATE_PORT": "9000"}, cli={"port": None, "host": "::1"})
    assert (s.port, s.host) == (9000, "::1")


def test_cli_unknown_key() -> None:
    assert "unknown setting 'prot' (command line) (did you mean 'port'?)" in error_of(
        cli={"prot": 1})


def test_default_env_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCROTATE_PORT", "7777")
    assert load_settings().port == 7777


# --- aliases -------------------------------------------------------------------------


@pytest.mark.parametrize(("alias", "field", "raw", "value"), [
    ("CCPROXY_ACCOUNTS_PATH", "accounts_path", "/a.json", Path("/a.json")),
    ("CCPROXY_ROTATION_ENABLED", "rotation_enabled", "false", False),
    ("CCPROXY_HOT_RELOAD", "hot_reload", "no", False),
    ("CCPROXY_REFRESH_BUFFER", "refresh_buffer", "30", 30.0),
])
def test_legacy_alias(alias: str, field: str, raw: str, value: object) -> None:
    s = load(env={alias: raw})
    assert getattr(s, field) == value
    assert s.source_of(field) == "environment"


def test_canonical_name_beats_alias(tmp_path: Path) -> None:
    env = {"CCPROXY_HOT_RELOAD": "off", "CCROTATE_HOT_RELOAD": "on"}
    assert load(env=env).hot_reload is True
    dotenv = write(tmp_path / "x.env", "CCPROXY_HOT_RELOAD=off\nCCROTATE_HOT_RELOAD=on\n")
    assert load(dotenv_path=dotenv).hot_reload is True


def test_layer_matters_more_than_name(tmp_path: Path) -> None:
    # The alias in the environment beats the canonical name in the lower .env layer.
    dotenv = write(tmp_path / "x.env", "CCROTATE_HOT_RELOAD=on\n")
    assert load(dotenv_path=dotenv, env={"CCPROXY_HOT_RELOAD": "off"}).hot_reload is False


# --- value parsing -------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "value"), [
    ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("On", True), (" on ", True),
    ("false", False), ("False", False), ("0", False), ("no", False), ("OFF", False),
])
def test_bool_parsing(raw: str, value: bool) -> None:
    assert load(env={"CCROTATE_ALLOW_REMOTE": raw}).allow_remote is value


@pytest.mark.parametrize(("raw", "value"), [
    ("1048576", 1048576), ("10MB", 10_000_000), ("512KiB", 524288), ("1.5 MiB", 1572864),
    ("2gib", 2 * 2**30), ("1kb", 1000), ("100B", 100), (" 7 ", 7), (4096, 4096),
])
def test_sizes(raw: object, value: int) -> None:
    assert load(cli={"max_body_size": raw}).max_body_size == value


def test_size_from_toml(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", "[security]\nmax_body_size = '64 KiB'\n")
    assert load(config_path=toml).max_body_size == 65536
    toml = write(tmp_path / "c.toml", "[security]\nmax_body_size = 1024\n")
    assert load(config_path=toml).max_body_size == 1024


@pytest.mark.parametrize("raw", ["0", "-1", "10XB", "", "MB", "1e6", "0.0001KB"])
def test_bad_sizes(raw: str) -> None:
    message = error_of(env={"CCROTATE_MAX_BODY_SIZE": raw})
    assert message.startswith("CCROTATE_MAX_BODY_SIZE (environment): expected a size")


def test_numbers_and_choices() -> None:
    s = load(env={"CCROTATE_REFRESH_BUFFER": "0", "CCROTATE_READ_TIMEOUT": "1.5",
                  "CCROTATE_MAX_ATTEMPTS": "1", "CCROTATE_LOG_LEVEL": "WARNING",
                  "CCROTATE_STRATEGY": " Round_Robin "})
    assert (s.refresh_buffer, s.read_timeout, s.max_attempts) == (0.0, 1.5, 1)
    assert (s.log_level, s.strategy) == ("warning", "round_robin")
    assert isinstance(s.refresh_buffer, float)


def test_strategy_names_the_pools_strategies() -> None:
    """The setting accepts exactly the strategies the pool has, and says which."""
    assert ("expected one of 'round_robin', 'least_recently_used', 'quota_aware', "
            "'first_available', got 'least_used'") in error_of(
        env={"CCROTATE_STRATEGY": "least_used"})
    assert load(env={"CCROTATE_STRATEGY": "quota_aware"}).strategy == "quota_aware"
    assert load(env={"CCROTATE_STRATEGY": "first_available"}).strategy == "first_available"


@pytest.mark.parametrize(("name", "kind"), [("httptools", "HttptoolsUpstream"),
                                             ("aiohttp", "AiohttpUpstream"),
                                             ("HTTPX", "HTTPXUpstream")])
def test_upstream_client_picks_the_rotators_transport(name: str, kind: str) -> None:
    """``upstream_client`` names the transport a Rotator builds, with its timeouts."""
    from ccrotate import AccountPool, Rotator

    settings = load(env={"CCROTATE_UPSTREAM_CLIENT": name, "CCROTATE_READ_TIMEOUT": "7"})
    rotator = Rotator(settings, pool=AccountPool([]))
    assert type(rotator.upstream).__name__ == kind
    assert rotator.upstream.timeouts.read == 7.0  # type: ignore[attr-defined]


def test_upstream_client_names_the_choices() -> None:
    assert Settings().upstream_client == "httptools"
    assert "expected one of 'httptools', 'aiohttp', 'httpx', got 'requests'" in error_of(
        env={"CCROTATE_UPSTREAM_CLIENT": "requests"})


def test_urls() -> None:
    s = load(env={"CCROTATE_UPSTREAM_URL": "http://localhost:9999/anthropic/",
                  "CCROTATE_OAUTH_TOKEN_URL": "https://auth.example/token"})
    assert s.upstream_url == "http://localhost:9999/anthropic"
    assert s.oauth_token_url == "https://auth.example/token"


A16, B16 = "a" * 16, "b" * 16  # client tokens: 16 characters at least


def test_auth_tokens() -> None:
    assert load(env={"CCROTATE_AUTH_TOKEN": A16}).auth_tokens == (A16,)
    s = load(env={"CCROTATE_AUTH_TOKEN": f" {A16} , {B16},{A16}"})
    assert s.auth_tokens == (A16, B16)


@pytest.mark.parametrize("raw", ["abc", "x" * 15, f"{'a' * 16},short"])
def test_short_client_tokens_are_refused(tmp_path: Path, raw: str) -> None:
    """A token a client could guess is a config error; the message never shows it."""
    message = error_of(env={"CCROTATE_AUTH_TOKEN": raw})
    assert message.startswith("CCROTATE_AUTH_TOKEN (environment): expected client tokens of "
                              "at least 16 characters")
    assert "short" not in message.replace("shorter", "")
    assert "abc" not in message
    toml = write(tmp_path / "c.toml", "[security]\nauth_token = 'abc'\n")
    assert "at least 16 characters" in error_of(config_path=toml)
    with pytest.raises(ConfigError, match="at least 16"):
        Settings(auth_tokens=("abc",))


def test_auth_tokens_from_toml(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", f"[security]\nauth_tokens = ['{A16}', '{B16}']\n")
    assert load(config_path=toml).auth_tokens == (A16, B16)
    toml = write(tmp_path / "c.toml", f"[security]\nauth_token = '{A16}'\n")
    assert load(config_path=toml).auth_tokens == (A16,)
    toml = write(tmp_path / "c.toml", "[security]\nauth_tokens = []\n")
    assert load(config_path=toml).auth_tokens == ()
    toml = write(tmp_path / "c.toml", "[security]\nauth_token = 'a'\nauth_tokens = ['b']\n")
    assert "give only one of security.auth_tokens and security.auth_token" in error_of(
        config_path=toml)


@pytest.mark.parametrize("raw", ["", "a,,b", "a,", "has space", "tab\tchar", "é"])
def test_bad_auth_tokens(raw: str) -> None:
    message = error_of(env={"CCROTATE_AUTH_TOKEN": raw})
    assert message.startswith("CCROTATE_AUTH_TOKEN (environment): expected a comma-separated")


def test_model_aliases(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", '[openai.aliases]\ngpt-4o = "claude-sonnet-4-5"\n')
    s = load(config_path=toml)
    assert dict(s.model_aliases) == {"gpt-4o": "claude-sonnet-4-5"}
    with pytest.raises(TypeError):
        s.model_aliases["x"] = "y"  # type: ignore[index]
    toml = write(tmp_path / "c.toml", "[openai.aliases]\ngpt-4o = 4\n")
    assert f"{toml} [openai] aliases: expected a table" in error_of(config_path=toml)


def test_access_log_path() -> None:
    assert load(env={"CCROTATE_ACCESS_LOG_DB": "/tmp/a.duckdb"}).access_log_path == Path(
        "/tmp/a.duckdb")
    assert load(env={"CCROTATE_ACCESS_LOG_DB": ""}).access_log_path is None


def test_tilde_expansion(tmp_path: Path, isolated: Path) -> None:
    toml = write(tmp_path / "c.toml", "[rotation]\ncredentials_path = '~/creds.json'\n")
    s = load(config_path=toml, env={"CCROTATE_ACCOUNTS_PATH": "~/acc.json"},
             cli={"access_log_path": "~/log.duckdb"})
    assert s.accounts_path == isolated / "acc.json"
    assert s.credentials_path == isolated / "creds.json"
    assert s.access_log_path == isolated / "log.duckdb"
    assert isinstance(s.accounts_path, Path)


# --- errors name the setting and the source ------------------------------------------


@pytest.mark.parametrize(("var", "raw", "expected"), [
    ("CCROTATE_PORT", "abc", "expected an integer from 0 to 65535, got 'abc'"),
    ("CCROTATE_PORT", "-1", "expected an integer from 0 to 65535, got '-1'"),
    ("CCROTATE_PORT", "70000", "expected an integer from 0 to 65535"),
    ("CCROTATE_HOST", " ", "expected a non-empty string"),
    ("CCROTATE_ALLOW_REMOTE", "maybe", "expected a boolean"),
    ("CCPROXY_HOT_RELOAD", "2", "expected a boolean"),
    ("CCROTATE_ACCOUNTS_PATH", "", "expected a file path"),
    ("CCROTATE_UPSTREAM_URL", "ftp://x", "expected an http:// or https:// URL with a host"),
    ("CCROTATE_UPSTREAM_URL", "https://", "expected an http:// or https:// URL"),
    ("CCROTATE_OAUTH_TOKEN_URL", "example.com/token", "expected an http:// or https:// URL"),
    ("CCROTATE_OAUTH_AUTHORIZE_URL", "http://h:99999/", "expected an http:// or https:// URL"),
    ("CCROTATE_OAUTH_CLIENT_ID", "", "expected a non-empty string"),
    ("CCROTATE_STRATEGY", "random",
     "expected one of 'round_robin', 'least_recently_used', 'quota_aware', "
     "'first_available', got 'random'"),
    ("CCROTATE_REFRESH_BUFFER", "-1", "expected a number of seconds >= 0, got '-1'"),
    ("CCROTATE_MAX_ATTEMPTS", "0", "expected an integer >= 1, got '0'"),
    ("CCROTATE_MAX_ATTEMPTS", "2.5", "expected an integer >= 1"),
    ("CCROTATE_DEFAULT_COOLDOWN", "0", "expected a number of seconds > 0, got '0'"),
    ("CCROTATE_CONNECT_TIMEOUT", "nan", "expected a number of seconds > 0"),
    ("CCROTATE_READ_TIMEOUT", "inf", "expected a number of seconds > 0"),
    ("CCROTATE_READ_TIMEOUT", "soon", "expected a number of seconds > 0"),
    ("CCROTATE_HEADER_TIMEOUT", "0", "expected a number of seconds > 0, got '0'"),
    ("CCROTATE_BODY_TIMEOUT", "-5", "expected a number of seconds > 0, got '-5'"),
    ("CCROTATE_MAX_CONNECTIONS", "0", "expected an integer >= 1, got '0'"),
    ("CCROTATE_LOG_LEVEL", "verbose", "expected one of 'debug', 'info', 'warning', 'error'"),
])
def test_bad_env_value(var: str, raw: str, expected: str) -> None:
    message = error_of(env={var: raw})
    assert message.startswith(f"{var} (environment): ")
    assert expected in message


def test_bad_value_in_dotenv_names_file_and_line(tmp_path: Path) -> None:
    dotenv = write(tmp_path / "x.env", "# ports\n\nCCROTATE_PORT=http\n")
    assert error_of(dotenv_path=dotenv) == (
        f"CCROTATE_PORT ({dotenv} line 3): expected an integer from 0 to 65535, got 'http'")


@pytest.mark.parametrize(("toml", "expected"), [
    ("[server]\nport = 'abc'", "[server] port: expected an integer from 0 to 65535, got 'abc'"),
    ("[server]\nport = true", "[server] port: expected an integer from 0 to 65535, got True"),
    ("[server]\nport = 8080.0", "[server] port: expected an integer"),
    ("[server]\nhost = 5", "[server] host: expected a non-empty string, got 5"),
    ("[rotation]\nenabled = 'sometimes'", "[rotation] enabled: expected a boolean"),
    ("[rotation]\nhot_reload = 1", "[rotation] hot_reload: expected a boolean"),
    ("[upstream]\nread_timeout = false", "[upstream] read_timeout: expected a number"),
    ("[upstream]\nurl = 'api.anthropic.com'", "[upstream] url: expected an http://"),
    ("[logging]\nlevel = 'loud'", "[logging] level: expected one of"),
    ("[logging]\nduckdb_path = 3", "[logging] duckdb_path: expected a file path"),
])
def test_bad_toml_value(tmp_path: Path, toml: str, expected: str) -> None:
    path = write(tmp_path / "config.toml", toml + "\n")
    assert error_of(config_path=path).startswith(f"{path} {expected}")


def test_bad_cli_value() -> None:
    assert error_of(cli={"port": "x"}) == (
        "port (command line): expected an integer from 0 to 65535, got 'x'")


def test_bad_constructor_value() -> None:
    with pytest.raises(ConfigError, match=r"^Settings\(port=\.\.\.\): expected an integer"):
        Settings(port=-1)


def test_overridden_bad_value_is_still_an_error(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", "[server]\nport = -1\n")
    assert f"{toml} [server] port" in error_of(config_path=toml, env={"CCROTATE_PORT": "1"})


# --- secrets -------------------------------------------------------------------------


def test_repr_hides_secrets() -> None:
    s = Settings(auth_tokens=(SECRET,), admin_token=SECRET + "admin")
    text = repr(s)
    assert SECRET not in text
    assert "shorty" not in repr(Settings(admin_token="shorty"))
    assert "admin_token='<set>'" in repr(Settings(admin_token="shorty"))
    assert "auth_tokens=('…6789',)" in text
    assert "admin_token='…dmin'" in text
    assert str(s) == text
    assert "port=8080" in text
    assert "admin_token=None" in repr(Settings())


@pytest.mark.parametrize("raw", [SECRET + " x", SECRET + ",", "tok\u00e9" + SECRET])
def test_errors_never_echo_secrets(tmp_path: Path, raw: str) -> None:
    for var in ("CCROTATE_AUTH_TOKEN", "CCROTATE_ADMIN_TOKEN"):
        assert SECRET not in error_of(env={var: raw})
    assert SECRET not in error_of(cli={"admin_token": raw})
    toml = write(tmp_path / "c.toml", f"[security]\nauth_token = {raw!r}\n")
    assert SECRET not in error_of(config_path=toml)
    toml = write(tmp_path / "c.toml", f"[security]\nadmin_token = [{raw!r}]\n")
    assert SECRET not in error_of(config_path=toml)
    with pytest.raises(ConfigError) as info:
        Settings(admin_token=raw)
    assert SECRET not in str(info.value)


def test_malformed_dotenv_line_is_not_echoed(tmp_path: Path) -> None:
    dotenv = write(tmp_path / "x.env", f"CCROTATE_AUTH_TOKEN='{SECRET}\n")
    message = error_of(dotenv_path=dotenv)
    assert message == f"{dotenv} line 1: expected KEY=VALUE"


def test_malformed_toml_is_not_echoed(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", f"[security]\nauth_token = {SECRET}\n")
    message = error_of(config_path=toml)
    assert message.startswith(f"{toml}: invalid TOML: ")
    assert "line 2" in message
    assert SECRET not in message


def test_admin_token_rejects_empty() -> None:
    assert error_of(env={"CCROTATE_ADMIN_TOKEN": ""}) == (
        "CCROTATE_ADMIN_TOKEN (environment): expected a token of printable ASCII "
        "without spaces or commas")


# --- config file ---------------------------------------------------------------------


def test_unknown_toml_key(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", "[server]\nprot = 1\n")
    assert error_of(config_path=toml) == (
        f"{toml} [server] prot: unknown setting (did you mean 'port'?)")
    toml = write(tmp_path / "c.toml", "[rotation]\nport = 1\n")
    assert error_of(config_path=toml) == (
        f"{toml} [rotation] port: unknown setting (did you mean [server] port?)")
    toml = write(tmp_path / "c.toml", "[server]\nstratgy = 'round_robin'\n")
    assert error_of(config_path=toml) == (
        f"{toml} [server] stratgy: unknown setting (did you mean [rotation] strategy?)")
    toml = write(tmp_path / "c.toml", "[rotation]\nnothing_like_it = 1\n")
    assert error_of(config_path=toml) == f"{toml} [rotation] nothing_like_it: unknown setting"


def test_port_zero_means_any_free_port() -> None:
    assert load(env={"CCROTATE_PORT": "0"}).port == 0
    assert Settings(port=0).port == 0


def test_unknown_toml_section(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", "[sever]\nport = 1\n")
    assert error_of(config_path=toml) == (
        f"{toml}: unknown section [sever] (did you mean 'server'?)")
    toml = write(tmp_path / "c.toml", "port = 1\n")
    assert "'port' is not a section" in error_of(config_path=toml)


def test_explicit_missing_config(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert error_of(config_path=missing) == f"{missing}: config file not found"
    assert error_of(env={"CCROTATE_CONFIG": str(missing)}) == f"{missing}: config file not found"


def test_explicit_missing_dotenv(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    assert error_of(dotenv_path=missing) == f"{missing}: .env file not found"


def test_config_named_by_env_and_dotenv(tmp_path: Path) -> None:
    toml = write(tmp_path / "named.toml", "[server]\nport = 1234\n")
    assert load(env={"CCROTATE_CONFIG": str(toml)}).port == 1234
    write(tmp_path / "named.env", f"CCROTATE_CONFIG={toml}\n")
    assert load(env={"CCROTATE_ENV_FILE": str(tmp_path / "named.env")}).port == 1234
    # The config_path argument beats the environment variable.
    other = write(tmp_path / "other.toml", "[server]\nport = 4321\n")
    assert load(config_path=other, env={"CCROTATE_CONFIG": str(toml)}).port == 4321


def test_default_config_missing_is_fine() -> None:
    assert load().port == 8080


def test_default_config_is_read(isolated: Path) -> None:
    write(isolated / ".config/ccrotate/config.toml", "[server]\nport = 2345\n")
    s = load()
    assert (s.port, s.source_of("port")) == (2345, "config.toml")


def test_xdg_config_home(tmp_path: Path) -> None:
    write(tmp_path / "xdg/ccrotate/config.toml", "[server]\nport = 3456\n")
    assert load(env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")}).port == 3456


def test_malformed_toml(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", "[server\nport = 1\n")
    assert error_of(config_path=toml).startswith(f"{toml}: invalid TOML: ")


def test_full_example_config(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", """
[server]
host = "0.0.0.0"
port = 9000
header_timeout = 5
body_timeout = 30.5
max_connections = 200
[security]
allow_remote = true
auth_tokens = ["client-token-0001"]
admin_token = "admin-token-1"
max_body_size = "16MiB"
[rotation]
accounts_path = "/srv/accounts.json"
enabled = false
strategy = "round_robin"
hot_reload = false
refresh_buffer = 300
max_attempts = 2
default_cooldown = 30
inject_identity = false
[upstream]
url = "https://gateway.example/"
connect_timeout = 5
read_timeout = 120
[oauth]
client_id = "abc"
[openai.aliases]
"gpt-4o" = "claude-sonnet-4-5"
[logging]
level = "debug"
duckdb_path = "/var/log/ccrotate.duckdb"
""")
    s = load(config_path=toml)
    assert (s.host, s.port, s.allow_remote) == ("0.0.0.0", 9000, True)
    assert (s.header_timeout, s.body_timeout, s.max_connections) == (5.0, 30.5, 200)
    assert (s.auth_tokens, s.admin_token) == (("client-token-0001",), "admin-token-1")
    assert s.max_body_size == 16 * 2**20
    assert (s.accounts_path, s.rotation_enabled, s.hot_reload) == (
        Path("/srv/accounts.json"), False, False)
    assert (s.refresh_buffer, s.max_attempts, s.default_cooldown) == (300.0, 2, 30.0)
    assert s.inject_identity is False
    assert (s.upstream_url, s.connect_timeout, s.read_timeout) == (
        "https://gateway.example", 5.0, 120.0)
    assert s.oauth_client_id == "abc"
    assert dict(s.model_aliases) == {"gpt-4o": "claude-sonnet-4-5"}
    assert (s.log_level, s.access_log_path) == ("debug", Path("/var/log/ccrotate.duckdb"))
    assert {s.source_of(spec.name) for spec in FIELDS} == {"config.toml", "default"}


# --- .env ----------------------------------------------------------------------------


def test_dotenv_parsing(tmp_path: Path) -> None:
    dotenv = write(tmp_path / "x.env", "\n".join([
        "# a comment",
        "   ",
        "export CCROTATE_HOST=0.0.0.0",
        'CCROTATE_OAUTH_CLIENT_ID="quoted # not a comment"',
        "CCROTATE_LOG_LEVEL='debug'  # trailing comment",
        "CCROTATE_AUTH_TOKEN=abcdefgh#ijklmnop # comment after whitespace",
        "CCROTATE_PORT = 9001",
        "CCROTATE_PORT=9002",  # a later line wins
        "OTHER_TOOL_SETTING=ignored",
        "CCROTATE_ACCESS_LOG_DB=",
    ]) + "\n")
    s = load(dotenv_path=dotenv)
    assert s.host == "0.0.0.0"
    assert s.oauth_client_id == "quoted # not a comment"
    assert s.log_level == "debug"
    assert s.auth_tokens == ("abcdefgh#ijklmnop",)
    assert s.port == 9002
    assert s.access_log_path is None
    assert s.source_of("host") == ".env"


def test_dotenv_in_cwd_is_read_only_when_named(tmp_path: Path) -> None:
    """A ./.env belongs to whatever project the user is in: ignored unless named."""
    write(tmp_path / ".env", "CCROTATE_PORT=4567\n")
    assert load().port == 8080
    assert load(env={"CCROTATE_ENV_FILE": ".env"}).port == 4567
    assert load(dotenv_path=".env").port == 4567
    # The argument beats the environment variable.
    other = write(tmp_path / "other.env", "CCROTATE_PORT=4568\n")
    assert load(dotenv_path=other, env={"CCROTATE_ENV_FILE": ".env"}).port == 4568


def test_garbage_dotenv_in_cwd_is_ignored(tmp_path: Path) -> None:
    write(tmp_path / ".env", "this is not a dotenv file\nCCROTATE_PORT=http\n")
    assert load().port == 8080
    assert error_of(env={"CCROTATE_ENV_FILE": ".env"}) == ".env line 1: expected KEY=VALUE"


def test_missing_dotenv_named_by_env(tmp_path: Path) -> None:
    assert error_of(env={"CCROTATE_ENV_FILE": "gone.env"}) == "gone.env: .env file not found"


def test_misspelt_setting_in_dotenv(tmp_path: Path) -> None:
    dotenv = write(tmp_path / "x.env", "OTHER_TOOL=1\nCCROTATE_MAX_ATEMPTS=3\n")
    assert error_of(dotenv_path=dotenv) == (
        f"{dotenv} line 2: unknown setting CCROTATE_MAX_ATEMPTS "
        "(did you mean 'CCROTATE_MAX_ATTEMPTS'?)")


def test_dotenv_with_bom(tmp_path: Path) -> None:
    dotenv = tmp_path / "x.env"
    dotenv.write_bytes(b"\xef\xbb\xbfCCROTATE_PORT=4568\n")
    assert load(dotenv_path=dotenv).port == 4568


@pytest.mark.parametrize("line", [
    "JUST_A_WORD", "1BAD=x", "BAD KEY=x", "=x", "K='unterminated", 'K="a" trailing', "export X",
])
def test_malformed_dotenv_line(tmp_path: Path, line: str) -> None:
    dotenv = write(tmp_path / "x.env", f"# ok\nCCROTATE_PORT=1\n{line}\n")
    assert error_of(dotenv_path=dotenv) == f"{dotenv} line 3: expected KEY=VALUE"


# --- the object ----------------------------------------------------------------------


def test_immutable_and_hashable() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]
    assert hash(s) == hash(Settings())
    with pytest.raises(TypeError):
        Settings("127.0.0.1")  # type: ignore[call-arg]


def test_constructor_normalises() -> None:
    s = Settings(port="9000", accounts_path="~/a.json", model_aliases={"a": "b"})  # type: ignore[arg-type]
    assert s.port == 9000
    assert s.accounts_path == Path("~/a.json").expanduser()
    assert dict(s.model_aliases) == {"a": "b"}
    assert s.source_of("port") == "code"
    assert s.source_of("host") == "default"


def test_replace() -> None:
    s = load(env={"CCROTATE_PORT": "9000"})
    t = s.replace(host="0.0.0.0", max_body_size="1KB")
    assert (t.host, t.port, t.max_body_size) == ("0.0.0.0", 9000, 1000)
    assert (t.source_of("host"), t.source_of("port")) == ("code", "environment")
    assert s.host == "127.0.0.1"
    with pytest.raises(ConfigError, match="port"):
        s.replace(port=-1)
    assert dataclasses.replace(s, port=1).port == 1


def test_equality_ignores_sources() -> None:
    assert load(env={"CCROTATE_PORT": "8080"}) == Settings()


def test_docs_example_config_loads(tmp_path: Path) -> None:
    docs = (Path(__file__).parents[1] / "docs/configuration.md").read_text(encoding="utf-8")
    example = docs.split("```toml\n", 1)[1].split("```", 1)[0]
    s = load(config_path=write(tmp_path / "c.toml", example))
    assert s.auth_tokens == ("change-me-client-token",)
    assert s.model_aliases["gpt-4o"] == "claude-sonnet-4-5"


def test_taxonomy_and_routing_settings_reach_the_pool(tmp_path: Path) -> None:
    """The account backoff, entitlement memory, 403 threshold and affinity settings are
    what the rotator's pool runs with."""
    from ccrotate import Rotator

    path = tmp_path / "accounts.json"
    path.write_text('{"version": 1, "accounts": {"k": {"apiKey": "sk-ant-api03-k"}}}')
    settings = load(env={"CCROTATE_ACCOUNT_BACKOFF_BASE": "5", "CCROTATE_ACCOUNT_BACKOFF_CAP": "50",
                         "CCROTATE_ENTITLEMENT_TTL": "60", "CCROTATE_FORBIDDEN_THRESHOLD": "2",
                         "CCROTATE_SESSION_AFFINITY": "false",
                         "CCROTATE_ACCOUNTS_PATH": str(path),
                         "CCROTATE_CREDENTIALS_PATH": str(tmp_path / "none.json")})
    pool = Rotator(settings).pool
    assert (pool.backoff_base, pool.backoff_cap, pool.forbidden_threshold) == (5.0, 50.0, 2)
    assert pool._denied.ttl == 60
    assert not pool.affinity
