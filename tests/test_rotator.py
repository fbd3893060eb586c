"""``Rotator``: one object that owns every part, starts nothing until asked, mounts anywhere.

The FastAPI and Litestar examples are imported fresh with ``CCROTATE_*`` settings pointing at
the fake upstream, served by uvicorn on loopback, and driven by the official SDK.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anthropic
import anyio
import httpx
import pytest

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    AccountsFile,
    AccountsFileError,
    ConfigError,
    HttptoolsUpstream,
    ProxyConfig,
    RotationMiddleware,
    Rotator,
    Secret,
    SelectionContext,
    Settings,
)
from ccrotate.testing import FakeUpstream, Reply, ServerHandle, serve_app

ROOT = Path(__file__).resolve().parent.parent
HELLO: Any = [{"role": "user", "content": "hello"}]


def write_accounts(path: Path, fake: FakeUpstream, *, due: bool = True) -> dict[str, Any]:
    """An API-key account and an OAuth account whose token is due for refresh."""
    key = fake.add_api_key()
    access = fake.add_access_token()
    refresh = fake.oauth.add_refresh_token()
    expires = time.time() + (60 if due else 7200)
    doc = {"version": 1, "accounts": {
        "key": {"apiKey": key},
        "sub": {"accessToken": access, "refreshToken": refresh,
                "expiresAt": round(expires * 1000)}}}
    path.write_text(json.dumps(doc))
    return doc


def settings_for(upstream: ServerHandle[FakeUpstream], path: Path, **extra: Any) -> Settings:
    return Settings(accounts_path=path, upstream_url=upstream.url,
                    oauth_token_url=upstream.url + "/v1/oauth/token",
                    credentials_path=path.parent / "none.json", **extra)


def connections(rotator: Rotator) -> int:
    """Upstream connections the rotator's (default) transport holds open."""
    assert isinstance(rotator.upstream, HttptoolsUpstream)
    return rotator.upstream.open_connections


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


async def eventually(predicate: Any, tries: int = 500) -> bool:
    for _ in range(tries):
        if predicate():
            return True
        await anyio.sleep(0.01)
    return bool(predicate())


# -- construction runs nothing -----------------------------------------------------------------

