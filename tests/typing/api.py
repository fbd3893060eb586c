"""Type-checked only (pyright strict, mypy): the public API reads the way users write it."""

from __future__ import annotations

import httpx
import httpx2
from starlette.applications import Starlette
from starlette.middleware import Middleware

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    AccountState,
    ASGIUpstream,
    HTTPXUpstream,
    NoAccountAvailable,
    ProxyConfig,
    RotatingProxy,
    RotationMiddleware,
    Secret,
    Timeouts,
    Upstream,
)
from ccrotate.testing import FakeUpstream


def build() -> Starlette:
    pool = AccountPool([Account(name="a", kind=AccountKind.API_KEY, api_key=Secret("k"))])
    account: Account = pool.acquire()
    pool.release(account.name)
    state: AccountState = pool.status("a").state
    assert state is AccountState.AVAILABLE
    try:
        pool.acquire("a")
    except NoAccountAvailable as exc:
        wait: float | None = exc.retry_after
        del wait
    proxy = RotatingProxy(pool, config=ProxyConfig(timeouts=Timeouts(read=30.0)))
    del proxy
    return Starlette(middleware=[Middleware(RotationMiddleware, pool=pool, prefix="/api")])


def transports(pool: AccountPool) -> list[RotatingProxy]:
    """Each transport is an Upstream; the fake and Starlette apps are ASGI apps to it."""
    upstreams: list[Upstream] = [
        HTTPXUpstream(httpx.AsyncClient()),
        HTTPXUpstream(httpx2.AsyncClient()),
        HTTPXUpstream(timeouts=Timeouts(read=30.0)),
        ASGIUpstream(FakeUpstream()),
        ASGIUpstream(Starlette(), lifespan=True),
    ]
    return [RotatingProxy(pool, upstream=u) for u in upstreams]


def composition() -> None:
    """A Rotator mounts in a host app; providers and routes are typed seams."""
    from starlette.routing import Mount

    from ccrotate import (
        AccountKind,
        APIKeyProvider,
        OAuthProvider,
        OpenAIRoute,
        OutgoingRequest,
        Provider,
        Providers,
        Rotator,
        Settings,
    )

    rotator = Rotator(Settings(upstream_url="http://127.0.0.1:9"), pool=AccountPool())
    host = Starlette(routes=[Mount("/claude", app=rotator.app)], lifespan=rotator.lifespan)
    del host
    running: bool = rotator.running
    del running
    providers = Providers("https://api.anthropic.com",
                          overrides={AccountKind.API_KEY: APIKeyProvider("http://127.0.0.1:9")})
    provider: Provider = providers.for_account(
        Account(name="a", kind=AccountKind.OAUTH, access_token=Secret("t")))
    oauth: Provider = OAuthProvider("https://api.anthropic.com", identity=None)
    request = OutgoingRequest("POST", "/v1/messages", [("anthropic-version", "2023-06-01")])
    url: str = provider.url(Account(name="a", kind=AccountKind.API_KEY, api_key=Secret("k")),
                            request)
    del oauth, url
    RotatingProxy(AccountPool(), openai=OpenAIRoute(), providers=providers)
