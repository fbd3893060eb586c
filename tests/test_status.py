"""The status API and /health: every route and shape, through the full reference app.

The pool reads a fixed clock (``T``), so every timestamp and duration in an answer
is exact. No token is configured unless a test says so, and the ASGI peer is
127.0.0.1, so the status routes are open (the loopback rule is tested in
test_access_control.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    AccountsFile,
    AccountState,
    InvalidGrant,
    RefreshError,
    Rotator,
    Secret,
    SelectionContext,
    Settings,
)
from ccrotate._observe.status import StatusMount, status_app
from ccrotate._tokens.refresh import TokenRefresher
from ccrotate.testing import FakeUpstream, ServerHandle, serve_app

T = 1_800_000_000.0  # 2027-01-15T08:00:00Z
KEY_ALPHA = "sk-ant-api03-STATUSalphaKEY-a1b2"
ACCESS_BETA = "sk-ant-oat01-STATUSbetaACCESS-c3d4"
REFRESH_BETA = "sk-ant-ort01-STATUSbetaREFRESH-e5f6"
ACCESS_GAMMA = "sk-ant-oat01-STATUSgammaACCESS-g7h8"
KEY_DELTA = "sk-ant-api03-STATUSdeltaKEY-i9j0"
SECRETS = (KEY_ALPHA, ACCESS_BETA, REFRESH_BETA, ACCESS_GAMMA, KEY_DELTA)
ACCOUNT_KEYS = {"name", "kind", "state", "credentialHint", "tokenExpiresAt", "tokenExpiresIn",
                "rateLimitedUntil", "lastUsed", "lastError", "requests", "failures",
                "rateLimits", "inFlight", "weight", "priority", "quota", "outReason",
                "deniedModels", "strategyPicks", "affinityPicks"}
POOL_KEYS = {"totalAccounts", "availableAccounts", "rateLimitedAccounts", "authErrorAccounts",
             "disabledAccounts", "nextAccount", "reloadError", "accounts", "affinity", "state"}


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def accounts() -> list[Account]:
    return [
        Account(name="alpha", kind=AccountKind.API_KEY, api_key=Secret(KEY_ALPHA), weight=2,
                priority=1),
        Account(name="beta", kind=AccountKind.OAUTH, access_token=Secret(ACCESS_BETA),
                refresh_token=Secret(REFRESH_BETA), expires_at=T + 3600),
        Account(name="gamma", kind=AccountKind.OAUTH, access_token=Secret(ACCESS_GAMMA),
                refresh_token=Secret("sk-ant-ort01-STATUSgammaREFRESH-k1l2"),
                expires_at=T - 60),
        Account(name="delta", kind=AccountKind.API_KEY, api_key=Secret(KEY_DELTA)),
    ]


@pytest.fixture
def pool() -> AccountPool:
    return AccountPool(accounts(), clock=lambda: T)


def components_for(pool: AccountPool, accounts_file: AccountsFile | None = None, *,
                   refresher: Any = None, **settings: Any) -> Rotator:
    # Nothing here may reach a real host: a closed loopback port for both URLs.
    dead = "http://127.0.0.1:9"
    options = {"upstream_url": dead, "oauth_token_url": dead + "/v1/oauth/token", **settings}
    return Rotator(Settings(**options), pool=pool, accounts_file=accounts_file,
                   refresher=refresher)


@contextlib.asynccontextmanager
async def client_for(rotator: Rotator) -> AsyncIterator[httpx.AsyncClient]:
    async with rotator, httpx.AsyncClient(transport=httpx.ASGITransport(app=rotator.app),
                                          base_url="http://localhost") as client:
        yield client


@pytest.fixture
async def client(pool: AccountPool) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(components_for(pool)) as c:
        yield c


def no_secrets(response: httpx.Response) -> None:
    text = response.text + repr(response.headers)
    for secret in SECRETS:
        assert secret not in text


class StubRefresher:
    """Records calls; renews ``beta`` for 8 hours or raises what it was given."""

    def __init__(self, pool: AccountPool, error: Exception | None = None) -> None:
        self.pool = pool
        self.error = error
        self.calls: list[tuple[str, str]] = []

    async def refresh(self, name: str, *, reason: str) -> Account:
        self.calls.append((name, reason))
        if self.error is not None:
            raise self.error
        renewed = self.pool.account(name).with_tokens(
            access_token="sk-ant-oat01-STATUSnewACCESS-m3n4", refresh_token=None,
            expires_at=T + 28800)
        self.pool.update_credentials(renewed)
        return renewed


# -- GET /status ----------------------------------------------------------------------------

async def test_aggregate_counts_every_state(pool: AccountPool,
                                            client: httpx.AsyncClient) -> None:
    """The aggregate counts each state, names the next account and lists all, in order."""
    pool.report_rate_limited("beta", {"retry-after": "120"})
    pool.report_auth_error("gamma", "upstream 401: Invalid bearer token")
    pool.disable("delta")
    response = await client.get("/status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == POOL_KEYS
    assert (body["totalAccounts"], body["availableAccounts"], body["rateLimitedAccounts"],
            body["authErrorAccounts"], body["disabledAccounts"]) == (4, 1, 1, 1, 1)
    assert body["nextAccount"] == "alpha"
    assert body["reloadError"] is None
    assert [a["name"] for a in body["accounts"]] == ["alpha", "beta", "gamma", "delta"]
    assert [a["state"] for a in body["accounts"]] == ["available", "rate_limited",
                                                      "auth_error", "disabled"]
    no_secrets(response)


async def test_next_account_is_what_the_pool_would_pick(pool: AccountPool,
                                                        client: httpx.AsyncClient) -> None:
    """nextAccount follows the rotation without consuming it; null when nothing can serve."""
    for _ in range(3):
        expected = pool.peek()
        assert (await client.get("/status")).json()["nextAccount"] == expected
        assert (await client.get("/status")).json()["nextAccount"] == expected  # not consumed
        pool.release(pool.acquire().name)
    for name in pool.names:
        pool.disable(name)
    assert (await client.get("/status")).json()["nextAccount"] is None


async def test_bare_and_slashed_status_paths_answer_without_redirect(
        client: httpx.AsyncClient) -> None:
    """GET /status and GET /status/ both answer 200 directly (no 307 for curl to miss)."""
    bare = await client.get("/status", follow_redirects=False)
    slashed = await client.get("/status/", follow_redirects=False)
    assert bare.status_code == slashed.status_code == 200
    assert bare.json() == slashed.json()


async def test_reload_error_is_shown(tmp_path: Path) -> None:
    """The reference server shows the watcher's last error as reloadError."""
    write_accounts(tmp_path / "accounts.json", {"alpha": {"apiKey": KEY_ALPHA}})
    file = AccountsFile(tmp_path / "accounts.json")
    components = components_for(AccountPool(file.load()), file, hot_reload=True)
    async with client_for(components) as c:
        assert components.watcher is not None
        components.watcher.last_error = "accounts.json: account 'x': bad apiKey"
        body = (await c.get("/status")).json()
    assert body["reloadError"] == "accounts.json: account 'x': bad apiKey"


