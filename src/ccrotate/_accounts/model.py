"""Account credentials: what one pooled account is, independent of its runtime state."""

from __future__ import annotations

import enum
import hmac
import time
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Account", "AccountKind", "Secret"]


class Secret:
    """A credential string that cannot leak by accident.

    ``repr()``, ``str()`` and f-strings show only a masked suffix (``'…a1b2'``);
    the value is reachable through :meth:`reveal` alone, so a stray log line or
    error message never carries a token.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
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

    @property
    def credential(self) -> Secret:
        """The secret that goes upstream for this account."""
        secret = self.api_key if self.kind is AccountKind.API_KEY else self.access_token
        assert secret is not None  # guaranteed by the file parser
        return secret

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
