"""Shared fixtures of the proxy tests: three accounts, a fake clock, and the served stack.

``proxy_server`` is the usual entry point: the fake Anthropic upstream and a
:class:`RotatingProxy` in front of it, each served by uvicorn on a loopback port.
Accounts ``a`` and ``c`` are API keys, ``b`` is an OAuth (subscription) account;
the pool rotates ``a, b, c`` in that order and reads time from ``clock``, so a
test ends a cooldown with ``clock.advance(...)`` instead of sleeping.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from anthropic.types import MessageParam

from _redis import RedisServer
from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    ProxyConfig,
    RotatingProxy,
    Rotator,
    Secret,
    Settings,
)
from ccrotate._asgi import ASGIApp, Message, Receive, Scope, Send
from ccrotate._cli.serve import uvicorn_options
from ccrotate.testing import FakeUpstream, ServerHandle, serve_app

KEY_A = "sk-ant-api03-test-aaaa-0001"
TOKEN_B = "sk-ant-oat01-test-bbbb-0002"
KEY_C = "sk-ant-api03-test-cccc-0003"
CREDENTIALS = {"a": KEY_A, "b": TOKEN_B, "c": KEY_C}
ACCOUNT_OF = {v: k for k, v in CREDENTIALS.items()}
MODEL = "claude-sonnet-4-6"
HELLO: list[MessageParam] = [{"role": "user", "content": "hello"}]


class FakeClock:
    """An epoch-seconds clock that only moves when told to (starts at real time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_accounts() -> list[Account]:
    """``a`` (API key), ``b`` (OAuth, valid for an hour), ``c`` (API key)."""
    return [
        Account(name="a", kind=AccountKind.API_KEY, api_key=Secret(KEY_A)),
        Account(name="b", kind=AccountKind.OAUTH, access_token=Secret(TOKEN_B),
                refresh_token=Secret("sk-ant-ort01-test-bbbb-0002"),
                expires_at=time.time() + 3600),
        Account(name="c", kind=AccountKind.API_KEY, api_key=Secret(KEY_C)),
    ]


def fast_config(upstream_url: str, **overrides: Any) -> ProxyConfig:
    """A :class:`ProxyConfig` with near-zero failover backoff, so tests stay quick."""
    options: dict[str, Any] = {"backoff_base": 0.001, "backoff_cap": 0.005, **overrides}
    return ProxyConfig(upstream_url=upstream_url, **options)


@dataclass
class Stack:
    """The served fake upstream and proxy of one test."""

    fake: FakeUpstream
    upstream: ServerHandle[FakeUpstream]
    pool: AccountPool
    proxy: RotatingProxy
    server: ServerHandle[Any]
    clock: FakeClock

    @property
    def url(self) -> str:
        """Where clients point (``base_url`` of the SDK)."""
        return self.server.url

    def in_flight(self) -> dict[str, int]:
        return {s.name: s.in_flight for s in self.pool.statuses()}

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no account has a request in flight (the proxy runs in another thread)."""
        deadline = time.monotonic() + timeout
        while any(self.in_flight().values()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pool(clock: FakeClock) -> AccountPool:
    return AccountPool(make_accounts(), clock=clock)


@pytest.fixture
def upstream_server(fake_upstream: FakeUpstream) -> Iterator[ServerHandle[FakeUpstream]]:
    with serve_app(fake_upstream) as handle:
        yield handle


@pytest.fixture
def serve_proxy(upstream_server: ServerHandle[FakeUpstream], pool: AccountPool,
                clock: FakeClock) -> Iterator[Any]:
    """A factory: ``serve_proxy(**ProxyConfig options)`` serves a proxy and returns its Stack."""
    with contextlib.ExitStack() as stack:

        def make(*, app: Any = None, upstream_url: str | None = None,
                 **config: Any) -> Stack:
            proxy = RotatingProxy(pool, config=fast_config(
                upstream_url or upstream_server.url, **config))
            server = stack.enter_context(serve_app(app(proxy) if app else proxy))
            return Stack(upstream_server.app, upstream_server, pool, proxy, server, clock)

        yield make


@pytest.fixture
def proxy_server(serve_proxy: Any) -> Stack:
    """The fake upstream and a default proxy in front of it, both served on loopback."""
    stack: Stack = serve_proxy()
    return stack


CLIENT_TOKEN = "ccrotate-client-token-for-real-clients"
"""The client key the guarded reference server demands (``CCROTATE_AUTH_TOKEN``)."""


@dataclass
class SeenRequest:
    """A request head as the client sent it to the server, and the status it got."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    status: int | None = None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def __repr__(self) -> str:  # no client key in assertion messages
        shown = tuple((k, "<secret>" if k in ("x-api-key", "authorization") else v)
                      for k, v in self.headers)
        return (f"SeenRequest({self.method} {self.path}?{self.query} -> {self.status}, "
                f"{shown!r})")


class HeadRecorder:
    """The outermost ASGI layer: records each request head and the status answered, then
    hands the request on untouched (the guard still sees exactly what the client sent)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[SeenRequest] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = SeenRequest(scope["method"], scope["path"], scope["query_string"].decode(),
                           tuple((k.decode("latin-1"), v.decode("latin-1"))
                                 for k, v in scope["headers"]))
        self.seen.append(seen)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen.status = message["status"]
            await send(message)

        await self.app(scope, receive, sending)


@dataclass
class GuardedStack:
    """The reference app as ``ccrotate serve`` runs it (``Rotator(settings).app`` under
    ``uvicorn_options(settings)``: Host/Origin guard, 415, head deadline, connection cap)
    with a client token, in front of the served fake upstream."""

    fake: FakeUpstream
    rotator: Rotator
    server: ServerHandle[Any]
    recorder: HeadRecorder

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def seen(self) -> list[SeenRequest]:
        """What clients sent, in arrival order."""
        return self.recorder.seen

    def refused(self) -> list[SeenRequest]:
        """Every request answered with an error status."""
        return [s for s in self.seen if s.status is None or s.status >= 400]


@pytest.fixture
def serve_guarded(upstream_server: ServerHandle[FakeUpstream],
                  pool: AccountPool) -> Iterator[Any]:
    """A factory: ``serve_guarded(**Settings options)`` serves the guarded reference app
    over the ``a, b, c`` pool with ``CLIENT_TOKEN`` required, and returns its GuardedStack."""
    with contextlib.ExitStack() as stack:

        def make(**options: Any) -> GuardedStack:
            settings = Settings(**{
                "auth_tokens": (CLIENT_TOKEN,), "hot_reload": False,
                "upstream_url": upstream_server.url,
                "oauth_token_url": upstream_server.url + "/v1/oauth/token", **options})
            rotator = Rotator(settings, pool=pool)
            recorder = HeadRecorder(rotator.app)
            server = stack.enter_context(serve_app(recorder, **uvicorn_options(settings)))
            return GuardedStack(upstream_server.app, rotator, server, recorder)

        yield make


@contextlib.contextmanager
def serve_replicas(upstream: ServerHandle[FakeUpstream],
                   **settings: Any) -> Iterator[list[tuple[Rotator, str]]]:
    """Two reference servers, ``one`` and ``two``, each with one API-key account of its own
    named after it (own pools, own processes' worth of state), in front of ``upstream``."""
    fake = upstream.app
    with contextlib.ExitStack() as stack:
        served = []
        for name in ("one", "two"):
            pool = AccountPool([Account(name=name, kind=AccountKind.API_KEY,
                                        api_key=Secret(fake.add_api_key()))])
            rotator = Rotator(Settings(upstream_url=upstream.url, hot_reload=False,
                                       **settings), pool=pool)
            served.append((rotator, stack.enter_context(serve_app(rotator.app)).url))
        yield served


def pytest_configure(config: pytest.Config) -> None:
    # Registered here as well as in pyproject, so --strict-markers accepts it either way.
    config.addinivalue_line("markers", "claude_code: runs the real Claude Code CLI "
                            "(opt-in: CCROTATE_TEST_CLAUDE_CODE=1)")


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})