# -- GET /status/accounts[/{name}] ----------------------------------------------------------

async def test_oauth_account_fields(pool: AccountPool, client: httpx.AsyncClient) -> None:
    """An OAuth account shows its expiry as ISO time and seconds left, and a masked hint."""
    pool.release(pool.acquire("beta").name)
    response = await client.get("/status/accounts/beta")
    body = response.json()
    assert set(body) == ACCOUNT_KEYS
    assert body == {
        "name": "beta", "kind": "oauth", "state": "available", "credentialHint": "…c3d4",
        "tokenExpiresAt": iso(T + 3600), "tokenExpiresIn": 3600, "rateLimitedUntil": None,
        "lastUsed": iso(T), "lastError": None, "requests": 1, "failures": 0, "rateLimits": 0,
        "inFlight": 0, "weight": 1, "priority": 0, "quota": None, "outReason": None,
        "deniedModels": [], "strategyPicks": 0, "affinityPicks": 0}  # pinned: no pick
    no_secrets(response)


async def test_api_key_and_expired_accounts(client: httpx.AsyncClient) -> None:
    """API keys have no expiry (null); an expired token shows a negative tokenExpiresIn."""
    alpha = (await client.get("/status/accounts/alpha")).json()
    assert (alpha["kind"], alpha["tokenExpiresAt"], alpha["tokenExpiresIn"]) == (
        "api_key", None, None)
    assert (alpha["weight"], alpha["priority"], alpha["credentialHint"]) == (2, 1, "…a1b2")
    gamma = (await client.get("/status/accounts/gamma")).json()
    assert gamma["tokenExpiresIn"] == -60
    assert gamma["tokenExpiresAt"] == iso(T - 60)


