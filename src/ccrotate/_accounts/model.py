"""Account credentials: what one pooled account is, independent of its runtime state."""

from __future__ import annotations

import enum
import hmac
import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from ccrotate._exceptions import ConfigError

__all__ = ["Account", "AccountKind", "OAuthTokens", "Secret"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
"""Account names: they travel in headers, URLs and metric labels, so a safe alphabet."""
# Control characters and spaces would split or corrupt the header the secret goes into.
_UNSAFE_SECRET = re.compile(r"[\x00-\x20\x7f]")


class Secret:
    """A credential string that cannot leak by accident.

    ``repr()``, ``str()`` and f-strings show only a masked suffix (``'…a1b2'``);
    the value is reachable through :meth:`reveal` alone, so a stray log line or
    error message never carries a token.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        # The message never quotes the value: a bad secret is still a secret.
        if not isinstance(value, str):
            raise ConfigError(f"Secret.value: must be a string (got {type(value).__name__})")
        if not value:
            raise ConfigError("Secret.value: must not be empty")
        if _UNSAFE_SECRET.search(value):
            raise ConfigError("Secret.value: must not contain spaces or control characters "
                              f"(a value of {len(value)} characters)")
        self._value = value

    def reveal(self) -> str:
        """Return the real value: only for the wire and the accounts file."""
        return self._value

    @property
    def masked(self) -> str:
        """The last four characters behind an ellipsis, safe to show operators."""
        return "…" + self._value[-4:] if len(self._value) >= 8 else "…"

    def __repr__(self) -> str:
        return f"Secret({self.masked!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class AccountKind(enum.Enum):
    """How an account authenticates upstream."""

    OAUTH = "oauth"
    """A Claude subscription: access token + refresh token + expiry."""
    API_KEY = "api_key"
    """An Anthropic Console API key, sent as ``x-api-key``."""


class OAuthTokens(NamedTuple):
    """The three OAuth fields of an account, all present (see :attr:`Account.oauth`)."""

    access_token: Secret
    refresh_token: Secret
    expires_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """One pooled account's credentials and routing preferences (immutable).

    A token refresh produces a new ``Account`` with :meth:`with_tokens`; the pool
    swaps it in atomically. ``extra`` holds the keys of the accounts file that
    ccrotate does not know, so they survive every write-back.
    """

    name: str
    kind: AccountKind
    access_token: Secret | None = None
    refresh_token: Secret | None = None
    expires_at: float | None = None
    """Epoch seconds (the file stores milliseconds)."""
    api_key: Secret | None = None
    weight: int = 1
    priority: int = 0
    disabled: bool = False
    base_url: str | None = None
    """This account's own Messages API host (``baseUrl`` in the file), else the default."""
    max_concurrent: int | None = None
    """At most this many requests in flight on it (``maxConcurrent``); ``None``: no cap."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    # Derived in __post_init__ once the fields are known to be consistent, so the
    # accessors below need no "cannot be None" checks.
    _credential: Secret = field(init=False, repr=False, compare=False)
    _oauth: OAuthTokens | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_account_name(self.name)
        where = f"Account {self.name!r}"
        if not isinstance(self.kind, AccountKind):
            raise ConfigError(f"{where}: kind must be an AccountKind (got {self.kind!r})")
        for key in ("access_token", "refresh_token", "api_key"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, Secret):
                # Never echo it: a plain string here is most likely the token itself.
                raise ConfigError(f"{where}: {key} must be a Secret "
                                  f"(got {type(value).__name__})")
        _check_int(where, "weight", self.weight, minimum=0)
        _check_int(where, "priority", self.priority, minimum=None)
        if not isinstance(self.disabled, bool):
            raise ConfigError(f"{where}: disabled must be true or false "
                              f"(got {self.disabled!r})")
        oauth: OAuthTokens | None = None
        if self.kind is AccountKind.API_KEY:
            if self.api_key is None:
                raise ConfigError(f"{where}: api_key is required for an API-key account")
            for key in ("access_token", "refresh_token", "expires_at"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"{where}: {key} is set on an API-key account; "
                                      "keep either api_key or the OAuth tokens")
            credential = self.api_key
        else:
            if self.api_key is not None:
                raise ConfigError(f"{where}: api_key is set on an OAuth account; "
                                  "keep either api_key or the OAuth tokens")
            access, refresh = self.access_token, self.refresh_token
            if access is None or refresh is None:
                missing = "access_token" if access is None else "refresh_token"
                raise ConfigError(f"{where}: {missing} is required for an OAuth account")
            expires = self.expires_at
            if (isinstance(expires, bool) or not isinstance(expires, int | float)
                    or not math.isfinite(expires) or expires <= 0):
                raise ConfigError(f"{where}: expires_at must be positive epoch seconds "
                                  f"(got {expires!r})")
            oauth = OAuthTokens(access, refresh, float(expires))
            credential = access
        object.__setattr__(self, "_credential", credential)
        object.__setattr__(self, "_oauth", oauth)

    @property
    def credential(self) -> Secret:
        """The secret that goes upstream for this account."""
        return self._credential

    @property
    def oauth(self) -> OAuthTokens | None:
        """The OAuth tokens (all three present), or ``None`` for an API-key account."""
        return self._oauth

    def expires_in(self, now: float | None = None) -> float | None:
        """Seconds until the access token expires (negative once expired), ``None`` for keys."""
        if self.kind is not AccountKind.OAUTH or self.expires_at is None:
            return None
        return self.expires_at - (time.time() if now is None else now)

    def with_tokens(self, *, access_token: str, refresh_token: str | None,
                    expires_at: float) -> Account:
        """A copy carrying freshly refreshed tokens (refresh token kept when absent)."""
        return replace(
            self,
            access_token=Secret(access_token),
            refresh_token=Secret(refresh_token) if refresh_token else self.refresh_token,
            expires_at=expires_at,
        )

    def __repr__(self) -> str:
        return (f"Account(name={self.name!r}, kind={self.kind.value}, "
                f"credential={self.credential.masked!r})")


def _check_account_name(name: object) -> None:
    if not isinstance(name, str):
        raise ConfigError(f"Account.name: must be a string (got {type(name).__name__})")
    if name.startswith("sk-ant-") or len(name) > 64:
        # Most likely a token pasted where the name goes: never echo it.
        raise ConfigError(f"Account.name: a name of {len(name)} characters looks like a "
                          "credential or is too long (at most 64 characters)")
    if not NAME_RE.match(name):
        raise ConfigError(f"Account.name: {name!r} is not 1-64 characters of letters, digits "
                          "and . _ @ + - (starting with a letter or digit)")


def _check_int(where: str, key: str, value: object, *, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or (
            minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ConfigError(f"{where}: {key} must be an integer{bound} (got {value!r})")
