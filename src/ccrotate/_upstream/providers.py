"""Providers: the one place that decides how an account is presented upstream.

The client's request is the same for every attempt; what changes with the
account is its credential, the betas it needs, the body (OAuth accounts need
Claude Code's identity as the first system block) and where it goes. A
:class:`Provider` per account kind builds that, and :class:`Providers` picks
one by :class:`~ccrotate.AccountKind`, with an optional per-account base URL
(``baseUrl`` in the accounts file). SDK mode adds a provider of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ccrotate._accounts.model import Account, AccountKind
from ccrotate._exceptions import ConfigError
from ccrotate._wire import (
    CLAUDE_CODE_IDENTITY,
    OAUTH_BETA,
    inject_identity,
    merge_beta,
    without_beta,
)

__all__ = ["APIKeyProvider", "OAuthProvider", "OutgoingRequest", "Provider", "Providers"]

# Identity keeps the bytes readable for usage accounting; the hop to the client is
# local, where compression buys little.
_IDENTITY_ENCODING = ("accept-encoding", "identity")


@dataclass(slots=True)
class OutgoingRequest:
    """The client's request as it goes upstream, the same for every attempt.

    ``headers`` are already filtered (no client credentials, no hop-by-hop);
    ``beta`` is the client's ``anthropic-beta`` list, merged per account.
    """

    method: str
    path: str
    """Path and query, relative to the upstream's base URL."""
    headers: list[tuple[str, str]]
    beta: str | None = None
    body: bytes | None = None
    wants_identity: bool = False
    """The body is a Messages request whose first system block is not an identity line."""
    _oauth_body: bytes | None = field(default=None, repr=False)
    """The body with the identity block, computed once per request whatever the attempts."""


class Provider(Protocol):
    """Presents one account upstream: its URL, headers and body for a request."""

    def url(self, account: Account, request: OutgoingRequest) -> str:
        """The absolute URL to send ``request`` to for ``account``."""
        ...

    def headers(self, account: Account, request: OutgoingRequest) -> list[tuple[str, str]]:
        """Every header to send, credentials included."""
        ...

    def body(self, account: Account, request: OutgoingRequest) -> bytes | None:
        """The body to send (the client's, or rewritten for this kind of account)."""
        ...


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"upstream base URL must start with http:// or https://, not {url!r}")
    return url.rstrip("/")


class _Base:
    __slots__ = ("base_url",)

    def __init__(self, base_url: str) -> None:
        self.base_url = _check_url(base_url)

    def url(self, account: Account, request: OutgoingRequest) -> str:
        return (account.base_url or self.base_url) + request.path

    def body(self, account: Account, request: OutgoingRequest) -> bytes | None:
        return request.body


class APIKeyProvider(_Base):
    """Anthropic Console keys: ``x-api-key``, the client's betas minus the OAuth one.

    Parameters:
        base_url: the Messages API host, unless the account names its own.
    """

    __slots__ = ()

    def headers(self, account: Account, request: OutgoingRequest) -> list[tuple[str, str]]:
        out = [*request.headers, ("x-api-key", account.credential.reveal())]
        # A client logged in with OAuth (Claude Code) sends the OAuth beta; it means
        # nothing to an API key and must not make the key look broken.
        beta = without_beta(request.beta, OAUTH_BETA)
        if beta:
            out.append(("anthropic-beta", beta))
        out.append(_IDENTITY_ENCODING)
        return out


class OAuthProvider(_Base):
    """Claude subscriptions: a Bearer token, the OAuth beta merged in, the identity block.

    Parameters:
        base_url: the Messages API host, unless the account names its own.
        identity: the identity line OAuth requests must open with, or ``None`` to send
            bodies untouched.
        relocate_system: with ``identity``, move the client's own system prompt into the
            first user turn (subscription tokens refuse long third-party system prompts).
    """

    __slots__ = ("identity", "relocate_system")

    def __init__(self, base_url: str, *, identity: str | None = CLAUDE_CODE_IDENTITY,
                 relocate_system: bool = False) -> None:
        super().__init__(base_url)
        if identity is not None and not identity.strip():
            raise ConfigError("OAuthProvider.identity must be a non-empty line or None")
        self.identity = identity
        self.relocate_system = relocate_system

    def headers(self, account: Account, request: OutgoingRequest) -> list[tuple[str, str]]:
        return [*request.headers, ("authorization", "Bearer " + account.credential.reveal()),
                ("anthropic-beta", merge_beta(request.beta, OAUTH_BETA)), _IDENTITY_ENCODING]

    def body(self, account: Account, request: OutgoingRequest) -> bytes | None:
        if self.identity is None or not request.wants_identity or request.body is None:
            return request.body
        cached = request._oauth_body
        if cached is None:
            cached = request._oauth_body = inject_identity(
                request.body, self.identity, relocate=self.relocate_system)
        return cached


class Providers:
    """Chooses the :class:`Provider` for an account by its kind.

    Parameters:
        base_url: the default Messages API host.
        identity: see :class:`OAuthProvider`.
        relocate_system: see :class:`OAuthProvider`.
        overrides: a provider per :class:`~ccrotate.AccountKind` to use instead.
    """

    __slots__ = ("_by_kind", "base_url")

    def __init__(self, base_url: str = "https://api.anthropic.com", *,
                 identity: str | None = CLAUDE_CODE_IDENTITY, relocate_system: bool = False,
                 overrides: Mapping[AccountKind, Provider] | None = None) -> None:
        self.base_url = _check_url(base_url)
        self._by_kind: dict[AccountKind, Provider] = {
            AccountKind.API_KEY: APIKeyProvider(base_url),
            AccountKind.OAUTH: OAuthProvider(base_url, identity=identity,
                                             relocate_system=relocate_system),
            **(overrides or {}),
        }

    def for_account(self, account: Account) -> Provider:
        """The provider that presents ``account``."""
        return self._by_kind[account.kind]