async def test_in_flight_is_counted(pool: AccountPool, client: httpx.AsyncClient) -> None:
    """A request in progress shows in inFlight until it is released."""
    pool.acquire("alpha")
    assert (await client.get("/status/accounts/alpha")).json()["inFlight"] == 1
    pool.release("alpha")
    assert (await client.get("/status/accounts/alpha")).json()["inFlight"] == 0


async def test_rate_limited_account_shows_until_and_quota(pool: AccountPool,
                                                         client: httpx.AsyncClient) -> None:
    """A subscription 429 shows the cooldown end, the counters and every quota window."""
    prefix = "anthropic-ratelimit-unified-"
    headers = {prefix + "status": "rejected", prefix + "reset": str(int(T + 900)),
               prefix + "representative-claim": "five_hour",
               prefix + "5h-utilization": "1.0", prefix + "5h-status": "rejected",
               prefix + "5h-reset": str(int(T + 900)), prefix + "7d-utilization": "0.42",
               prefix + "7d-status": "allowed", prefix + "7d-reset": str(int(T + 86400))}
    pool.report_rate_limited("beta", headers)
    body = (await client.get("/status/accounts/beta")).json()
    assert body["state"] == "rate_limited"
    assert body["rateLimitedUntil"] == iso(T + 900)
    assert (body["rateLimits"], body["failures"]) == (1, 1)
    assert body["lastError"] == "rate limited (429)"
    assert body["quota"] == {
        "status": "rejected", "reset": iso(T + 900), "representativeClaim": "five_hour",
        "maxUtilization": 1.0, "seenAt": iso(T),
        "windows": {"5h": {"utilization": 1.0, "status": "rejected", "reset": iso(T + 900)},
                    "7d": {"utilization": 0.42, "status": "allowed",
                           "reset": iso(T + 86400)}}}


async def test_api_key_quota_from_a_successful_answer(pool: AccountPool,
                                                     client: httpx.AsyncClient) -> None:
    """API-key rate-limit headers on a 200 become per-bucket utilisation."""
    pool.report_success("alpha", {"anthropic-ratelimit-requests-limit": "100",
                                  "anthropic-ratelimit-requests-remaining": "25",
                                  "anthropic-ratelimit-requests-reset": iso(T + 30)})
    quota = (await client.get("/status/accounts/alpha")).json()["quota"]
    assert quota["windows"] == {"requests": {"utilization": 0.75, "status": "allowed",
                                             "reset": iso(T + 30)}}
    assert quota["maxUtilization"] == 0.75
    assert quota["status"] is None


async def test_list_route_equals_the_aggregate_list(pool: AccountPool,
                                                   client: httpx.AsyncClient) -> None:
    """GET /status/accounts is the aggregate's accounts array, and each item its own route."""
    listed = (await client.get("/status/accounts")).json()
    assert listed == (await client.get("/status")).json()["accounts"]
    for item in listed:
        assert (await client.get(f"/status/accounts/{item['name']}")).json() == item


async def test_last_error_holding_a_token_is_masked(pool: AccountPool,
                                                   client: httpx.AsyncClient) -> None:
    """Should an upstream message ever echo a credential, lastError shows only its mask."""
    pool.report_auth_error("beta", f"upstream 401: bad token {ACCESS_BETA}")
    response = await client.get("/status/accounts/beta")
    assert response.json()["lastError"] == "upstream 401: bad token …c3d4"
    no_secrets(response)


# -- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/status/accounts/nobody"), ("POST", "/status/accounts/nobody/enable"),
    ("POST", "/status/accounts/nobody/disable"), ("POST", "/status/accounts/nobody/refresh")])
async def test_unknown_account_is_a_json_404(client: httpx.AsyncClient, method: str,
                                            path: str) -> None:
    """Every route names the unknown account in a JSON 404 of the documented shape."""
    response = await client.request(method, path)
    assert response.status_code == 404
    assert response.json() == {"error": {"type": "not_found_error",
                                         "message": "no account named 'nobody' in the pool"}}