@pytest.fixture(autouse=True)
def _no_network_beyond_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in the suite may reach a real host (api.anthropic.com, platform.claude.com):
    name resolution of anything but loopback fails at once, in every thread."""
    import ipaddress
    import socket

    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in _LOOPBACK_NAMES:
            try:
                loopback = ipaddress.ip_address(name).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise socket.gaierror(socket.EAI_NONAME, f"tests may not resolve {name!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


def _sample(name: str) -> Path:
    # shared/ sits beside the clone (CI's copy) or at the workplace's own path.
    here = Path(__file__).resolve().parents[2] / "shared" / "samples" / name
    return here if here.exists() else Path("/work/shared/samples") / name


CLAUDE_CODE_SAMPLE = _sample("claude-code-2.1.197-request.json")
"""A real Claude Code 2.1.197 request, captured (../shared/samples)."""


# -- PostgreSQL (the shared access log) ------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One real PostgreSQL server for the session (skips when the binaries are missing)."""
    pytest.importorskip("psycopg")
    from pgserver import running_server

    with running_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: Any) -> str:
    """The URL of a fresh, empty database on the session's server (one per test)."""
    import uuid

    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url: str = postgres_server.url.rsplit("/", 1)[0] + "/" + name
    return url


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, killed after the test (skips without one)."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
