"""The reference server: the library's parts composed the way a user would compose them.

``create_app(settings)`` returns a Starlette app with the proxy under ``/api``
and ``/health``; ``ccrotate serve`` runs it with uvicorn. Background services
(token refresh, hot reload, access-log flushing) run in one task group owned by
the app's lifespan.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import anyio.abc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from ccrotate._accounts_file import AccountsFile, discover_accounts_file
from ccrotate._auth import ClientAuth
from ccrotate._config import Settings
from ccrotate._observe import Observer
from ccrotate._pool import AccountPool
from ccrotate._proxy import ProxyConfig, RotatingProxy
from ccrotate._state import AccountState
from ccrotate._upstream import Timeouts

__all__ = ["Components", "Service", "build_components", "create_app", "is_loopback"]


class Service(Protocol):
    """A background service run by the app's lifespan."""

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = ...) -> None: ...


@dataclass(slots=True)
class Components:
    """Everything the reference server is made of, for users who compose their own."""

    settings: Settings
    pool: AccountPool
    accounts_file: AccountsFile | None
    proxy: RotatingProxy
    services: list[Service] = field(default_factory=list)
    routes: list[BaseRoute] = field(default_factory=list)
    observers: list[Observer] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_components(settings: Settings, *, pool: AccountPool | None = None,
                     accounts_file: AccountsFile | None = None) -> Components:
    """Load the accounts and build the pool and proxy from ``settings``.

    Raises :class:`AccountsFileError` for a bad accounts file, before anything runs.
    """
    if pool is None:
        if accounts_file is None:
            accounts_file = discover_accounts_file(settings.accounts_path,
                                                   settings.credentials_path)
        pool = AccountPool(accounts_file.load(), rotation=settings.rotation_enabled,
                           default_cooldown=settings.default_cooldown)
    config = ProxyConfig(
        upstream_url=settings.upstream_url, max_attempts=settings.max_attempts,
        inject_identity=settings.inject_identity, max_body_size=settings.max_body_size,
        timeouts=Timeouts(connect=settings.connect_timeout, read=settings.read_timeout))
    auth = ClientAuth(settings.auth_tokens) if settings.auth_tokens else None
    proxy = RotatingProxy(pool, config=config, authenticate=auth)
    return Components(settings=settings, pool=pool, accounts_file=accounts_file, proxy=proxy)


def create_app(settings: Settings | None = None, *, pool: AccountPool | None = None,
               accounts_file: AccountsFile | None = None,
               components: Components | None = None) -> Starlette:
    """The reference server as a Starlette app (proxy at ``/api``, ``/health``)."""
    if components is None:
        components = build_components(settings or Settings(), pool=pool,
                                      accounts_file=accounts_file)
    c = components
    c.proxy.observers.extend(c.observers)

    async def health(request: Request) -> JSONResponse:
        return _health(c.pool)

    routes: list[BaseRoute] = [
        Mount("/api", app=c.proxy),
        Route("/health", health, methods=["GET"]),
        *c.routes,
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with c.proxy, _ServiceGroup(c.services):
            yield

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.ccrotate = c
    return app


def _health(pool: AccountPool) -> JSONResponse:
    counts = {state.value: 0 for state in AccountState}
    for status in pool.statuses():
        counts[status.state.value] += 1
    ok = counts[AccountState.AVAILABLE.value] > 0
    soonest = pool.soonest_recovery()
    body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "accounts": counts}
    if not ok and soonest is not None:
        body["retryAfter"] = max(0, round(soonest - time.time()))
    return JSONResponse(body, status_code=200 if ok else 503)


class _ServiceGroup:
    # Owns the task group of the background services for the lifespan's duration;
    # enter and exit run in the lifespan's one task, as anyio requires.

    def __init__(self, services: Sequence[Service]) -> None:
        self._services = services
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> None:
        if not self._services:
            return
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            for service in self._services:
                await self._tg.start(service.run)
        except BaseException as exc:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(type(exc), exc, exc.__traceback__)
            raise

    async def __aexit__(self, *exc: Any) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(*exc)
            self._tg = None
