"""Settings: one immutable object holding every ccrotate knob, and the loader that fills it.

Values come from five layers, highest first: command-line overrides, environment
variables, a ``.env`` file (only when one is named: ``--env-file`` or ``CCROTATE_ENV_FILE``),
a TOML config file, then the defaults on :class:`Settings`.
How each setting is named in each layer lives in one table, :data:`FIELDS`, so the CLI
and ``docs/configuration.md`` derive from data rather than from a chain of ifs.

Every value goes through the same parser whichever layer gave it; a bad one raises
:class:`~ccrotate._exceptions.ConfigError` naming the setting and where it came from.
Secret values (auth and admin tokens, the database URL's password) never appear in a repr
or in an error message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Any, cast
from urllib.parse import urlsplit

from ccrotate._checks import masked_url
from ccrotate._exceptions import ConfigError
from ccrotate._pool.strategy import STRATEGIES as _STRATEGY_CLASSES

__all__ = ["FIELDS", "LOG_LEVELS", "STRATEGIES", "UPSTREAM_CLIENTS", "FieldSpec", "Settings",
           "load_settings"]

STRATEGIES: tuple[str, ...] = tuple(_STRATEGY_CLASSES)
"""Account-selection strategies the ``strategy`` setting accepts."""

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")

UPSTREAM_CLIENTS: tuple[str, ...] = ("httptools", "aiohttp", "httpx")
"""HTTP clients the ``upstream_client`` setting accepts (see docs/proxy.md#upstream-transports)."""
"""Accepted ``log_level`` values (case-insensitive on input, stored lower-case)."""

Parser = Callable[[object], object]

# --- Value parsers -------------------------------------------------------------------
# Each takes a raw value (a str from the environment, .env or command line; a native
# value from TOML or code) and returns the normalised value, or raises
# ValueError("<what was expected>"). They never put the value in the message: the
# caller appends it, except for secrets. All are idempotent, so Settings can re-check.


def _text(raw: object) -> str:
    if isinstance(raw, str) and raw.strip():
        return raw.strip()
    raise ValueError("a non-empty string")


def _number(raw: object, cast: type[int] | type[float]) -> int | float | None:
    if isinstance(raw, str):
        try:
            return cast(raw.strip())
        except ValueError:
            return None
    # bool is an int subclass, and `port = 8080.0` is a mistake rather than a port.
    if isinstance(raw, bool) or not isinstance(raw, (cast, int)):
        return None
    return raw


def _int(lo: int, hi: int | None = None) -> Parser:
    want = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"

    def parse(raw: object) -> int:
        value = _number(raw, int)
        if not isinstance(value, int) or value < lo or (hi is not None and value > hi):
            raise ValueError(want)
        return value

    return parse


def _seconds(*, zero_ok: bool) -> Parser:
    want = f"a number of seconds {'>=' if zero_ok else '>'} 0"

    def parse(raw: object) -> float:
        value = _number(raw, float)
        if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise ValueError(want)
        return float(value)

    return parse


_TRUE, _FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})


def _bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    word = raw.strip().lower() if isinstance(raw, str) else None
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ValueError("a boolean (true/false, 1/0, yes/no, on/off)")


# SI units are powers of ten and IEC units powers of two, as their names say.
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


def _size(raw: object) -> int:
    size = 0
    if isinstance(raw, int) and not isinstance(raw, bool):
        size = raw
    elif isinstance(raw, str) and (m := _SIZE.fullmatch(raw.strip().lower())) and m[2] in _UNITS:
        size = int(Decimal(m[1]) * _UNITS[m[2]])  # Decimal: "1.1MB" is exactly 1100000
    if size <= 0:
        raise ValueError("a size in bytes > 0, such as 1048576, '10MB' or '512KiB'")
    return size


def _path(raw: object) -> Path:
    if isinstance(raw, PurePath) or (isinstance(raw, str) and raw.strip()):
        return Path(raw.strip() if isinstance(raw, str) else raw).expanduser()
    raise ValueError("a file path")


def _optional_path(raw: object) -> Path | None:
    # "" means "unset" too, so an env var can switch off what the config file set.
    return None if raw is None or raw == "" else _path(raw)


def _url(raw: object, *, base: bool = False) -> str:
    url = raw.strip() if isinstance(raw, str) else ""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad port or bracketed host
        ok = False
    if not ok:
        raise ValueError("an http:// or https:// URL with a host")
    # The upstream base URL gets "/v1/messages" appended; a trailing slash would double it.
    return url.rstrip("/") if base else url


