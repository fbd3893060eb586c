"""``Rotator``: one typed object that owns every part and mounts anywhere.

Building a :class:`Rotator` loads the accounts and wires the pool, the
upstream, the token refresher, the accounts watcher, the access log and the
metrics, and starts nothing. ``async with rotator:`` (or the host app's
``lifespan=rotator.lifespan``) opens the upstream and runs the background
services in one task group; leaving it stops them. ``rotator.app`` is the
ASGI app ``ccrotate serve`` serves; used before the rotator is started it
answers a clear 503 rather than running half alive.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from ccrotate._accounts.file import AccountsFile, discover_accounts_file
from ccrotate._accounts.model import Account
from ccrotate._asgi import ASGIApp, Receive, Scope, Send, send_bytes, serve_lifespan
from ccrotate._exceptions import ConfigError
from ccrotate._observe.accesslog import AccessLog, LogSink
from ccrotate._observe.dashboard import dashboard_endpoint, either
from ccrotate._observe.health import health_endpoint
from ccrotate._observe.logs_api import ReadGuard, logs_app
from ccrotate._observe.logstore import LogStore, open_store
from ccrotate._observe.pgstore import PostgresLogStore
from ccrotate._observe.pricing import PricingTable
from ccrotate._observe.status import ForceRefresher, StatusMount, status_app, status_auth
from ccrotate._pool.pool import AccountPool
from ccrotate._pool.strategy import strategy_named
from ccrotate._proxy.app import ProxyConfig, RotatingProxy, RotationMiddleware
from ccrotate._proxy.attempts import Refresher
from ccrotate._proxy.auth import ClientAuth
from ccrotate._proxy.dialects.openai.route import OpenAIRoute
from ccrotate._proxy.record import Observer
from ccrotate._sdk.app import SDKApp
from ccrotate._sdk.config import SDKConfig
from ccrotate._server.config import Settings
from ccrotate._server.guard import RequestGuard
from ccrotate._state.backend import MemoryStateBackend, StateBackend
from ccrotate._state.sync import StateSync
from ccrotate._tokens.refresh import TokenRefresher
from ccrotate._tokens.reload import AccountsWatcher
from ccrotate._upstream.aiohttp_transport import AiohttpUpstream
from ccrotate._upstream.base import Timeouts, Upstream
from ccrotate._upstream.httptools_transport import HttptoolsUpstream
from ccrotate._wire import error_body

if TYPE_CHECKING:  # prometheus_client is an optional extra
    from ccrotate._observe.metrics import PrometheusMetrics

__all__ = ["Rotator", "Service"]

log = logging.getLogger("ccrotate")

_NOT_STARTED = error_body(
    "api_error", "ccrotate: this Rotator is not running. Pass lifespan=rotator.lifespan to "
    "your FastAPI, Litestar or Starlette app, or enter `async with rotator:` first.")


class Service(Protocol):
    """A background service the rotator runs while it is started."""

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = ...) -> None:
        """Run until cancelled; call ``task_status.started()`` once ready."""
        ...


class _RefresherLike(Refresher, ForceRefresher, Protocol):
    """What the rotator needs of a refresher: the proxy's, the status API's, the watcher's."""

    def overlay(self, accounts: list[Account]) -> list[Account]:
        """The accounts with tokens refreshed since the file was read."""
        ...


