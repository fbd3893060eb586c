"""Type-checked only (pyright strict, mypy): the public API reads the way users write it."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    AccountState,
    NoAccountAvailable,
    ProxyConfig,
    RotatingProxy,
    RotationMiddleware,
    Secret,
    Timeouts,
)


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
