"""The one exception tree of ccrotate.

    CCRotateError
    ├── ConfigError                 bad setting value, unreadable config file
    ├── AccountsFileError           malformed accounts file (names file, account, field)
    ├── PoolError
    │   ├── UnknownAccount          a pinned account name that the pool does not hold
    │   └── NoAccountAvailable      every account is cooling, broken or disabled
    ├── UpstreamError               what went wrong talking to Anthropic
    │   ├── UpstreamConnectError    could not connect / connection dropped before a response
    │   ├── UpstreamTimeout         connect or read timed out
    │   └── UpstreamProtocolError   the stream was cut or garbled mid-way
    ├── RefreshError                an OAuth refresh failed
    │   └── InvalidGrant            the refresh token is dead: the account needs a new login
    └── TranslationError            an OpenAI request that has no Messages API equivalent

Errors from httpx and aiohttp are mapped to ``UpstreamError`` subclasses at the
boundary (each transport in ``_upstream``), keeping theirs as ``__cause__``, so none
of theirs leaks to callers. No message in this tree ever contains a credential.
"""

from __future__ import annotations

import os

__all__ = [
    "AccountsFileError",
    "CCRotateError",
    "ConfigError",
    "InvalidGrant",
    "NoAccountAvailable",
    "PoolError",
    "RefreshError",
    "TranslationError",
    "UnknownAccount",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamTimeout",
]


class CCRotateError(Exception):
    """Base class of every error ccrotate raises."""


class ConfigError(CCRotateError, ValueError):
    """A setting has a bad value; the message names the setting and where it came from."""


class AccountsFileError(CCRotateError):
    """The accounts file cannot be used; the message names the file, the account and the field.

    Nothing is ever written back after this error: the file stays as it was.
    """

    def __init__(self, path: str, message: str, *, account: str | None = None,
                 field: str | None = None) -> None:
        self.path = path
        self.account = account
        self.field = field
        self.detail = message
        super().__init__(self._describe(path))

    def _describe(self, where: str) -> str:
        if self.account is not None:
            where += f": account {self.account!r}"
        if self.field is not None:
            where += f": field {self.field!r}"
        return f"{where}: {self.detail}"

    def public_message(self) -> str:
        """The message naming the file by its name alone, for outputs others read (the
        status API): the directory it lives in is the operator's business."""
        return self._describe(os.path.basename(self.path) or self.path)


class PoolError(CCRotateError):
    """Base of the errors about choosing an account."""


class UnknownAccount(PoolError):
    """A request named an account (``X-Account-Name``) that the pool does not hold."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no account named {name!r} in the pool")


class NoAccountAvailable(PoolError):
    """No account can serve now. ``retry_after`` is the seconds until the soonest one can.

    ``retry_after`` is ``None`` when no account will come back by itself (all are
    disabled or need a new login). ``refusal`` is the upstream's ``(error type, message)``
    that took the soonest account out, when the pool knows it.
    """

    def __init__(self, message: str, *, retry_after: float | None = None,
                 refusal: tuple[str, str] | None = None, at_capacity: bool = False) -> None:
        self.retry_after = retry_after
        self.refusal = refusal
        self.at_capacity = at_capacity
        """Accounts could serve but all are at their ``maxConcurrent``: a release helps."""
        super().__init__(message)


class UpstreamError(CCRotateError):
    """Talking to the upstream API failed below HTTP (no usable status code)."""


class UpstreamConnectError(UpstreamError):
    """The connection could not be made, or dropped before a response arrived."""


class UpstreamTimeout(UpstreamError):
    """Connecting or reading from the upstream took longer than the configured timeout."""


class UpstreamProtocolError(UpstreamError):
    """The upstream response was cut off or malformed after it started."""


class RefreshError(CCRotateError):
    """An OAuth token refresh failed (network, 5xx, or a rejected grant)."""

    def __init__(self, account: str, message: str) -> None:
        self.account = account
        super().__init__(f"account {account!r}: {message}")


class InvalidGrant(RefreshError):
    """The refresh token was rejected (``invalid_grant``): only a new login can restore it."""


class TranslationError(CCRotateError):
    """An OpenAI request cannot be expressed in the Messages API.

    ``param`` names the offending request parameter, as OpenAI's error body does.
    """

    def __init__(self, message: str, *, param: str | None = None,
                 code: str | None = None) -> None:
        self.param = param
        self.code = code
        super().__init__(message)
