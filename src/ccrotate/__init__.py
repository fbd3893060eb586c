"""ccrotate: a pool of Claude accounts behind one Anthropic-compatible endpoint.

The public surface is re-exported here; every module behind it is private.

Names are imported on first use (PEP 562): ``import ccrotate`` alone, and the pytest
plugin that pytest loads at start-up from ``ccrotate.testing``, cost no Starlette,
aiohttp or proxy import. The exception tree and the version are cheap and eager.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ccrotate._exceptions import (
    AccountsFileError,
    CCRotateError,
    ConfigError,
    InvalidGrant,
    NoAccountAvailable,
    PoolError,
    RefreshError,
    TranslationError,
    UnknownAccount,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from ccrotate._lazy import attach
from ccrotate._version import __version__

if TYPE_CHECKING:
    from ccrotate._accounts.file import AccountsFile, FileFormat, discover_accounts_file
    from ccrotate._accounts.model import Account, AccountKind, Secret
    from ccrotate._client.transport import AsyncRotatingTransport, RotatingTransport
    from ccrotate._observe.accesslog import AccessLog, LoggingSink, StreamSink
    from ccrotate._observe.health import AccountView, HealthView, PoolView, health_endpoint
    from ccrotate._observe.logs_api import logs_app, logs_routes
    from ccrotate._observe.logstore import DuckDBLogStore, LogStore, MemoryLogStore
    from ccrotate._observe.metrics import MetricsApp, PrometheusMetrics
    from ccrotate._observe.pgstore import PostgresLogStore
    from ccrotate._observe.pricing import ModelPrice, PricingTable
    from ccrotate._observe.status import StatusMount, status_app
    from ccrotate._pool.pool import (
        AccountPool,
        AccountStatus,
        MemoryStateStore,
        PoolEvent,
        ReloadResult,
        StateStore,
    )
    from ccrotate._pool.ratelimit import QuotaSnapshot, WindowQuota
    from ccrotate._pool.state import AccountRuntime, AccountState, Event
    from ccrotate._pool.strategy import (
        Candidate,
        FirstAvailable,
        LeastRecentlyUsed,
        QuotaAware,
        RoundRobin,
        SelectionContext,
        SelectionStrategy,
    )
    from ccrotate._proxy.app import ProxyConfig, RotatingProxy, RotationMiddleware
    from ccrotate._proxy.auth import ClientAuth
    from ccrotate._proxy.dialects.openai import (
        OpenAITranslator,
        StreamTranslator,
        TranslatedRequest,
    )
    from ccrotate._proxy.dialects.openai.route import OpenAIRoute
    from ccrotate._proxy.record import Failover, Observer, RequestRecord
    from ccrotate._sdk.app import SDKApp
    from ccrotate._sdk.config import SDKConfig
    from ccrotate._server.app import create_app
    from ccrotate._server.config import Settings, load_settings
    from ccrotate._server.guard import RequestGuard
    from ccrotate._server.rotator import Rotator
    from ccrotate._state.backend import MemoryStateBackend, StateBackend
    from ccrotate._state.redis_backend import RedisStateBackend
    from ccrotate._tokens.refresh import TokenRefresher
    from ccrotate._tokens.reload import AccountsWatcher
    from ccrotate._upstream.aiohttp_transport import AiohttpUpstream
    from ccrotate._upstream.asgi_transport import ASGIUpstream
    from ccrotate._upstream.base import Timeouts, Upstream, UpstreamResponse
    from ccrotate._upstream.httptools_transport import HttptoolsUpstream
    from ccrotate._upstream.httpx_transport import HTTPXUpstream
    from ccrotate._upstream.providers import (
        APIKeyProvider,
        OAuthProvider,
        OutgoingRequest,
        Provider,
        Providers,
    )

# Public name -> the private module that defines it.
_LAZY: dict[str, str] = {
    "APIKeyProvider": "ccrotate._upstream.providers",
    "ASGIUpstream": "ccrotate._upstream.asgi_transport",
    "AccessLog": "ccrotate._observe.accesslog",
    "Account": "ccrotate._accounts.model",
    "AccountKind": "ccrotate._accounts.model",
    "AccountPool": "ccrotate._pool.pool",
    "AccountRuntime": "ccrotate._pool.state",
    "AccountState": "ccrotate._pool.state",
    "AccountStatus": "ccrotate._pool.pool",
    "AccountView": "ccrotate._observe.health",
    "AccountsFile": "ccrotate._accounts.file",
    "AccountsWatcher": "ccrotate._tokens.reload",
    "AiohttpUpstream": "ccrotate._upstream.aiohttp_transport",
    "AsyncRotatingTransport": "ccrotate._client.transport",
    "Candidate": "ccrotate._pool.strategy",
    "ClientAuth": "ccrotate._proxy.auth",
    "DuckDBLogStore": "ccrotate._observe.logstore",
    "Event": "ccrotate._pool.state",
    "Failover": "ccrotate._proxy.record",
    "FileFormat": "ccrotate._accounts.file",
    "FirstAvailable": "ccrotate._pool.strategy",
    "LeastRecentlyUsed": "ccrotate._pool.strategy",
    "HTTPXUpstream": "ccrotate._upstream.httpx_transport",
    "HttptoolsUpstream": "ccrotate._upstream.httptools_transport",
    "HealthView": "ccrotate._observe.health",
    "LogStore": "ccrotate._observe.logstore",
    "LoggingSink": "ccrotate._observe.accesslog",
    "StreamSink": "ccrotate._observe.accesslog",
    "MemoryLogStore": "ccrotate._observe.logstore",
    "MemoryStateBackend": "ccrotate._state.backend",
    "MemoryStateStore": "ccrotate._pool.pool",
    "MetricsApp": "ccrotate._observe.metrics",
    "ModelPrice": "ccrotate._observe.pricing",
    "OAuthProvider": "ccrotate._upstream.providers",
    "Observer": "ccrotate._proxy.record",
    "OpenAIRoute": "ccrotate._proxy.dialects.openai.route",
    "OpenAITranslator": "ccrotate._proxy.dialects.openai",
    "OutgoingRequest": "ccrotate._upstream.providers",
    "PoolEvent": "ccrotate._pool.pool",
    "PoolView": "ccrotate._observe.health",
    "PostgresLogStore": "ccrotate._observe.pgstore",
    "PricingTable": "ccrotate._observe.pricing",
    "PrometheusMetrics": "ccrotate._observe.metrics",
    "Provider": "ccrotate._upstream.providers",
    "Providers": "ccrotate._upstream.providers",
    "ProxyConfig": "ccrotate._proxy.app",
    "QuotaAware": "ccrotate._pool.strategy",
    "QuotaSnapshot": "ccrotate._pool.ratelimit",
    "RedisStateBackend": "ccrotate._state.redis_backend",
    "ReloadResult": "ccrotate._pool.pool",
    "RequestGuard": "ccrotate._server.guard",
    "RequestRecord": "ccrotate._proxy.record",
    "RotatingProxy": "ccrotate._proxy.app",
    "RotationMiddleware": "ccrotate._proxy.app",
    "RotatingTransport": "ccrotate._client.transport",
    "Rotator": "ccrotate._server.rotator",
    "RoundRobin": "ccrotate._pool.strategy",
    "SDKApp": "ccrotate._sdk.app",
    "SDKConfig": "ccrotate._sdk.config",
    "Secret": "ccrotate._accounts.model",
    "SelectionContext": "ccrotate._pool.strategy",
    "SelectionStrategy": "ccrotate._pool.strategy",
    "Settings": "ccrotate._server.config",
    "StateBackend": "ccrotate._state.backend",
    "StateStore": "ccrotate._pool.pool",
    "StatusMount": "ccrotate._observe.status",
    "StreamTranslator": "ccrotate._proxy.dialects.openai",
    "Timeouts": "ccrotate._upstream.base",
    "TokenRefresher": "ccrotate._tokens.refresh",
    "TranslatedRequest": "ccrotate._proxy.dialects.openai",
    "Upstream": "ccrotate._upstream.base",
    "UpstreamResponse": "ccrotate._upstream.base",
    "WindowQuota": "ccrotate._pool.ratelimit",
    "create_app": "ccrotate._server.app",
    "discover_accounts_file": "ccrotate._accounts.file",
    "health_endpoint": "ccrotate._observe.health",
    "load_settings": "ccrotate._server.config",
    "logs_app": "ccrotate._observe.logs_api",
    "logs_routes": "ccrotate._observe.logs_api",
    "status_app": "ccrotate._observe.status",
}

__all__ = [
    "APIKeyProvider",
    "ASGIUpstream",
    "AccessLog",
    "Account",
    "AccountKind",
    "AccountPool",
    "AccountRuntime",
    "AccountState",
    "AccountStatus",
    "AccountView",
    "AccountsFile",
    "AccountsFileError",
    "AccountsWatcher",
    "AiohttpUpstream",
    "AsyncRotatingTransport",
    "CCRotateError",
    "Candidate",
    "ClientAuth",
    "ConfigError",
    "DuckDBLogStore",
    "Event",
    "Failover",
    "FileFormat",
    "FirstAvailable",
    "HTTPXUpstream",
    "HealthView",
    "HttptoolsUpstream",
    "InvalidGrant",
    "LeastRecentlyUsed",
    "LogStore",
    "LoggingSink",
    "MemoryLogStore",
    "MemoryStateBackend",
    "MemoryStateStore",
    "MetricsApp",
    "ModelPrice",
    "NoAccountAvailable",
    "OAuthProvider",
    "Observer",
    "OpenAIRoute",
    "OpenAITranslator",
    "OutgoingRequest",
    "PoolError",
    "PoolEvent",
    "PoolView",
    "PostgresLogStore",
    "PricingTable",
    "PrometheusMetrics",
    "Provider",
    "Providers",
    "ProxyConfig",
    "QuotaAware",
    "QuotaSnapshot",
    "RedisStateBackend",
    "RefreshError",
    "ReloadResult",
    "RequestGuard",
    "RequestRecord",
    "RotatingProxy",
    "RotatingTransport",
    "RotationMiddleware",
    "Rotator",
    "RoundRobin",
    "SDKApp",
    "SDKConfig",
    "Secret",
    "SelectionContext",
    "SelectionStrategy",
    "Settings",
    "StateBackend",
    "StateStore",
    "StatusMount",
    "StreamSink",
    "StreamTranslator",
    "Timeouts",
    "TokenRefresher",
    "TranslatedRequest",
    "TranslationError",
    "UnknownAccount",
    "Upstream",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "UpstreamTimeout",
    "WindowQuota",
    "__version__",
    "create_app",
    "discover_accounts_file",
    "health_endpoint",
    "load_settings",
    "logs_app",
    "logs_routes",
    "status_app",
]


__getattr__, __dir__ = attach(__name__, globals(), _LAZY, __all__)
