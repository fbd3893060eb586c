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