async def test_a_built_rotator_runs_nothing_and_its_app_refuses_clearly(
        upstream_server: ServerHandle[FakeUpstream], tmp_path: Path) -> None:
    """Built: no session, no task; its app answers 503 naming the fix, never half alive."""
    write_accounts(tmp_path / "accounts.json", upstream_server.app)
    rotator = Rotator(settings_for(upstream_server, tmp_path / "accounts.json"))
    assert not rotator.running
    assert connections(rotator) == 0
    transport = httpx.ASGITransport(app=rotator.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        answer = await client.post("/api/v1/messages", json={
            "model": "claude-sonnet-4-6", "max_tokens": 8, "messages": HELLO})
        status = await client.get("/status")
    assert answer.status_code == 503
    assert answer.json()["type"] == "error"
    assert "lifespan=rotator.lifespan" in answer.json()["error"]["message"]
    assert status.status_code == 503
    assert upstream_server.app.requests == []


async def test_async_with_starts_and_stops_every_part(
        upstream_server: ServerHandle[FakeUpstream], tmp_path: Path) -> None:
    """A notebook's ``async with``: the due token is refreshed, requests are logged, all closes."""
    fake = upstream_server.app
    write_accounts(tmp_path / "accounts.json", fake)
    rotator = Rotator(settings_for(upstream_server, tmp_path / "accounts.json"))
    transport = httpx.ASGITransport(app=rotator.app)
    async with rotator, httpx.AsyncClient(transport=transport,
                                          base_url="http://localhost") as client:
        assert rotator.running
        # The refresher's first pass renews the due token.
        assert await eventually(lambda: fake.oauth.refresh_count() == 1)
        answer = await client.post("/api/v1/messages", headers={"x-account-name": "key"},
                                   json={"model": "claude-sonnet-4-6", "max_tokens": 8,
                                         "messages": HELLO})
        assert answer.status_code == 200
        assert connections(rotator) == 1  # kept alive until the rotator stops
        for _ in range(500):  # the access log flushes in the background
            if (await client.get("/logs/entries")).json()["entries"]:
                break
            await anyio.sleep(0.01)
        assert (await client.get("/logs/entries")).json()["entries"][0]["account"] == "key"
        with pytest.raises(ConfigError, match="already started"):
            await rotator.__aenter__()
    assert not rotator.running
    assert connections(rotator) == 0
    saved = {a.name: a for a in AccountsFile(tmp_path / "accounts.json").load()}
    assert saved["sub"] == rotator.pool.account("sub")  # the new tokens were written back


def test_the_strategy_setting_chooses_the_pools_strategy(
        upstream_server: ServerHandle[FakeUpstream], tmp_path: Path) -> None:
    """``strategy = "first_available"`` keeps every request on the first account."""
    fake = upstream_server.app
    write_accounts(tmp_path / "accounts.json", fake, due=False)
    for strategy, expected in (("first_available", {"key"}), ("round_robin", {"key", "sub"})):
        rotator = Rotator(settings_for(upstream_server, tmp_path / "accounts.json",
                                       strategy=strategy))
        with serve_app(rotator.app) as server:
            client = anthropic.Anthropic(base_url=server.url + "/api", api_key="k",
                                         max_retries=0)
            served = {client.messages.with_raw_response.create(
                model="claude-sonnet-4-6", max_tokens=8, messages=HELLO,
            ).headers["x-ccrotate-account"] for _ in range(4)}
        assert served == expected, strategy


# -- examples: FastAPI and Litestar hosts --------------------------------------------------------

@pytest.fixture
def example_env(upstream_server: ServerHandle[FakeUpstream], tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "accounts.json"
    write_accounts(path, upstream_server.app)
    monkeypatch.setenv("CCROTATE_ACCOUNTS_PATH", str(path))
    monkeypatch.setenv("CCROTATE_UPSTREAM_URL", upstream_server.url)
    monkeypatch.setenv("CCROTATE_OAUTH_TOKEN_URL", upstream_server.url + "/v1/oauth/token")
    monkeypatch.setenv("CCROTATE_CREDENTIALS_PATH", str(tmp_path / "none.json"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no user config file is read
    return path


def fresh(module: str) -> Iterator[ModuleType]:
    sys.modules.pop(module, None)
    sys.path.insert(0, str(ROOT))
    try:
        yield importlib.import_module(module)
    finally:
        sys.path.remove(str(ROOT))
        sys.modules.pop(module, None)


@pytest.mark.parametrize("module", ["examples.fastapi_app", "examples.litestar_app"])
def test_example_host_apps_run_ccrotate_fully_under_claude(
        module: str, example_env: Path, upstream_server: ServerHandle[FakeUpstream]) -> None:
    """Mounted at /claude with the host's lifespan: proxy, refresher, access log all run."""
    pytest.importorskip(module.split(".")[1].split("_")[0])
    fake = upstream_server.app
    fake.script_any(Reply(text="through the host app"))
    for example in fresh(module):
        rotator: Rotator = example.rotator
        with serve_app(example.app, lifespan="on") as server:
            assert rotator.running
            assert wait_for(lambda: fake.oauth.refresh_count() == 1)
            client = anthropic.Anthropic(base_url=server.url + "/claude/api", api_key="k",
                                         max_retries=0)
            reply = client.messages.create(model="claude-sonnet-4-6", max_tokens=16,
                                           messages=HELLO)
            assert reply.content[0].text == "through the host app"  # type: ignore[union-attr]
            assert httpx.get(server.url + "/hello").json() == {"hello": "world"}
            assert wait_for(lambda: bool(
                httpx.get(server.url + "/claude/logs/entries").json()["entries"]))
            entries = httpx.get(server.url + "/claude/logs/entries").json()["entries"]
            assert entries[0]["status"] == 200
            status = httpx.get(server.url + "/claude/status").json()
            assert {a["name"] for a in status["accounts"]} == {"key", "sub"}
        assert not rotator.running
        assert connections(rotator) == 0


# -- seams wired through the pipeline ------------------------------------------------------------

def test_an_accounts_own_base_url_is_where_its_requests_go(
        upstream_server: ServerHandle[FakeUpstream], tmp_path: Path) -> None:
    """``baseUrl`` in the accounts file sends that account elsewhere; others use the default."""
    other = FakeUpstream()
    with serve_app(other) as elsewhere:
        key_here, key_there = upstream_server.app.add_api_key(), other.add_api_key()
        path = tmp_path / "accounts.json"
        path.write_text(json.dumps({"version": 1, "accounts": {
            "here": {"apiKey": key_here},
            "there": {"apiKey": key_there, "baseUrl": elsewhere.url + "/"}}}))
        assert AccountsFile(path).load()[1].base_url == elsewhere.url
        rotator = Rotator(settings_for(upstream_server, path))
        with serve_app(rotator.app) as server:
            for name in ("here", "there"):
                answer = httpx.post(server.url + "/api/v1/messages",
                                    headers={"x-account-name": name},
                                    json={"model": "claude-sonnet-4-6", "max_tokens": 8,
                                          "messages": HELLO})
                assert answer.status_code == 200, answer.text
    assert [r.credential for r in upstream_server.app.requests] == [key_here]
    assert [r.credential for r in other.requests] == [key_there]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "accounts": {
        "x": {"apiKey": key_here, "baseUrl": "ftp://nope"}}}))
    with pytest.raises(AccountsFileError, match="baseUrl"):
        AccountsFile(bad).load()


class ByTeamHeader:
    """A custom strategy that routes on a request header the pipeline hands it."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def select(self, candidates: Any, context: SelectionContext) -> str:
        team = context.header("X-Team")
        self.seen.append(team)
        names = [c.name for c in candidates]
        return "c" if team == "blue" and "c" in names else names[0]

    def peek(self, candidates: Any, context: SelectionContext) -> str:
        return str(candidates[0].name)

    def forget(self, names: Any) -> None:
        return None


def test_a_strategy_sees_the_request_headers(
        upstream_server: ServerHandle[FakeUpstream]) -> None:
    """The selection context carries the client's headers, read case-insensitively."""
    strategy = ByTeamHeader()
    pool = AccountPool([Account(name=n, kind=AccountKind.API_KEY,
                                api_key=Secret(upstream_server.app.add_api_key()))
                        for n in ("a", "c")], strategy=strategy)
    rotator = Rotator(Settings(upstream_url=upstream_server.url), pool=pool)
    with serve_app(rotator.app) as server:
        served = [httpx.post(server.url + "/api/v1/messages", headers={"X-Team": team},
                             json={"model": "m", "max_tokens": 8, "messages": HELLO}
                             ).headers["x-ccrotate-account"] for team in ("blue", "red")]
    assert served == ["c", "a"]
    assert strategy.seen == ["blue", "red"]


def test_the_request_deadline_bounds_every_attempt(
        upstream_server: ServerHandle[FakeUpstream]) -> None:
    """``request_timeout`` answers 504 once it passes, whatever the per-attempt timeouts say."""
    from ccrotate import RotatingProxy

    fake = upstream_server.app
    fake.script_any(Reply(delay=3.0))
    pool = AccountPool([Account(name="a", kind=AccountKind.API_KEY,
                                api_key=Secret(fake.add_api_key()))])
    proxy = RotatingProxy(pool, config=ProxyConfig(upstream_url=upstream_server.url,
                                                   request_timeout=0.3))
    with serve_app(proxy) as server:
        started = time.monotonic()
        answer = httpx.post(server.url + "/v1/messages", timeout=10,
                            json={"model": "m", "max_tokens": 8, "messages": HELLO})
        took = time.monotonic() - started
    assert answer.status_code == 504
    assert "request_timeout" in answer.json()["error"]["message"]
    assert took < 2.5  # far below the 3 s the upstream would have taken
    assert pool.status("a").in_flight == 0


# -- validation at construction ------------------------------------------------------------------

@pytest.mark.parametrize(("options", "field"), [
    ({"max_attempts": 0}, "max_attempts"),
    ({"upstream_url": "api.anthropic.com"}, "upstream_url"),
    ({"request_timeout": 0}, "request_timeout"),
    ({"max_body_size": 0}, "max_body_size"),
    ({"backoff_base": 1.0, "backoff_cap": 0.5}, "backoff_base"),
    ({"identity": "  "}, "identity"),
])
def test_proxy_config_refuses_bad_values_naming_the_field(options: dict[str, Any],
                                                          field: str) -> None:
    """A bad knob fails when built (a ValueError), not as an empty 500 later."""
    with pytest.raises(ConfigError, match=field) as caught:
        ProxyConfig(**options)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("prefix", ["api", "//api", "/a//b"])
def test_middleware_prefix_must_be_a_path(prefix: str) -> None:
    """A prefix without its leading slash would silently never match: refused."""
    from starlette.applications import Starlette

    with pytest.raises(ConfigError, match="prefix"):
        RotationMiddleware(Starlette(), pool=AccountPool(), prefix=prefix)


def test_openai_option_takes_a_translator_a_route_or_true() -> None:
    """``openai=`` accepts what its docs name; anything else is a clear error."""
    from ccrotate import OpenAIRoute, OpenAITranslator, RotatingProxy

    for option in (True, OpenAITranslator(), OpenAIRoute()):
        assert isinstance(RotatingProxy(AccountPool(), openai=option).openai, OpenAIRoute)
    assert RotatingProxy(AccountPool()).openai is None
    with pytest.raises(ConfigError, match="openai="):
        RotatingProxy(AccountPool(), openai="yes")  # type: ignore[arg-type]


def test_the_request_timeout_setting_reaches_the_proxy(tmp_path: Path) -> None:
    """``CCROTATE_REQUEST_TIMEOUT`` (like every setting) configures the rotator's proxy."""
    from ccrotate import load_settings

    settings = load_settings(env={"CCROTATE_REQUEST_TIMEOUT": "42",
                                  "CCROTATE_BODY_TIMEOUT": "7"})
    rotator = Rotator(settings, pool=AccountPool())
    assert rotator.proxy.pipeline.request_timeout == 42.0
    assert rotator.proxy.pipeline.body_timeout == 7.0
    with pytest.raises(ConfigError, match="CCROTATE_REQUEST_TIMEOUT"):
        load_settings(env={"CCROTATE_REQUEST_TIMEOUT": "0"})