class Rotator:
    """The whole of ccrotate as one object: pool, upstream, refresher, watcher, log, metrics.

    Parameters:
        settings: the :class:`Settings` (defaults, environment and config file are read
            by :func:`load_settings`; ``Settings()`` is the plain defaults).
        upstream: the transport; by default the one ``settings.upstream_client`` names
            (:class:`HttptoolsUpstream`, :class:`AiohttpUpstream` or :class:`HTTPXUpstream`),
            or pass any, such as an :class:`ASGIUpstream`.
        pool: an :class:`AccountPool` to use instead of loading the accounts file.
        accounts_file: the file to load (and write refreshed tokens back to); by default
            the one the settings name, or the Claude CLI's login.
        refresher: a token refresher to use instead of the default :class:`TokenRefresher`.
        state: where the state shared by replicas lives; by default a
            :class:`RedisStateBackend` when ``settings.state_url`` is set, else a
            :class:`MemoryStateBackend` (this process only, never asked per request).
        access_sinks: where the access log's lines go besides its store; by default one
            :class:`LoggingSink` (``ccrotate serve`` gives a :class:`StreamSink` to stderr).

    Raises :class:`AccountsFileError` for a bad accounts file and
    :class:`ConfigError` for bad settings, before anything runs.

    Use it as ``async with Rotator(settings) as rotator:`` in a script or notebook,
    mount ``rotator.app`` in a host app that passes ``lifespan=rotator.lifespan``,
    or serve ``rotator.app`` directly (its own lifespan starts it).
    """

    def __init__(self, settings: Settings | None = None, *, upstream: Upstream | None = None,
                 pool: AccountPool | None = None, accounts_file: AccountsFile | None = None,
                 refresher: _RefresherLike | None = None,
                 state: StateBackend | None = None,
                 access_sinks: Sequence[LogSink] | None = None) -> None:
        self.settings = settings = settings or Settings()
        if pool is None:
            if accounts_file is None:
                accounts_file = discover_accounts_file(settings.accounts_path,
                                                       settings.credentials_path)
            pool = _pool_from(settings, accounts_file)
        self.pool = pool
        self.accounts_file = accounts_file
        self.config = _proxy_config(settings)
        self.upstream: Upstream = upstream or _upstream_for(settings, self.config.timeouts)
        self.state: StateBackend = state if state is not None else _state_backend(settings)
        self.sync: StateSync | None = StateSync(
            pool, self.state, affinity_ttl=settings.affinity_ttl) if self.state.shared else None
        self.refresher: _RefresherLike = refresher or TokenRefresher(
            pool, accounts_file, token_url=settings.oauth_token_url,
            client_id=settings.oauth_client_id, refresh_buffer=settings.refresh_buffer,
            state=self.state)
        if self.sync is not None and isinstance(self.refresher, TokenRefresher):
            self.sync.token_listeners.append(self.refresher.adopt_shared)
        self.watcher: AccountsWatcher | None = None
        if settings.hot_reload and accounts_file is not None:
            self.watcher = AccountsWatcher(pool, accounts_file, refresher=self.refresher)
        self.pricing = PricingTable.load(settings.pricing_path)
        self.access_log = AccessLog(store=_log_store(settings), sinks=access_sinks,
                                    pricing=self.pricing)
        self.metrics: PrometheusMetrics | None = _metrics(pool, self.pricing, self.refresher)
        if self.metrics is not None:
            self.metrics.attach_access_log(self.access_log)
        observers: list[Observer] = [self.access_log]
        if self.metrics is not None:
            observers.append(self.metrics)
            self.metrics.attach_state(self.state)
        self.openai = OpenAIRoute(model_aliases=settings.model_aliases)
        authenticate = ClientAuth(settings.auth_tokens) if settings.auth_tokens else None
        self.proxy = RotatingProxy(
            pool, config=self.config, refresher=self.refresher, observers=observers,
            authenticate=authenticate, openai=self.openai, upstream=self.upstream, sync=self.sync)
        self.sdk: SDKApp | None = None
        """SDK mode (mounted at ``/sdk``), unless ``sdk_enabled`` is off."""
        if settings.sdk_enabled:
            self.sdk = SDKApp(pool, config=sdk_config(settings), refresher=self.refresher,
                              authenticate=authenticate, observers=observers,
                              translator=self.openai.translator,
                              max_body_size=settings.max_body_size,
                              body_timeout=settings.body_timeout)
        self._app: _RotatorApp | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._running = False

    @property
    def services(self) -> list[Service]:
        """The background services started with the rotator, in start order."""
        services: list[Service] = []
        if self.sync is not None:
            # First: the shared tokens and holds are in before anything refreshes or serves.
            services.append(self.sync)
        if isinstance(self.refresher, TokenRefresher):
            services.append(self.refresher)
        if self.watcher is not None:
            services.append(self.watcher)
        services.append(self.access_log)
        if self.sdk is not None:
            services.append(self.sdk)
        return services

    @property
    def running(self) -> bool:
        """Whether the rotator is started (its app serves requests)."""
        return self._running

    @property
    def app(self) -> ASGIApp:
        """The ASGI app: the proxy at ``/api``, SDK mode at ``/sdk``, ``/health``,
        ``/status``, ``/logs``, ``/dashboard`` and ``/metrics`` (with
        ``prometheus_client``). Built once."""
        if self._app is None:
            self._app = _RotatorApp(self, self._routes())
        return self._app

    def _routes(self) -> list[BaseRoute]:
        s = self.settings
        read_auth, admin_auth = status_auth(s.auth_tokens, s.admin_token)
        watcher = self.watcher
        status = status_app(self.pool, refresher=self.refresher, read_auth=read_auth,
                            admin_auth=admin_auth,
                            reload_error=(lambda: watcher.last_error) if watcher else None,
                            state=self.state)
        authorize = either(read_auth, admin_auth)
        routes: list[BaseRoute] = [
            Route("/health", health_endpoint(self.pool, state=self.state), methods=["GET"]),
            StatusMount("/status", status),
            Mount("/logs", app=ReadGuard(logs_app(self.access_log.store), authorize=authorize)),
            Route("/dashboard", dashboard_endpoint(), methods=["GET"]),
        ]
        if self.sdk is not None:
            routes.append(Mount("/sdk", app=self.sdk))
        if self.metrics is not None:
            routes.append(Route("/metrics", ReadGuard(self.metrics.app, authorize=authorize),
                                methods=["GET", "HEAD"]))
        return routes

    async def __aenter__(self) -> Rotator:
        if self._running or self._tg is not None:
            raise ConfigError("this Rotator is already started; start it once (either "
                              "`async with rotator` or the host app's lifespan)")
        background = _opens_in_background(self.upstream)
        if not background:
            await self.upstream.start()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            if background:
                # aiohttp's import (~0.15 s) need not hold up the server's start: it runs
                # in a thread beside the services, and a request arriving meanwhile waits
                # for the same opening (AiohttpUpstream.start).
                tg.start_soon(_open_upstream, self.upstream)
            for service in self.services:
                await tg.start(service.run)
        except BaseException as exc:
            tg.cancel_scope.cancel()
            self._tg = None
            try:
                await tg.__aexit__(type(exc), exc, exc.__traceback__)
            finally:
                await self.upstream.aclose()
            raise
        self._running = True
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: Any) -> None:
        self._running = False
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The body of ``async with rotator`` runs inside the services' task group;
            # its own exception comes back wrapped. Hand it back as it was raised.
            if exc is None or list(group.exceptions) != [exc]:
                raise
        finally:
            await self.upstream.aclose()

    def lifespan(self, app: object = None) -> contextlib.AbstractAsyncContextManager[None]:
        """A lifespan context for the host app: ``FastAPI(lifespan=rotator.lifespan)``,
        ``Litestar(lifespan=[rotator.lifespan])``, ``Starlette(lifespan=rotator.lifespan)``."""
        return self._lifespan()

    @contextlib.asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        # Entered and left in the host's one lifespan task, as anyio's task group needs.
        async with self:
            yield


