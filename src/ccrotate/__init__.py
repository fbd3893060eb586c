"""ccrotate: a pool of Claude accounts behind one Anthropic-compatible endpoint.

The public surface is re-exported here; every module behind it is private.
"""

from ccrotate._accounts.file import AccountsFile, FileFormat, discover_accounts_file
from ccrotate._accounts.model import Account, AccountKind, Secret
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
from ccrotate._observe.accesslog import AccessLog, LoggingSink
from ccrotate._observe.health import AccountView, HealthView, PoolView, health_endpoint
from ccrotate._observe.logs_api import logs_app, logs_routes
from ccrotate._observe.logstore import DuckDBLogStore, LogStore, MemoryLogStore
from ccrotate._observe.metrics import MetricsApp, PrometheusMetrics
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
from ccrotate._proxy.dialects.openai import OpenAITranslator, StreamTranslator, TranslatedRequest
from ccrotate._proxy.dialects.openai.route import OpenAIRoute
from ccrotate._proxy.record import Failover, Observer, RequestRecord
from ccrotate._server.app import create_app
from ccrotate._server.config import Settings, load_settings
from ccrotate._server.guard import RequestGuard
from ccrotate._server.rotator import Rotator
from ccrotate._tokens.refresh import TokenRefresher
from ccrotate._tokens.reload import AccountsWatcher
from ccrotate._upstream.aiohttp_transport import AiohttpUpstream
from ccrotate._upstream.asgi_transport import ASGIUpstream
from ccrotate._upstream.base import Timeouts, Upstream, UpstreamResponse
from ccrotate._upstream.httpx_transport import HTTPXUpstream
from ccrotate._version import __version__

__all__ = [
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
    "InvalidGrant",
    "LeastRecentlyUsed",
    "LogStore",
    "LoggingSink",
    "MemoryLogStore",
    "MemoryStateStore",
    "MetricsApp",
    "ModelPrice",
    "NoAccountAvailable",
    "Observer",
    "OpenAIRoute",
    "OpenAITranslator",
    "PoolError",
    "PoolEvent",
    "PoolView",
    "PricingTable",
    "PrometheusMetrics",
    "ProxyConfig",
    "QuotaAware",
    "QuotaSnapshot",
    "RefreshError",
    "ReloadResult",
    "RequestGuard",
    "RequestRecord",
    "RotatingProxy",
    "RotationMiddleware",
    "Rotator",
    "RoundRobin",
    "Secret",
    "SelectionContext",
    "SelectionStrategy",
    "Settings",
    "StateStore",
    "StatusMount",
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
