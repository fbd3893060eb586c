"""ccrotate: a pool of Claude accounts behind one Anthropic-compatible endpoint.

The public surface is re-exported here; every module behind it is private.
"""

from ccrotate._accesslog import AccessLog, LoggingSink
from ccrotate._accounts import Account, AccountKind, Secret
from ccrotate._accounts_file import AccountsFile, FileFormat, discover_accounts_file
from ccrotate._auth import ClientAuth
from ccrotate._config import Settings, load_settings
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
from ccrotate._health import AccountView, HealthView, PoolView, health_endpoint
from ccrotate._logs_api import logs_app, logs_routes
from ccrotate._logstore import DuckDBLogStore, LogStore, MemoryLogStore
from ccrotate._metrics import MetricsApp, PrometheusMetrics
from ccrotate._observe import Failover, Observer, RequestRecord
from ccrotate._openai import OpenAITranslator, StreamTranslator, TranslatedRequest
from ccrotate._openai_route import OpenAIRoute
from ccrotate._pool import (
    AccountPool,
    AccountStatus,
    MemoryStateStore,
    PoolEvent,
    ReloadResult,
    StateStore,
)
from ccrotate._pricing import ModelPrice, PricingTable
from ccrotate._proxy import ProxyConfig, RotatingProxy, RotationMiddleware
from ccrotate._ratelimit import QuotaSnapshot, WindowQuota
from ccrotate._refresh import TokenRefresher
from ccrotate._reload import AccountsWatcher
from ccrotate._server import Components, build_components, create_app
from ccrotate._state import AccountRuntime, AccountState, Event
from ccrotate._status import StatusMount, status_app
from ccrotate._strategy import (
    Candidate,
    FirstAvailable,
    RoundRobin,
    SelectionContext,
    SelectionStrategy,
)
from ccrotate._upstream import Timeouts
from ccrotate._version import __version__

__all__ = [
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
    "CCRotateError",
    "Candidate",
    "ClientAuth",
    "Components",
    "ConfigError",
    "DuckDBLogStore",
    "Event",
    "Failover",
    "FileFormat",
    "FirstAvailable",
    "HealthView",
    "InvalidGrant",
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
    "QuotaSnapshot",
    "RefreshError",
    "ReloadResult",
    "RequestRecord",
    "RotatingProxy",
    "RotationMiddleware",
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
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "WindowQuota",
    "__version__",
    "build_components",
    "create_app",
    "discover_accounts_file",
    "health_endpoint",
    "load_settings",
    "logs_app",
    "logs_routes",
    "status_app",
]