def _redis_url(raw: object) -> str:
    url = raw.strip() if isinstance(raw, str) else ""
    try:
        parts = urlsplit(url)
        ok = (parts.scheme in ("redis", "rediss") and bool(parts.hostname)) or (
            parts.scheme == "unix" and bool(parts.path))
        ok = ok and parts.port != 0
    except ValueError:  # a bad port or bracketed host
        ok = False
    if not ok:  # the URL may hold a password: the caller never quotes it (secret)
        raise ValueError("a redis://, rediss:// or unix:// URL")
    return url


# Tokens travel in HTTP headers and lists are comma-separated, hence the character set.
_TOKEN = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_TOKEN_CHARS = "printable ASCII without spaces or commas"


def _token(raw: object) -> str:
    if isinstance(raw, str) and _TOKEN.fullmatch(raw.strip()):
        return raw.strip()
    raise ValueError(f"a token of {_TOKEN_CHARS}")


MIN_CLIENT_TOKEN = 16
"""Shortest client token accepted: anything shorter is guessable by whoever can reach the port."""


def _tokens(raw: object) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    tokens: tuple[str, ...] | None = None
    if isinstance(items, list | tuple):
        with contextlib.suppress(ValueError):  # one bad token: report the whole list's rule
            tokens = tuple(dict.fromkeys(map(_token, cast("Iterable[object]", items))))  # dedupe
    if tokens is None:
        raise ValueError(f"a comma-separated list of tokens of {_TOKEN_CHARS}")
    if any(len(token) < MIN_CLIENT_TOKEN for token in tokens):  # the token is never shown
        raise ValueError(
            f"client tokens of at least {MIN_CLIENT_TOKEN} characters (one is shorter); make "
            "one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return tokens


def _items(raw: object) -> list[str] | None:
    # A comma-separated string (env, .env, CLI) or a TOML list of strings; blanks dropped.
    items = raw.split(",") if isinstance(raw, str) else raw
    if isinstance(items, list | tuple) and all(isinstance(i, str) for i in items):
        return [i.strip() for i in cast("Iterable[str]", items) if i.strip()]
    return None


_HOSTNAME = re.compile(r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?"
                       r"(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def _host_name(item: str) -> str | None:
    name = item.lower()
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(bare)
        return f"[{address.compressed}]" if address.version == 6 else address.compressed
    return name if _HOSTNAME.fullmatch(name) else None


def _hosts(raw: object) -> tuple[str, ...]:
    items = _items(raw)
    names = None if items is None else [_host_name(i) if i != "*" else i for i in items]
    if names is None or None in names:
        raise ValueError("a comma-separated list of host names or IP addresses without "
                         "scheme or port (such as 'pool.example.com, 10.0.0.5'), or '*'")
    return tuple(dict.fromkeys(cast("list[str]", names)))


def _origin(item: str) -> str | None:
    try:
        parts = urlsplit(item)
        port = parts.port
    except ValueError:  # a bad port or bracketed host
        return None
    scheme = parts.scheme.lower()
    host = _host_name(parts.hostname) if parts.hostname else None
    if (scheme not in ("http", "https") or host is None or parts.username is not None
            or parts.path not in ("", "/") or parts.query or parts.fragment or port == 0):
        return None
    # As a browser serialises an origin: lower case, no default port, no trailing slash.
    default = 80 if scheme == "http" else 443
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def _origins(raw: object) -> tuple[str, ...]:
    items = _items(raw)
    origins = None if items is None else [_origin(i) for i in items]
    if origins is None or None in origins:
        # '*' is refused on purpose: it would let every web page spend the pool.
        raise ValueError("a comma-separated list of origins such as 'https://app.example' "
                         "(scheme, host and optional port; no path, no '*')")
    return tuple(dict.fromkeys(cast("list[str]", origins)))


def _database_url(raw: object) -> str | None:
    # "" means "none", so an env var can switch off the config file's. The value is never
    # quoted back (the field is secret): it may hold a password.
    if raw is None or raw == "":
        return None
    url = raw.strip() if isinstance(raw, str) else ""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("postgresql", "postgres") and parts.port != 0
    except ValueError:  # a bad port or bracketed host
        ok = False
    if not ok:
        raise ValueError("a postgresql:// URL, such as postgresql://user:password@db/ccrotate")
    return url


def _pick(raw: object, options: tuple[str, ...]) -> str:
    if isinstance(raw, str) and raw.strip().lower() in options:
        return raw.strip().lower()
    raise ValueError("one of " + ", ".join(map(repr, options)))


def _aliases(raw: object) -> Mapping[str, str]:
    table = cast("Mapping[object, object]", raw) if isinstance(raw, Mapping) else None
    if table is None or not all(
        isinstance(k, str) and k and isinstance(v, str) and v.strip() for k, v in table.items()
    ):
        raise ValueError("a table of model name = model name strings")
    return MappingProxyType({str(k): str(v).strip() for k, v in table.items()})


SDK_TOOL_STEPS: tuple[str, ...] = ("ignore", "formatted", "forward")
"""What SDK mode shows of the agent's tool steps (``sdk_tool_steps``)."""
SDK_PERMISSION_MODES: tuple[str, ...] = (
    "default", "acceptEdits", "plan", "bypassPermissions", "dontAsk")
"""Claude Code permission modes the ``sdk_permission_mode`` setting accepts."""
# A tool name with an optional rule in parentheses: "Read", "mcp__docs__search",
# "Bash(git status:*)".
_TOOL = re.compile(r"[A-Za-z0-9_*:.-]+(\([^(),]*\))?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _tools(raw: object) -> tuple[str, ...]:
    items = _items(raw)
    if items is None or not all(_TOOL.fullmatch(i) for i in items):
        raise ValueError("a comma-separated list of tool names (such as 'Read, Grep, Bash')")
    return tuple(dict.fromkeys(items))


def _env_names(raw: object) -> tuple[str, ...]:
    items = _items(raw)
    if items is None or not all(_ENV_NAME.fullmatch(i) for i in items):
        raise ValueError("a comma-separated list of environment variable names")
    return tuple(dict.fromkeys(items))


def _permission_mode(raw: object) -> str:
    by_lower = {mode.lower(): mode for mode in SDK_PERMISSION_MODES}
    if isinstance(raw, str) and raw.strip().lower() in by_lower:
        return by_lower[raw.strip().lower()]
    raise ValueError("one of " + ", ".join(map(repr, SDK_PERMISSION_MODES)))


def _mcp_servers(raw: object) -> Mapping[str, Any] | Path | None:
    # A TOML table ([sdk.mcp_servers.NAME]), inline JSON, or a JSON file's path (which
    # Claude Code reads itself, as its --mcp-config).
    if raw is None or raw == "":
        return None
    if isinstance(raw, str) and raw.strip().startswith("{"):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ValueError("a JSON object of MCP servers, or a JSON file path") from None
    if isinstance(raw, Mapping):
        table = cast("Mapping[object, object]", raw)
        if "mcpServers" in table and isinstance(table["mcpServers"], Mapping):
            table = cast("Mapping[object, object]", table["mcpServers"])
        if all(isinstance(k, str) and isinstance(v, Mapping) for k, v in table.items()):
            return MappingProxyType({str(k): v for k, v in table.items()})
        raise ValueError("a table of MCP server name = server configuration table")
    return _path(raw)


# --- The table -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How one setting is named in each layer, parsed and described."""

    name: str  # Settings attribute, and the key for command-line overrides
    env: tuple[str, ...]  # environment variables; canonical first, legacy aliases after
    toml: tuple[str, ...]  # "section.key" names in the config file; canonical first
    parse: Parser = field(repr=False)
    help: str = ""
    secret: bool = False  # never shown in repr or error messages

    @property
    def default(self) -> object:
        """The default value, as declared on :class:`Settings` (paths not yet expanded)."""
        return _DEFAULTS[self.name]


def _spec(name: str, env: str, toml: str, parse: Parser, help: str, *,
          secret: bool = False) -> FieldSpec:
    return FieldSpec(name, tuple(env.split()), tuple(toml.split()), parse, help, secret)


FIELDS: tuple[FieldSpec, ...] = (
    _spec("host", "CCROTATE_HOST", "server.host", _text, "Interface the server binds."),
    _spec("port", "CCROTATE_PORT", "server.port", _int(0, 65535),
          "TCP port the server binds; 0: any free port (the one chosen is printed)."),
    _spec("header_timeout", "CCROTATE_HEADER_TIMEOUT", "server.header_timeout",
          _seconds(zero_ok=False),
          "Seconds a connection has to send a complete request head; closed (408) beyond."),
    _spec("body_timeout", "CCROTATE_BODY_TIMEOUT", "server.body_timeout",
          _seconds(zero_ok=False),
          "Seconds a client has to send the whole request body; answered 408 beyond."),
    _spec("request_timeout", "CCROTATE_REQUEST_TIMEOUT", "server.request_timeout",
          _seconds(zero_ok=False),
          "Seconds a request may wait, across every attempt, for an answer to start (504)."),
    _spec("max_connections", "CCROTATE_MAX_CONNECTIONS", "server.max_connections", _int(1),
          "Open client connections served at once; more are answered 503 and closed."),
    _spec("workers", "CCROTATE_WORKERS", "server.workers", _int(1, 256),
          "Server processes (uvicorn workers); more than 1 needs state_url."),
    _spec("allow_remote", "CCROTATE_ALLOW_REMOTE", "security.allow_remote", _bool,
          "Allow binding a non-loopback address without an auth token."),
    _spec("accounts_path", "CCROTATE_ACCOUNTS_PATH CCPROXY_ACCOUNTS_PATH",
          "rotation.accounts_path", _path, "The accounts file (JSON)."),
    _spec("credentials_path", "CCROTATE_CREDENTIALS_PATH", "rotation.credentials_path", _path,
          "The Claude CLI's own login, used when no accounts file exists."),
    _spec("upstream_url", "CCROTATE_UPSTREAM_URL", "upstream.url",
          lambda raw: _url(raw, base=True), "Base URL of the Anthropic API."),
    _spec("oauth_token_url", "CCROTATE_OAUTH_TOKEN_URL", "oauth.token_url", _url,
          "OAuth token endpoint (refresh and code exchange)."),
    _spec("oauth_authorize_url", "CCROTATE_OAUTH_AUTHORIZE_URL", "oauth.authorize_url", _url,
          "OAuth authorization page, for adding accounts."),
    _spec("oauth_client_id", "CCROTATE_OAUTH_CLIENT_ID", "oauth.client_id", _text,
          "OAuth client id (Claude Code's)."),
    _spec("rotation_enabled", "CCROTATE_ROTATION_ENABLED CCPROXY_ROTATION_ENABLED",
          "rotation.enabled", _bool, "Rotate over accounts; off: always the first available."),
    _spec("strategy", "CCROTATE_STRATEGY", "rotation.strategy",
          lambda raw: _pick(raw, STRATEGIES), "How the next account is chosen."),
    _spec("hot_reload", "CCROTATE_HOT_RELOAD CCPROXY_HOT_RELOAD", "rotation.hot_reload", _bool,
          "Reload the accounts file when it changes on disk."),
    _spec("refresh_buffer", "CCROTATE_REFRESH_BUFFER CCPROXY_REFRESH_BUFFER",
          "rotation.refresh_buffer", _seconds(zero_ok=True),
          "Refresh an OAuth token this many seconds before it expires."),
    _spec("max_attempts", "CCROTATE_MAX_ATTEMPTS", "rotation.max_attempts", _int(1),
          "Accounts tried per request before giving up (failover)."),
    _spec("default_cooldown", "CCROTATE_DEFAULT_COOLDOWN", "rotation.default_cooldown",
          _seconds(zero_ok=False),
          "Seconds an account rests after a 429 that says nothing about when to retry."),
    _spec("account_backoff_base", "CCROTATE_ACCOUNT_BACKOFF_BASE",
          "rotation.account_backoff_base", _seconds(zero_ok=False),
          "First backoff of an account after a 429 without reset, a 529 or a 5xx."),
    _spec("account_backoff_cap", "CCROTATE_ACCOUNT_BACKOFF_CAP", "rotation.account_backoff_cap",
          _seconds(zero_ok=False), "Longest backoff of an account (it doubles up to this)."),
    _spec("entitlement_ttl", "CCROTATE_ENTITLEMENT_TTL", "rotation.entitlement_ttl",
          _seconds(zero_ok=False),
          "Seconds an account is skipped for a model it was refused (403)."),
    _spec("forbidden_threshold", "CCROTATE_FORBIDDEN_THRESHOLD", "rotation.forbidden_threshold",
          _int(1), "403s in a row, from different requests, that make an account auth_error."),
    _spec("session_affinity", "CCROTATE_SESSION_AFFINITY", "rotation.session_affinity", _bool,
          "Keep the requests of one conversation on one account while it can serve."),
    _spec("affinity_ttl", "CCROTATE_AFFINITY_TTL", "rotation.affinity_ttl",
          _seconds(zero_ok=False),
          "Seconds a session stays bound to its account after its last request."),
    _spec("session_header", "CCROTATE_SESSION_HEADER", "rotation.session_header", _text,
          "Request header naming a session when metadata.user_id names none."),
    _spec("capacity_wait", "CCROTATE_CAPACITY_WAIT", "rotation.capacity_wait",
          _seconds(zero_ok=True),
          "Seconds a request waits when every account is at its maxConcurrent (429 beyond)."),
    _spec("inject_identity", "CCROTATE_INJECT_IDENTITY", "rotation.inject_identity", _bool,
          "Prepend Claude Code's identity system block for OAuth accounts."),
    _spec("relocate_system", "CCROTATE_RELOCATE_SYSTEM", "rotation.relocate_system", _bool,
          "With identity injection, move the client's system prompt into the first user turn."),
    _spec("auth_tokens", "CCROTATE_AUTH_TOKEN", "security.auth_tokens security.auth_token",
          _tokens, "Bearer tokens clients must present; empty: no client auth.", secret=True),
    _spec("admin_token", "CCROTATE_ADMIN_TOKEN", "security.admin_token",
          lambda raw: None if raw is None else _token(raw),
          "Bearer token for the admin endpoints.", secret=True),
    _spec("allowed_hosts", "CCROTATE_ALLOWED_HOSTS", "security.allowed_hosts", _hosts,
          "Host names the server answers to besides localhost, 127.0.0.1, [::1] and the "
          "bound address ('*': any)."),
    _spec("allowed_origins", "CCROTATE_ALLOWED_ORIGINS", "security.allowed_origins", _origins,
          "Web origins whose pages may call the server (CORS); none by default."),
    _spec("max_body_size", "CCROTATE_MAX_BODY_SIZE", "security.max_body_size", _size,
          "Largest request body accepted, in bytes ('10MB' and '512KiB' work too)."),
    _spec("connect_timeout", "CCROTATE_CONNECT_TIMEOUT", "upstream.connect_timeout",
          _seconds(zero_ok=False), "Seconds to connect to the upstream."),
    _spec("read_timeout", "CCROTATE_READ_TIMEOUT", "upstream.read_timeout",
          _seconds(zero_ok=False), "Longest gap in seconds between upstream bytes."),
    _spec("upstream_client", "CCROTATE_UPSTREAM_CLIENT", "upstream.client",
          lambda raw: _pick(raw, UPSTREAM_CLIENTS),
          "The HTTP client to the upstream: httptools (the fastest), aiohttp or httpx "
          "(honours HTTPS_PROXY)."),
    _spec("state_url", "CCROTATE_STATE_URL", "state.url",
          lambda raw: None if raw is None or raw == "" else _redis_url(raw),
          "Redis URL of the state replicas share (cooldowns, rotation, tokens); unset: "
          "this process only.", secret=True),
    _spec("state_namespace", "CCROTATE_STATE_NAMESPACE", "state.namespace", _text,
          "Prefix of this pool's keys in the shared store, so that pools can share one Redis."),
    _spec("model_aliases", "", "openai.aliases", _aliases,
          "Model names rewritten on the OpenAI-compatible endpoint (a TOML table; no env var)."),
    _spec("log_level", "CCROTATE_LOG_LEVEL", "logging.level",
          lambda raw: _pick(raw, LOG_LEVELS), "One of debug, info, warning, error."),
    _spec("access_log_path", "CCROTATE_ACCESS_LOG_DB", "logging.duckdb_path",
          _optional_path,
          "DuckDB file for the access log; unset: JSON lines on the ccrotate.access logger "
          "and the last 10,000 entries in memory."),
    _spec("access_log_url", "CCROTATE_ACCESS_LOG_URL", "logging.postgres_url", _database_url,
          "PostgreSQL URL for an access log that several replicas share (not with "
          "access_log_path); its password is never shown.", secret=True),
    _spec("pricing_path", "CCROTATE_PRICING_PATH", "logging.pricing_path",
          _optional_path,
          "Pricing table (JSON) for cost estimates; unset: the one shipped with ccrotate."),
    _spec("sdk_enabled", "CCROTATE_SDK_ENABLED", "sdk.enabled", _bool,
          "Serve SDK mode at /sdk (answers 501 without the ccrotate[sdk] extra)."),
    _spec("sdk_tool_steps", "CCROTATE_SDK_TOOL_STEPS", "sdk.tool_steps",
          lambda raw: _pick(raw, SDK_TOOL_STEPS),
          "What clients see of the agent's tool steps: ignore, formatted or forward."),
    _spec("sdk_allowed_tools", "CCROTATE_SDK_ALLOWED_TOOLS", "sdk.allowed_tools", _tools,
          "Tools the agent may use (built-in and mcp__server__tool); none by default."),
    _spec("sdk_permission_mode", "CCROTATE_SDK_PERMISSION_MODE", "sdk.permission_mode",
          _permission_mode, "Claude Code's permission mode for the agent."),
    _spec("sdk_mcp_servers", "CCROTATE_SDK_MCP_SERVERS", "sdk.mcp_servers", _mcp_servers,
          "MCP servers for the agent: a TOML table, inline JSON or a JSON file path."),
    _spec("sdk_workspace", "CCROTATE_SDK_WORKSPACE", "sdk.workspace",
          _optional_path,
          "The agent's working directory; unset: a fresh temporary one per call."),
    _spec("sdk_max_concurrent", "CCROTATE_SDK_MAX_CONCURRENT", "sdk.max_concurrent", _int(1),
          "Agent processes running at once (and warm sessions kept)."),
    _spec("sdk_queue_timeout", "CCROTATE_SDK_QUEUE_TIMEOUT", "sdk.queue_timeout",
          _seconds(zero_ok=True), "Seconds a call waits for a free agent slot (429 beyond)."),
    _spec("sdk_deadline", "CCROTATE_SDK_DEADLINE", "sdk.deadline", _seconds(zero_ok=False),
          "Seconds one SDK call may run in all; the agent is killed beyond (504)."),
    _spec("sdk_session_ttl", "CCROTATE_SDK_SESSION_TTL", "sdk.session_ttl",
          _seconds(zero_ok=False), "Seconds an idle /sdk/{session_id} session stays warm."),
    _spec("sdk_env_allow", "CCROTATE_SDK_ENV_ALLOW", "sdk.env_allow", _env_names,
          "Further environment variables the agent inherits (beyond PATH, LANG, TZ...)."),
    _spec("sdk_cli_path", "CCROTATE_SDK_CLI_PATH", "sdk.cli_path",
          _optional_path,
          "The Claude Code executable; unset: the one bundled with claude-agent-sdk."),
    _spec("sdk_max_turns", "CCROTATE_SDK_MAX_TURNS", "sdk.max_turns", _int(1),
          "Agent turns (model calls) per SDK call."),
)
_SPECS = {spec.name: spec for spec in FIELDS}


def _parse(spec: FieldSpec, raw: object, where: str) -> object:
    try:
        return spec.parse(raw)
    except ValueError as exc:
        got = "" if spec.secret else f", got {raw!r}"
        # For a secret, drop the cause too: a ValueError from a builtin could quote the value.
        raise ConfigError(f"{where}: expected {exc}{got}") from (None if spec.secret else exc)


def _mask(value: object) -> object:
    if isinstance(value, tuple):
        return tuple(map(_mask, cast("tuple[object, ...]", value)))
    if isinstance(value, str) and "://" in value:  # a URL: only its password is hidden
        return masked_url(value)
    if isinstance(value, str):  # the last 4 tell tokens apart; of a short one they say too much
        return "…" + value[-4:] if len(value) >= 16 else "<set>"
    return value


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Settings:
    """Every ccrotate setting, validated and immutable.

    Build one with :func:`load_settings`, or directly: keyword arguments are parsed
    and checked exactly like the loader's values (``Settings(port="9000").port == 9000``).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    request_timeout: float = 600.0
    max_connections: int = 1000
    workers: int = 1
    allow_remote: bool = False
    accounts_path: Path = Path("~/.claude/accounts.json")
    credentials_path: Path = Path("~/.claude/.credentials.json")
    upstream_url: str = "https://api.anthropic.com"
    oauth_token_url: str = "https://platform.claude.com/v1/oauth/token"
    oauth_authorize_url: str = "https://claude.ai/oauth/authorize"
    oauth_client_id: str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
    rotation_enabled: bool = True
    strategy: str = "round_robin"
    hot_reload: bool = True
    refresh_buffer: float = 600.0
    max_attempts: int = 4
    default_cooldown: float = 60.0
    account_backoff_base: float = 2.0
    account_backoff_cap: float = 120.0
    entitlement_ttl: float = 900.0
    forbidden_threshold: int = 3
    session_affinity: bool = True
    affinity_ttl: float = 300.0
    session_header: str = "x-session-id"
    capacity_wait: float = 30.0
    inject_identity: bool = True
    relocate_system: bool = False
    auth_tokens: tuple[str, ...] = ()
    admin_token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    max_body_size: int = 32 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    upstream_client: str = "httptools"
    state_url: str | None = None
    state_namespace: str = "ccrotate"
    model_aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}),
                                             hash=False)
    log_level: str = "info"
    access_log_path: Path | None = None
    access_log_url: str | None = None
    pricing_path: Path | None = None
    sdk_enabled: bool = True
    sdk_tool_steps: str = "ignore"
    sdk_allowed_tools: tuple[str, ...] = ()
    sdk_permission_mode: str = "default"
    sdk_mcp_servers: Mapping[str, Any] | Path | None = field(default=None, hash=False)
    sdk_workspace: Path | None = None
    sdk_max_concurrent: int = 4
    sdk_queue_timeout: float = 10.0
    sdk_deadline: float = 600.0
    sdk_session_ttl: float = 600.0
    sdk_env_allow: tuple[str, ...] = ()
    sdk_cli_path: Path | None = None
    sdk_max_turns: int = 20
    # Where each value came from; see source_of(). Not part of equality.
    sources: Mapping[str, str] = field(default_factory=dict[str, str], compare=False)

    def __post_init__(self) -> None:
        given = self.sources
        sources: dict[str, str] = {}
        for spec in FIELDS:
            value = _parse(spec, getattr(self, spec.name), f"Settings({spec.name}=...)")
            object.__setattr__(self, spec.name, value)  # frozen: only here, while building
            default = spec.parse(_DEFAULTS[spec.name])
            sources[spec.name] = given.get(spec.name) or ("default" if value == default else "code")
        object.__setattr__(self, "sources", MappingProxyType(sources))
        if self.access_log_path is not None and self.access_log_url is not None:
            raise ConfigError(
                f"access_log_path ({sources['access_log_path']}) and access_log_url "
                f"({sources['access_log_url']}) both choose the access-log store: set one, "
                "DuckDB for one server or PostgreSQL for several")

    def source_of(self, name: str) -> str:
        """Where setting ``name`` came from: "command line", "environment", ".env",
        "config.toml", "default", or "code" (a constructor or :meth:`replace` argument)."""
        return self.sources[name]

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated; their source becomes "code"."""
        sources = {**self.sources, **dict.fromkeys(changes, "code")}
        return dataclasses.replace(self, sources=sources, **changes)

    def __repr__(self) -> str:
        parts: list[str] = []
        for spec in FIELDS:
            value: object = getattr(self, spec.name)
            if spec.secret:
                value = _mask(value)
            elif spec.name == "model_aliases":
                value = dict(self.model_aliases)
            elif spec.name == "sdk_mcp_servers" and isinstance(value, Mapping):
                # Server configurations may hold tokens (env, headers): names only.
                value = {name: "…" for name in value}
            parts.append(f"{spec.name}={value!r}")
        return f"Settings({', '.join(parts)})"


_DEFAULTS: dict[str, object] = {
    f.name: f.default_factory() if callable(f.default_factory) else f.default
    for f in dataclasses.fields(Settings)
}


# --- Loading -------------------------------------------------------------------------


def load_settings(*, cli: Mapping[str, object] | None = None,
                  env: Mapping[str, str] | None = None,
                  dotenv_path: str | os.PathLike[str] | None = None,
                  config_path: str | os.PathLike[str] | None = None) -> Settings:
    """Build :class:`Settings` from, highest first: ``cli``, ``env``, the .env file, the
    config file, the defaults.

    ``cli`` maps field names to values, ``None`` meaning "not given". ``env`` defaults
    to ``os.environ``. A .env file is read only when named, by ``dotenv_path`` or else
    ``$CCROTATE_ENV_FILE``, and must then exist: a ``./.env`` left by another tool is
    never picked up. ``config_path`` defaults to ``$CCROTATE_CONFIG`` or
    ``~/.config/ccrotate/config.toml`` (``$XDG_CONFIG_HOME`` is honoured), read only if
    it exists unless named explicitly. Raises ConfigError.
    """
    env = os.environ if env is None else env
    named_dotenv = dotenv_path or env.get("CCROTATE_ENV_FILE") or None
    dotenv_file = Path(named_dotenv).expanduser() if named_dotenv else Path(".env")
    dotenv = _read_dotenv(dotenv_file) if named_dotenv else {}
    toml_file, toml = _read_config(config_path, env, dotenv)
    given = {key: value for key, value in (cli or {}).items() if value is not None}
    if unknown := sorted(given.keys() - _SPECS.keys()):
        key = unknown[0]
        raise ConfigError(f"unknown setting {key!r} (command line){_hint(key, _SPECS)}")

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in FIELDS:
        layers: list[tuple[str, str, object]] = []
        if spec.name in given:
            layers.append(("command line", f"{spec.name} (command line)", given[spec.name]))
        layers += [("environment", f"{var} (environment)", env[var])
                   for var in spec.env if var in env]
        layers += [(".env", f"{var} ({dotenv_file} line {dotenv[var][1]})", dotenv[var][0])
                   for var in spec.env if var in dotenv]
        layers += [("config.toml", f"{toml_file} [{key.replace('.', '] ', 1)}", toml[key])
                   for key in spec.toml if key in toml]
        # Every layer is checked, not just the winner: a broken value in the config file
        # must not lie in wait behind an override, ready to bite when it is removed.
        parsed = [(kind, _parse(spec, raw, where)) for kind, where, raw in layers]
        if parsed:
            sources[spec.name], values[spec.name] = parsed[0]
    return Settings(**values, sources=sources)


def _hint(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _key_hint(section: str, key: str, known: Iterable[str]) -> str:
    # The closest key in the same section; else the same or a close key in another one
    # (`[server] strategy` is `[rotation] strategy`).
    keys = [k.split(".")[1] for k in known if k.startswith(f"{section}.")]
    if hint := _hint(key, keys):
        return hint
    elsewhere = {k.split(".")[1]: k.split(".")[0] for k in sorted(known)}
    close = difflib.get_close_matches(key, list(elsewhere), n=1)
    return f" (did you mean [{elsewhere[close[0]]}] {close[0]}?)" if close else ""


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: {what} not found") from exc
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc}") from exc


_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _dotenv_line(line: str) -> tuple[str, str] | None:
    """``(key, value)`` of one .env line, None for blanks and comments; ValueError if bad."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    key, sep, value = text.removeprefix("export ").partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not _ENV_KEY.fullmatch(key):
        raise ValueError
    if value[:1] in ("'", '"'):  # quoted: taken literally up to the closing quote
        end = value.find(value[0], 1)
        if end < 0 or value[end + 1:].strip()[:1] not in ("", "#"):
            raise ValueError
        return key, value[1:end]
    # Unquoted: a '#' starting the value or after whitespace begins a comment ("a#b" stays).
    return key, re.split(r"(?:^|\s+)#", value, maxsplit=1)[0]


def _read_dotenv(path: Path) -> dict[str, tuple[str, int]]:
    entries: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(_read_text(path, ".env file").splitlines(), start=1):
        try:
            entry = _dotenv_line(line)
        except ValueError as exc:  # the line itself is not shown: it may hold a token
            # The cause is a bare ValueError() raised by _dotenv_line: it carries no text.
            raise ConfigError(f"{path} line {number}: expected KEY=VALUE") from exc
        if entry is not None:
            entries[entry[0]] = (entry[1], number)
    # The file is ccrotate's own: a misspelt CCROTATE_ name there is a mistake, not another
    # tool's setting (those, without the prefix, are ignored).
    known = {var for spec in FIELDS for var in spec.env} | {"CCROTATE_CONFIG"}
    for key, (_, number) in entries.items():
        if key.startswith(("CCROTATE_", "CCPROXY_")) and key not in known:
            raise ConfigError(f"{path} line {number}: unknown setting {key}{_hint(key, known)}")
    return entries


def _read_config(config_path: str | os.PathLike[str] | None, env: Mapping[str, str],
                 dotenv: Mapping[str, tuple[str, int]]) -> tuple[Path | None, dict[str, object]]:
    """The config file's path and its values flattened to {"section.key": value}."""
    named = config_path or env.get("CCROTATE_CONFIG") or dotenv.get("CCROTATE_CONFIG", ("",))[0]
    if named:
        path = Path(named).expanduser()
    else:
        path = Path(env.get("XDG_CONFIG_HOME") or "~/.config").expanduser() / "ccrotate/config.toml"
        if not path.is_file():
            return None, {}
    try:
        data = tomllib.loads(_read_text(path, "config file"))
    except tomllib.TOMLDecodeError as exc:  # says line and column, never the content
        # Cut on purpose: our message already has its text, and from Python 3.14 the error
        # carries the whole file (.doc), tokens included, to whatever serialises the chain.
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None

    known = {key for spec in FIELDS for key in spec.toml}
    sections = {key.split(".")[0] for key in known}
    flat: dict[str, object] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section!r} is not a section; settings go in "
                              f"sections such as [server]{_hint(section, sections)}")
        if section not in sections:
            raise ConfigError(f"{path}: unknown section [{section}]{_hint(section, sections)}")
        for key, value in cast("dict[str, object]", table).items():
            if f"{section}.{key}" not in known:
                raise ConfigError(f"{path} [{section}] {key}: unknown setting"
                                  + _key_hint(section, key, known))
            flat[f"{section}.{key}"] = value
    for spec in FIELDS:
        if len(both := [key for key in spec.toml if key in flat]) > 1:
            raise ConfigError(f"{path}: give only one of {' and '.join(both)}")
    return path, flat