def _opens_in_background(upstream: Upstream) -> bool:
    # Only the default transport has a slow first start, and only until aiohttp is
    # imported; one that is missing fails the start as before.
    return (isinstance(upstream, AiohttpUpstream) and "aiohttp" not in sys.modules
            and importlib.util.find_spec("aiohttp") is not None)


async def _open_upstream(upstream: Upstream) -> None:
    try:
        await upstream.start()
    except Exception:
        # Not fatal to the services: each request tries to open it again, and fails alone.
        log.exception("ccrotate: the upstream connection pool could not be opened")


def _pool_from(settings: Settings, accounts_file: AccountsFile) -> AccountPool:
    return AccountPool(accounts_file.load(),
                       strategy=strategy_named(settings.strategy,
                                               rotation=settings.rotation_enabled),
                       default_cooldown=settings.default_cooldown,
                       backoff_base=settings.account_backoff_base,
                       backoff_cap=max(settings.account_backoff_cap,
                                       settings.account_backoff_base),
                       entitlement_ttl=settings.entitlement_ttl,
                       forbidden_threshold=settings.forbidden_threshold,
                       affinity_ttl=(settings.affinity_ttl
                                     if settings.session_affinity else None),
                       session_header=settings.session_header)


def _proxy_config(settings: Settings) -> ProxyConfig:
    return ProxyConfig(
        upstream_url=settings.upstream_url, max_attempts=settings.max_attempts,
        inject_identity=settings.inject_identity, relocate_system=settings.relocate_system,
        max_body_size=settings.max_body_size, body_timeout=settings.body_timeout,
        request_timeout=settings.request_timeout,
        capacity_wait=settings.capacity_wait,
        timeouts=Timeouts(connect=settings.connect_timeout, read=settings.read_timeout))