async def test_unknown_route_and_wrong_method_are_json(client: httpx.AsyncClient) -> None:
    """A missing route is a JSON 404; a wrong method a JSON 405 with Allow."""
    missing = await client.get("/status/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    wrong = await client.get("/status/accounts/alpha/disable")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert set(wrong.json()) == {"error"}
    posted = await client.post("/status/accounts")
    assert posted.status_code == 405


# -- enable / disable -----------------------------------------------------------------------

async def test_disable_then_enable(pool: AccountPool, client: httpx.AsyncClient) -> None:
    """disable takes the account out of rotation; enable puts it back; each answers the view."""
    off = await client.post("/status/accounts/alpha/disable")
    assert off.status_code == 200
    assert off.json()["action"] == "disable"
    assert off.json()["account"]["state"] == "disabled"
    assert off.json()["account"]["lastError"] == "disabled by operator"
    picked = {pool.acquire().name for _ in range(6)}
    assert "alpha" not in picked
    on = await client.post("/status/accounts/alpha/enable")
    assert on.json() == {"action": "enable", "account": (await client.get(
        "/status/accounts/alpha")).json()}
    assert on.json()["account"]["state"] == "available"


async def test_actions_are_logged_with_the_peer_not_the_key(
        pool: AccountPool, caplog: pytest.LogCaptureFixture) -> None:
    """Each action leaves an INFO line naming the action, account and peer address, no key."""
    admin = "adm-STATUSaudit-q5r6"
    async with client_for(components_for(pool, admin_token=admin)) as c:
        caplog.set_level(logging.INFO, logger="ccrotate.status")
        await c.post("/status/accounts/alpha/disable", headers={"x-api-key": admin})
    assert "disable of account 'alpha' requested by 127.0.0.1" in caplog.text
    assert "STATUSaudit" not in caplog.text


async def test_enable_clears_every_state_including_auth_error(
        pool: AccountPool, client: httpx.AsyncClient) -> None:
    """An operator's enable is a reset: a disabled account with refused credentials serves
    again (a wrong login shows up at its next request), and its last error is cleared."""
    pool.report_auth_error("gamma", "upstream 401")
    await client.post("/status/accounts/gamma/disable")
    body = (await client.post("/status/accounts/gamma/enable")).json()
    assert body["account"]["state"] == "available"
    assert pool.status("gamma").last_error is None


def write_accounts(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    path.write_bytes(msgspec.json.encode({"version": 1, "accounts": entries}))


async def test_admin_choice_survives_reloads_of_the_accounts_file(tmp_path: Path) -> None:
    """Disabled (or enabled) by an operator stays so across hot reloads, whatever the file says."""
    path = tmp_path / "accounts.json"
    write_accounts(path, {"alpha": {"apiKey": KEY_ALPHA},
                          "delta": {"apiKey": KEY_DELTA, "disabled": True}})
    file = AccountsFile(path)
    pool = AccountPool(file.load(), clock=lambda: T)
    components = components_for(pool, file, hot_reload=True)
    watcher = components.watcher
    await watcher.check()
    async with client_for(components) as c:
        assert (await c.get("/status/accounts/delta")).json()["state"] == "disabled"
        await c.post("/status/accounts/alpha/disable")
        await c.post("/status/accounts/delta/enable")
        write_accounts(path, {"alpha": {"apiKey": "sk-ant-api03-STATUSrotated-z9y8",
                                        "weight": 5, "disabled": False},
                              "delta": {"apiKey": KEY_DELTA, "disabled": True}})
        result = await watcher.check()
        assert result is not None
        assert result.changed == ("alpha",)
        alpha = (await c.get("/status/accounts/alpha")).json()
        delta = (await c.get("/status/accounts/delta")).json()
        assert (await c.get("/status")).json()["reloadError"] is None
    assert (alpha["state"], alpha["weight"], alpha["credentialHint"]) == ("disabled", 5, "…z9y8")
    assert delta["state"] == "available"


async def test_a_broken_accounts_file_shows_as_reload_error(tmp_path: Path) -> None:
    """The hot-reload watcher's last error is the aggregate's reloadError, without secrets."""
    path = tmp_path / "accounts.json"
    write_accounts(path, {"alpha": {"apiKey": KEY_ALPHA}})
    file = AccountsFile(path)
    pool = AccountPool(file.load(), clock=lambda: T)
    components = components_for(pool, file, hot_reload=True)
    watcher = components.watcher
    await watcher.check()
    path.write_text('{"version": 1, "accounts": {"alpha": {"apiKey": 12345678901}}}')
    await watcher.check()
    async with client_for(components) as c:
        response = await c.get("/status")
    error = response.json()["reloadError"]
    assert error is not None
    assert "alpha" in error
    assert "12345678901" not in error
    assert response.json()["accounts"][0]["state"] == "available"  # last good set kept


# -- refresh --------------------------------------------------------------------------------

async def test_refresh_answers_the_new_expiry_never_the_token(pool: AccountPool) -> None:
    """A forced refresh goes through the rotator's refresher and answers the new expiry only."""
    refresher = StubRefresher(pool)
    components = components_for(pool, refresher=refresher)
    async with client_for(components) as c:
        response = await c.post("/status/accounts/beta/refresh")
    assert response.status_code == 200
    body = response.json()
    assert body["action"] == "refresh"
    assert body["account"]["tokenExpiresAt"] == iso(T + 28800)
    assert body["account"]["tokenExpiresIn"] == 28800
    assert body["account"]["credentialHint"] == "…m3n4"
    assert refresher.calls == [("beta", "forced by operator")]
    assert "STATUSnewACCESS" not in response.text
    no_secrets(response)


async def test_refresh_of_an_api_key_account_is_409(pool: AccountPool) -> None:
    """An API-key account has nothing to refresh: 409, and the refresher is not called."""
    refresher = StubRefresher(pool)
    components = components_for(pool, refresher=refresher)
    async with client_for(components) as c:
        response = await c.post("/status/accounts/alpha/refresh")
    assert response.status_code == 409
    assert "not an OAuth account" in response.json()["error"]["message"]
    assert refresher.calls == []


async def test_refresh_without_a_refresher_is_501(pool: AccountPool) -> None:
    """With no refresher wired the route says refresh is unavailable, as JSON."""
    app = StatusMount("/status", status_app(pool))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=Starlette(routes=[app])),
                                 base_url="http://localhost") as c:
        response = await c.post("/status/accounts/beta/refresh")
    assert response.status_code == 501
    assert response.json()["error"]["type"] == "refresh_unavailable"


