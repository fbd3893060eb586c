"""ccrotate: a pool of Claude accounts behind one Anthropic-compatible endpoint.

The public surface is re-exported here; every module behind it is private.
"""

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
from ccrotate._observe import Failover, Observer, RequestRecord
from ccrotate._pool import (
    AccountPool,
    AccountStatus,
    MemoryStateStore,
    PoolEvent,
    ReloadResult,
    StateStore,
)
from ccrotate._proxy import ProxyConfig, RotatingProxy, RotationMiddleware
from ccrotate._ratelimit import QuotaSnapshot, WindowQuota
from ccrotate._server import Components, build_components, create_app
from ccrotate._state import AccountState
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
    "Account",
    "AccountKind",
    "AccountPool",
    "AccountState",
    "AccountStatus",
    "AccountsFile",
    "AccountsFileError",
    "CCRotateError",
    "Candidate",
    "ClientAuth",
    "Components",
    "ConfigError",
    "Failover",
    "FileFormat",
    "FirstAvailable",
    "InvalidGrant",
    "MemoryStateStore",
    "NoAccountAvailable",
    "Observer",
    "PoolError",
    "PoolEvent",
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
    "Timeouts",
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
    "load_settings",
]
