"""Public constructors reject bad values at once, with a ConfigError naming class and field."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ccrotate import (
    AccessLog,
    Account,
    AccountKind,
    AccountPool,
    AccountsFile,
    AccountsWatcher,
    ClientAuth,
    ConfigError,
    DuckDBLogStore,
    LoggingSink,
    MemoryLogStore,
    ModelPrice,
    PricingTable,
    RefreshError,
    RoundRobin,
    Secret,
    TokenRefresher,
    logs_app,
    status_app,
)
from ccrotate._accounts.oauth import parse_token_response
from ccrotate._observe.pricing import Rates

# Distinctive fake secrets: a message that contains one has leaked it.
KEY = "sk-ant-api03-VALIDATIONkey7Qz9Wq3Lr8Vt2Yp5Kx1"
ACCESS = "sk-ant-oat01-VALIDATIONaccess8Jk2Pl5Zx9Cv3Bn"
REFRESH = "sk-ant-ort01-VALIDATIONrefresh3Hs6Dk9Fl2Gj5"
SECRETS = (KEY, ACCESS, REFRESH)


def key_account(**overrides: Any) -> Account:
    fields: dict[str, Any] = {"name": "a", "kind": AccountKind.API_KEY, "api_key": Secret(KEY)}
    return Account(**{**fields, **overrides})


def oauth_account(**overrides: Any) -> Account:
    fields: dict[str, Any] = {"name": "b", "kind": AccountKind.OAUTH,
                              "access_token": Secret(ACCESS), "refresh_token": Secret(REFRESH),
                              "expires_at": time.time() + 3600}
    return Account(**{**fields, **overrides})


def pool() -> AccountPool:
    return AccountPool([key_account()])


def refresher(**overrides: Any) -> TokenRefresher:
    kwargs: dict[str, Any] = {"token_url": "http://127.0.0.1:9/token", "client_id": "client"}
    return TokenRefresher(pool(), None, **{**kwargs, **overrides})


def rates(**overrides: float) -> Rates:
    return Rates(**{"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75,
                    **overrides})


def watcher(tmp: Path, **overrides: Any) -> AccountsWatcher:
    return AccountsWatcher(pool(), AccountsFile(tmp / "accounts.json"), **overrides)


class _NotAStrategy:
    def select(self, candidates: object, context: object) -> str:
        return "a"


# (case id, builder, the field the message must name). Each builds one bad value.
CASES: list[tuple[str, Callable[[Path], object], str]] = [
    # Secret
    ("secret-empty", lambda _: Secret(""), "Secret.value"),
    ("secret-not-str", lambda _: Secret(42), "Secret.value"),  # type: ignore[arg-type]
    ("secret-newline", lambda _: Secret(KEY + "\n"), "Secret.value"),
    ("secret-space", lambda _: Secret("sk-ant-api03 pasted"), "Secret.value"),
    # Account
    ("account-name-empty", lambda _: key_account(name=""), "Account.name"),
    ("account-name-space", lambda _: key_account(name="bad name"), "Account.name"),
    ("account-name-token", lambda _: key_account(name=KEY), "Account.name"),
    ("account-name-too-long", lambda _: key_account(name="x" * 65), "Account.name"),
    ("account-kind", lambda _: key_account(kind="api_key"), "kind"),
    ("account-key-as-str", lambda _: key_account(api_key=KEY), "api_key"),
    ("account-key-missing", lambda _: key_account(api_key=None), "api_key"),
    ("account-key-with-token", lambda _: key_account(access_token=Secret(ACCESS)),
     "access_token"),
    ("account-weight-negative", lambda _: key_account(weight=-1), "weight"),
    ("account-weight-float", lambda _: key_account(weight=1.5), "weight"),
    ("account-weight-bool", lambda _: key_account(weight=True), "weight"),
    ("account-priority-str", lambda _: key_account(priority="1"), "priority"),
    ("account-disabled-str", lambda _: key_account(disabled="no"), "disabled"),
    ("oauth-access-missing", lambda _: oauth_account(access_token=None), "access_token"),
    ("oauth-refresh-missing", lambda _: oauth_account(refresh_token=None), "refresh_token"),
    ("oauth-refresh-as-str", lambda _: oauth_account(refresh_token=REFRESH), "refresh_token"),
    ("oauth-expiry-missing", lambda _: oauth_account(expires_at=None), "expires_at"),
    ("oauth-expiry-zero", lambda _: oauth_account(expires_at=0), "expires_at"),
    ("oauth-expiry-inf", lambda _: oauth_account(expires_at=math.inf), "expires_at"),
    ("oauth-with-key", lambda _: oauth_account(api_key=Secret(KEY)), "api_key"),
    # AccountPool
    ("pool-duplicate-names", lambda _: AccountPool([key_account(), key_account()]),
     "AccountPool.accounts"),
    ("pool-not-an-account", lambda _: AccountPool([{"name": "a"}]),  # type: ignore[list-item]
     "AccountPool.accounts"),
    ("pool-cooldown-zero", lambda _: AccountPool(default_cooldown=0),
     "AccountPool.default_cooldown"),
    ("pool-cooldown-nan", lambda _: AccountPool(default_cooldown=math.nan),
     "AccountPool.default_cooldown"),
    ("pool-strategy", lambda _: AccountPool(strategy=_NotAStrategy()),  # type: ignore[arg-type]
     "AccountPool.strategy"),
    ("pool-clock", lambda _: AccountPool(clock=0.0),  # type: ignore[arg-type]
     "AccountPool.clock"),
    # TokenRefresher
    ("refresher-url", lambda _: refresher(token_url="127.0.0.1/token"),
     "TokenRefresher.token_url"),
    ("refresher-client-id", lambda _: refresher(client_id=""), "TokenRefresher.client_id"),
    ("refresher-buffer", lambda _: refresher(refresh_buffer=-1), "TokenRefresher.refresh_buffer"),
    ("refresher-margin", lambda _: refresher(margin=-0.5), "TokenRefresher.margin"),
    ("refresher-attempts", lambda _: refresher(attempts=0), "TokenRefresher.attempts"),
    ("refresher-backoff", lambda _: refresher(backoff=-1), "TokenRefresher.backoff"),
    ("refresher-timeout", lambda _: refresher(timeout=0), "TokenRefresher.timeout"),
    ("refresher-poll", lambda _: refresher(poll_interval=0), "TokenRefresher.poll_interval"),
    ("refresher-retry", lambda _: refresher(retry_interval=0), "TokenRefresher.retry_interval"),
    ("refresher-retry-cap", lambda _: refresher(retry_interval=10, retry_cap=5),
     "TokenRefresher.retry_cap"),
    # AccountsWatcher
    ("watcher-interval", lambda tmp: watcher(tmp, interval=0), "AccountsWatcher.interval"),
    # AccessLog, LoggingSink
    ("accesslog-flush", lambda _: AccessLog(flush_interval=0), "AccessLog.flush_interval"),
    ("accesslog-batch", lambda _: AccessLog(batch_size=0), "AccessLog.batch_size"),
    ("accesslog-pending", lambda _: AccessLog(max_pending=-1), "AccessLog.max_pending"),
    ("sink-level", lambda _: LoggingSink(level="INFO"),  # type: ignore[arg-type]
     "LoggingSink.level"),
    # Log stores
    ("memory-store-capacity", lambda _: MemoryLogStore(0), "MemoryLogStore.capacity"),
    ("duckdb-store-path", lambda _: DuckDBLogStore(""), "DuckDBLogStore.path"),
    # Pricing
    ("rates-negative", lambda _: rates(output=-1.0), "Rates.output"),
    ("rates-nan", lambda _: rates(cache_read=math.nan), "Rates.cache_read"),
    ("price-base", lambda _: ModelPrice({"input": 1}),  # type: ignore[arg-type]
     "ModelPrice.base"),
    ("price-threshold-alone", lambda _: ModelPrice(rates(), long_threshold=200_000),
     "ModelPrice.long_threshold"),
    ("price-threshold-zero", lambda _: ModelPrice(rates(), rates(), 0),
     "ModelPrice.long_threshold"),
    ("table-prices", lambda _: PricingTable({"m": rates()}),  # type: ignore[dict-item]
     "PricingTable.prices"),
    # ClientAuth
    ("auth-one-string", lambda _: ClientAuth(KEY), "ClientAuth.tokens"),
    ("auth-empty-key", lambda _: ClientAuth([KEY, ""]), "ClientAuth.tokens[1]"),
    ("auth-no-keys", lambda _: ClientAuth([]), "ClientAuth.tokens"),
    # status_app, logs_app
    ("status-pool", lambda _: status_app(object()),  # type: ignore[arg-type]
     "status_app.pool"),
    ("status-refresher", lambda _: status_app(pool(), refresher=object()),  # type: ignore[arg-type]
     "status_app.refresher"),
    ("status-admin-auth", lambda _: status_app(pool(), admin_auth=KEY),  # type: ignore[arg-type]
     "status_app.admin_auth"),
    ("status-read-auth", lambda _: status_app(pool(), read_auth=True),  # type: ignore[arg-type]
     "status_app.read_auth"),
    ("logs-store", lambda _: logs_app(object()),  # type: ignore[arg-type]
     "logs_routes.store"),
    ("logs-clock", lambda _: logs_app(MemoryLogStore(), clock=1.0),  # type: ignore[arg-type]
     "logs_routes.clock"),
]


@pytest.mark.parametrize(("build", "field"), [(b, f) for _, b, f in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_value_raises_config_error_naming_the_field(
        build: Callable[[Path], object], field: str, tmp_path: Path) -> None:
    """Each bad value fails at construction, naming the field, and never quoting a secret."""
    with pytest.raises(ConfigError) as caught:
        build(tmp_path)
    message = str(caught.value)
    assert field in message
    for secret in SECRETS:
        assert secret not in message
        assert secret[-12:] not in message


def test_config_error_is_a_value_error() -> None:
    """Callers catching ValueError (the usual contract for bad arguments) still catch it."""
    with pytest.raises(ValueError, match=r"Account\.name"):
        key_account(name="")


def test_bad_account_name_is_quoted_unless_it_looks_like_a_token() -> None:
    """An ordinary bad name is echoed to help; one that looks like a credential is not."""
    with pytest.raises(ConfigError, match="'bad name'"):
        key_account(name="bad name")
    with pytest.raises(ConfigError, match="65 characters"):
        key_account(name="x" * 65)


def test_valid_objects_still_build(tmp_path: Path) -> None:
    """The defaults and ordinary values pass every check."""
    acc = key_account(weight=0, priority=-3)
    assert acc.credential == Secret(KEY)
    assert acc.oauth is None
    tokens = oauth_account().oauth
    assert tokens is not None
    assert tokens.refresh_token == Secret(REFRESH)
    p = AccountPool([acc, oauth_account()], strategy=RoundRobin(), default_cooldown=0.05)
    assert p.names == ["a", "b"]
    assert refresher(refresh_buffer=0, margin=0, backoff=0, retry_cap=5.0).refresh_buffer == 0
    assert watcher(tmp_path, interval=0.02).interval == 0.02
    log = AccessLog(flush_interval=30, batch_size=2, max_pending=3,
                    sinks=[LoggingSink(level=logging.DEBUG)])
    assert log.batch_size == 2
    assert MemoryLogStore(1).capacity == 1
    price = ModelPrice(rates(), rates(input=6.0), 200_000)
    assert PricingTable({"claude-x": price}).price_for("claude-x") is price
    assert ModelPrice(rates(input=0.0)).cost(input_tokens=10) == 0.0
    assert ClientAuth(["k-one-1111"])([(b"x-api-key", b"k-one-1111")])
    assert status_app(p, admin_auth=lambda headers: False) is not None
    assert logs_app(MemoryLogStore()) is not None


def test_replace_accounts_rejects_duplicates_and_keeps_the_pool() -> None:
    """A reload with a duplicated name fails as a ConfigError and changes nothing."""
    p = AccountPool([key_account(), oauth_account()])
    with pytest.raises(ConfigError, match="'a'"):
        p.replace_accounts([key_account(), key_account(weight=2)])
    assert p.names == ["a", "b"]


def test_unusable_token_from_the_token_endpoint_is_a_refresh_error() -> None:
    """A 200 carrying a token that Secret rejects fails the refresh, without quoting it."""
    body = json.dumps({"access_token": ACCESS[:20] + " " + ACCESS[20:],
                       "refresh_token": REFRESH, "expires_in": 3600}).encode()
    with pytest.raises(RefreshError, match="unusable token") as caught:
        parse_token_response("b", 200, body)
    assert ACCESS[20:] not in str(caught.value)