@pytest.mark.parametrize(("error", "status", "type_"), [
    (InvalidGrant("beta", f"refresh token {REFRESH_BETA} is dead"), 409, "invalid_grant"),
    (RefreshError("beta", f"token endpoint 503 for {REFRESH_BETA}"), 502, "refresh_failed"),
])
async def test_refresh_failures_are_reported_masked(pool: AccountPool, error: Exception,
                                                   status: int, type_: str) -> None:
    """A dead grant is 409, any other refresh failure 502; tokens in the message are masked."""
    components = components_for(pool, refresher=StubRefresher(pool, error))
    async with client_for(components) as c:
        response = await c.post("/status/accounts/beta/refresh")
    assert response.status_code == status
    assert response.json()["error"]["type"] == type_
    assert "…e5f6" in response.json()["error"]["message"]
    no_secrets(response)


@pytest.fixture
def oauth_upstream(fake_upstream: FakeUpstream) -> Iterator[ServerHandle[FakeUpstream]]:
    with serve_app(fake_upstream) as handle:
        yield handle


async def test_refresh_with_the_real_refresher_against_the_fake_oauth(
        pool: AccountPool, oauth_upstream: ServerHandle[FakeUpstream]) -> None:
    """TokenRefresher wired in: one token request, new expiry answered, tokens nowhere."""
    fake = oauth_upstream.app
    fake.oauth.add_refresh_token(REFRESH_BETA)
    refresher = TokenRefresher(pool, None, token_url=oauth_upstream.url + "/v1/oauth/token",
                               client_id=Settings().oauth_client_id, clock=lambda: T)
    components = components_for(pool, refresher=refresher)
    async with client_for(components) as c:
        response = await c.post("/status/accounts/beta/refresh")
        again = await c.post("/status/accounts/beta/refresh")  # the old grant is gone now
    assert response.status_code == 200, response.text
    assert fake.oauth.refresh_count(REFRESH_BETA) == 1
    renewed = pool.account("beta")
    assert renewed.access_token != Secret(ACCESS_BETA)
    assert renewed.expires_at is not None
    assert response.json()["account"]["tokenExpiresIn"] == round(renewed.expires_at - T)
    assert response.json()["account"]["tokenExpiresIn"] > 3600
    for token in (renewed.access_token, renewed.refresh_token):
        assert token is not None
        assert token.reveal() not in response.text
    no_secrets(response)
    assert again.status_code == 200  # the rotated refresh token is used, not the dead one