def _upstream_for(settings: Settings, timeouts: Timeouts) -> Upstream:
    # The `upstream_client` setting; each is imported with its choice (httpx's import is
    # ~50 ms that a server on the default never pays).
    if settings.upstream_client == "aiohttp":
        return AiohttpUpstream(timeouts=timeouts)
    if settings.upstream_client == "httpx":
        from ccrotate._upstream.httpx_transport import HTTPXUpstream
        return HTTPXUpstream(timeouts=timeouts)
    return HttptoolsUpstream(timeouts=timeouts)


def _log_store(settings: Settings) -> LogStore:
    # PostgreSQL when several replicas share the log, DuckDB for one server, else memory.
    if settings.access_log_url is not None:
        return PostgresLogStore(settings.access_log_url)
    return open_store(settings.access_log_path)


def _state_backend(settings: Settings) -> StateBackend:
    if settings.state_url is None:
        return MemoryStateBackend()
    from ccrotate._state.redis_backend import RedisStateBackend
    return RedisStateBackend(settings.state_url, namespace=settings.state_namespace)


def sdk_config(settings: Settings) -> SDKConfig:
    """SDK mode's configuration from the ``sdk_*`` settings."""
    s = settings
    return SDKConfig(upstream_url=s.upstream_url, tool_steps=s.sdk_tool_steps,  # type: ignore[arg-type]
                     allowed_tools=s.sdk_allowed_tools, permission_mode=s.sdk_permission_mode,
                     mcp_servers=s.sdk_mcp_servers or {}, workspace=s.sdk_workspace,
                     max_concurrent=s.sdk_max_concurrent, queue_timeout=s.sdk_queue_timeout,
                     deadline=s.sdk_deadline, session_ttl=s.sdk_session_ttl,
                     env_allow=s.sdk_env_allow, cli_path=s.sdk_cli_path,
                     max_turns=s.sdk_max_turns, max_attempts=s.max_attempts)


def _metrics(pool: AccountPool, pricing: PricingTable,
             refresher: object) -> PrometheusMetrics | None:
    try:
        from ccrotate._observe.metrics import PrometheusMetrics
    except ImportError:
        log.debug("ccrotate: prometheus_client is not installed; no /metrics")
        return None
    metrics = PrometheusMetrics(pool, pricing=pricing)
    listeners: list[Callable[..., object]] | None = getattr(refresher, "listeners", None)
    if listeners is not None:
        listeners.append(metrics.record_refresh)
    return metrics


class _RotatorApp:
    # The rotator's ASGI app. /api goes to the proxy before Starlette's router and its
    # error middlewares see it: the hot path pays for one prefix check, not for routing.
    # Lifespan starts the rotator unless the host already did (a mounted rotator).

    def __init__(self, rotator: Rotator, routes: list[BaseRoute]) -> None:
        self.rotator = rotator
        app = Starlette(routes=routes)
        # Starlette answers /logs or /dashboard/ with a redirect built from the Host header;
        # no route here needs it (StatusMount serves /status bare), so none is sent.
        app.router.redirect_slashes = False
        settings = rotator.settings
        # Host and Origin are checked before anything else (docs/security.md).
        self._inner = RequestGuard(
            RotationMiddleware(app, proxy=rotator.proxy, prefix="/api"), bind=settings.host,
            allowed_hosts=settings.allowed_hosts, allowed_origins=settings.allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif self.rotator._running:
            await self._inner(scope, receive, send)
        elif kind == "http":
            await send_bytes(send, 503, [(b"content-type", b"application/json")], _NOT_STARTED)
        else:
            await send({"type": "websocket.close", "code": 1013})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await serve_lifespan(_started_unless_running(self.rotator), receive, send)


@contextlib.asynccontextmanager
async def _started_unless_running(rotator: Rotator) -> AsyncIterator[None]:
    # A rotator the host already started (mounted, with the host's lifespan) is left to
    # the host; else the app's own lifespan starts it, and stops it before shutdown is
    # reported, as servers tear the loop down right after.
    if rotator._running:
        yield
        return
    async with rotator:
        yield
