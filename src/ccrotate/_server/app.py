"""The reference server: the library's parts composed the way a user would compose them.

``create_app(settings)`` returns a Starlette app with the proxy under ``/api``
and ``/health``; ``ccrotate serve`` runs it with uvicorn. Background services
(token refresh, hot reload, access-log flushing) run in one task group owned by
the app's lifespan.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import anyio.abc
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from ccrotate._accounts.file import AccountsFile, discover_accounts_file
from ccrotate._observe.dashboard import install_observability
from ccrotate._observe.health import health_endpoint
from ccrotate._observe.status import StatusMount, status_app, status_auth
from ccrotate._pool.pool import AccountPool
from ccrotate._proxy.app import ProxyConfig, RotatingProxy, RotationMiddleware
from ccrotate._proxy.auth import ClientAuth
from ccrotate._proxy.openai_route import OpenAIRoute
from ccrotate._proxy.record import Observer
from ccrotate._server.config import Settings
from ccrotate._tokens.refresh import TokenRefresher
from ccrotate._tokens.reload import AccountsWatcher
from ccrotate._upstream.base import Timeouts

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
        inject_identity=settings.inject_identity, relocate_system=settings.relocate_system,
        max_body_size=settings.max_body_size, body_timeout=settings.body_timeout,
        timeouts=Timeouts(connect=settings.connect_timeout, read=settings.read_timeout))
    auth = ClientAuth(settings.auth_tokens) if settings.auth_tokens else None
    # Token refresh and hot reload (see docs/tokens.md); nothing runs until the lifespan.
    refresher = TokenRefresher(pool, accounts_file, token_url=settings.oauth_token_url,
                               client_id=settings.oauth_client_id,
                               refresh_buffer=settings.refresh_buffer)
    openai = OpenAIRoute(model_aliases=settings.model_aliases)
    proxy = RotatingProxy(pool, config=config, authenticate=auth, refresher=refresher,
                          openai=openai)
    components = Components(settings=settings, pool=pool, accounts_file=accounts_file,
                            proxy=proxy, services=[refresher])
    components.extras["refresher"] = refresher
    if settings.hot_reload and accounts_file is not None:
        watcher = AccountsWatcher(pool, accounts_file, refresher=refresher)
        components.services.append(watcher)
        components.extras["watcher"] = watcher  # .last_error: why the file is not applied
    # Access log, metrics, /logs/*, /metrics and /dashboard (see docs/observability.md).
    install_observability(components)
    return components


def create_app(settings: Settings | None = None, *, pool: AccountPool | None = None,
               accounts_file: AccountsFile | None = None,
               components: Components | None = None) -> Starlette:
    """The reference server as a Starlette app (proxy at ``/api``, ``/health``, ``/status``)."""
    if components is None:
        components = build_components(settings or Settings(), pool=pool,
                                      accounts_file=accounts_file)
    c = components
    c.proxy.observers.extend(c.observers)

    read_auth, admin_auth = status_auth(c.settings.auth_tokens, c.settings.admin_token)
    watcher = c.extras.get("watcher")
    reload_error = c.extras.get("reload_error") or (
        (lambda: watcher.last_error) if watcher is not None else None)
    status = status_app(c.pool, refresher=c.extras.get("refresher") or c.proxy.refresher,
                        read_auth=read_auth, admin_auth=admin_auth, reload_error=reload_error)
    routes: list[BaseRoute] = [
        Route("/health", health_endpoint(c.pool), methods=["GET"]),
        StatusMount("/status", status),
        *c.routes,
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with _ServiceGroup(c.services):
            yield

    # /api goes to the proxy before Starlette's router sees it (the middleware also opens
    # and closes the proxy's connection pool around this lifespan): the hot path pays for
    # one prefix check, not for route matching.
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(RotationMiddleware, proxy=c.proxy, prefix="/api")])
    app.state.ccrotate = c
    return app


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