# -- /health --------------------------------------------------------------------------------

async def test_health_is_200_while_an_account_can_serve(pool: AccountPool,
                                                       client: httpx.AsyncClient) -> None:
    """One available account is enough for 200 and a short count summary."""
    for name in ("beta", "gamma", "delta"):
        pool.disable(name)
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"totalAccounts": 4, "availableAccounts": 1,
                               "rateLimitedAccounts": 0, "authErrorAccounts": 0,
                               "disabledAccounts": 3, "status": "ok", "retryAfter": None,
                               "state": None}
    assert (await client.head("/health")).status_code == 200
    no_secrets(response)


async def test_health_is_503_with_retry_after_when_all_are_cooling(
        pool: AccountPool, client: httpx.AsyncClient) -> None:
    """Nothing can serve: 503, and Retry-After names when the soonest account is back."""
    for name, wait in (("alpha", 300), ("beta", 90), ("gamma", 600)):
        pool.report_rate_limited(name, {"retry-after": str(wait)})
    pool.report_auth_error("delta", "upstream 401")
    response = await client.get("/health")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "90"
    body = response.json()
    assert (body["status"], body["retryAfter"], body["rateLimitedAccounts"]) == (
        "unavailable", 90, 3)


async def test_health_is_503_without_retry_after_when_nothing_comes_back(
        pool: AccountPool, client: httpx.AsyncClient) -> None:
    """All disabled or broken: 503 without Retry-After, since no account recovers by itself."""
    for name in pool.names:
        pool.disable(name)
    response = await client.get("/health")
    assert response.status_code == 503
    assert "retry-after" not in response.headers
    assert response.json()["retryAfter"] is None
    empty = AccountPool([], clock=lambda: T)
    async with client_for(components_for(empty)) as c:
        assert (await c.get("/health")).status_code == 503


# -- mounting it elsewhere ------------------------------------------------------------------

async def test_status_app_mounts_in_any_starlette_app(pool: AccountPool) -> None:
    """A user's app can mount it anywhere; StatusMount also answers the bare path."""
    app = Starlette(routes=[StatusMount("/ops/pool", status_app(pool)),
                            Mount("/plain", app=status_app(pool))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        bare = await c.get("/ops/pool")
        one = await c.get("/ops/pool/accounts/beta")
        plain = await c.get("/plain/accounts")
        acted = await c.post("/plain/accounts/alpha/disable")
    assert bare.status_code == 200
    assert bare.json()["totalAccounts"] == 4
    assert one.json()["name"] == "beta"
    assert plain.status_code == 200
    assert acted.status_code == 200
    assert pool.status("alpha").state is AccountState.DISABLED
    assert math.isclose(T, pool.now())


async def test_status_says_why_each_account_is_not_serving(pool: AccountPool,
                                                            client: httpx.AsyncClient) -> None:
    """out_reason per account (from the taxonomy), refused models, picks and affinity."""
    from ccrotate._pool.taxonomy import classify

    spend_cap = classify(429, {}, ("rate_limit_error", "cap", "enforced_spend_limit_reached"),
                         kind=AccountKind.OAUTH, now=T)
    pool.report("beta", spend_cap)
    pool.report("delta", classify(529, {}, ("overloaded_error", "Overloaded", None),
                                  kind=AccountKind.API_KEY, now=T))
    pool.report("alpha", classify(403, {}, ("permission_error", "no opus", None),
                                  kind=AccountKind.API_KEY, now=T), model="claude-opus-4-8")
    pool.disable("gamma")
    pool.acquire(context=SelectionContext(session_key="s"))
    body = (await client.get("/status")).json()
    why = {a["name"]: a["outReason"] for a in body["accounts"]}
    assert why == {"alpha": None, "beta": "spend_cap", "delta": "overloaded",
                   "gamma": "disabled"}
    alpha = next(a for a in body["accounts"] if a["name"] == "alpha")
    assert alpha["deniedModels"] == ["claude-opus-4-8"]
    assert alpha["strategyPicks"] == 1
    assert body["affinity"] == {"hit": 0, "miss": 1, "rebind": 0}
    delta = next(a for a in body["accounts"] if a["name"] == "delta")
    assert delta["state"] == "backing_off"
    assert delta["rateLimitedUntil"] is not None
