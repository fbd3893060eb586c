"""The OAuth token endpoint: one request, its answer, and its errors mapped to ccrotate's.

Shared by the refresher (``grant_type=refresh_token``) and the login flow
(``grant_type=authorization_code``). httpx is used here: a token request happens
a few times a day per account, so the hot-path argument for a lean client does
not apply, and pytest-httpx can stand in for the endpoint. No httpx exception and
no token ever leaves this module in a message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import msgspec

from ccrotate._accounts.model import Account, Secret
from ccrotate._exceptions import ConfigError, InvalidGrant, RefreshError
from ccrotate._wire import OAUTH_BETA

if TYPE_CHECKING:
    import httpx

__all__ = ["TOKEN_HEADERS", "TokenAnswer", "TransientRefreshError", "parse_token_response",
           "post_token", "post_token_sync", "scrub"]

TOKEN_HEADERS = {"anthropic-beta": OAUTH_BETA, "accept": "application/json"}
_SECRET_RE = re.compile(r"sk-ant-[A-Za-z0-9]+-[A-Za-z0-9_\-]+")
_decoder = msgspec.json.Decoder()


def scrub(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, with anything token-shaped masked."""
    return _SECRET_RE.sub(lambda m: "…" + m.group()[-4:], text)[:limit]


class TransientRefreshError(RefreshError):
    """A token request failure that a later attempt may not have (network, 408, 429, 5xx)."""


@dataclass(frozen=True, slots=True)
class TokenAnswer:
    """A successful answer of the token endpoint."""

    access_token: Secret
    refresh_token: Secret | None
    """``None`` when the answer kept the old refresh token."""
    expires_in: float

    def expires_at(self, now: float) -> float:
        """Expiry in epoch seconds, in whole milliseconds as the accounts file stores it.

        Rounded so that a reload of our own write-back compares equal to the pool's copy.
        """
        return round((now + self.expires_in) * 1000) / 1000

    def apply(self, account: Account, now: float) -> Account:
        """``account`` carrying these tokens; its refresh token is kept when none came back."""
        rt = self.refresh_token or account.refresh_token
        return account.with_tokens(access_token=self.access_token.reveal(),
                                   refresh_token=rt.reveal() if rt else None,
                                   expires_at=self.expires_at(now))


def parse_token_response(name: str, status: int, body: bytes, *,
                         grant: str = "refresh token") -> TokenAnswer:
    """Read the token endpoint's answer on behalf of account ``name``.

    ``grant`` names what was presented, for the ``invalid_grant`` message.

    Raises :class:`InvalidGrant` for ``invalid_grant``, :class:`TransientRefreshError`
    for 408, 429 and 5xx, and :class:`RefreshError` for anything else unusable.
    """
    try:
        raw: object = _decoder.decode(body)
    except msgspec.DecodeError:
        raw = None
    doc = cast("dict[str, Any]", raw) if isinstance(raw, dict) else None
    if status == 200:
        if doc is not None:
            access, refresh, expires = (doc.get("access_token"), doc.get("refresh_token"),
                                        doc.get("expires_in"))
            if (isinstance(access, str) and access and isinstance(expires, int | float)
                    and not isinstance(expires, bool) and expires > 0
                    and (refresh is None or (isinstance(refresh, str) and refresh))):
                try:
                    return TokenAnswer(Secret(access), Secret(refresh) if refresh else None,
                                       float(expires))
                except ConfigError as exc:  # a token with spaces: its message has no token
                    raise RefreshError(name, f"the token endpoint answered 200 with an "
                                       f"unusable token ({exc})") from exc
        raise RefreshError(name, "the token endpoint answered 200 without a usable "
                           "access_token/expires_in")
    error = description = ""
    if doc is not None:
        error = str(doc.get("error") or "")
        description = str(doc.get("error_description") or "")
    detail = scrub(f"{error}: {description}" if description else error) or "no error body"
    if error == "invalid_grant":
        raise InvalidGrant(name, f"{grant} rejected ({detail}); log in again with "
                           f"`ccrotate accounts login {name}`")
    if status in (408, 429) or status >= 500:
        raise TransientRefreshError(name, f"the token endpoint answered {status} ({detail})")
    raise RefreshError(name, f"the token endpoint answered {status} ({detail})")


def _network_error(name: str, exc: httpx.HTTPError) -> TransientRefreshError:
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return TransientRefreshError(name, "the token endpoint timed out")
    return TransientRefreshError(name, f"cannot reach the token endpoint "
                                 f"({type(exc).__name__}: {scrub(str(exc), 120)})")


async def post_token(url: str, payload: dict[str, str], *, account: str,
                     http: httpx.AsyncClient | None = None,
                     request_timeout: float = 30.0, grant: str = "refresh token") -> TokenAnswer:
    """POST ``payload`` as JSON to the token endpoint ``url`` and parse the answer.

    ``http`` is reused when given; otherwise a short-lived client makes the one call.
    """
    import httpx  # imported on first use: most processes never refresh a token

    try:
        if http is not None:
            resp = await http.post(url, json=payload, headers=TOKEN_HEADERS,
                                   timeout=request_timeout)
        else:
            async with httpx.AsyncClient(timeout=request_timeout) as client:
                resp = await client.post(url, json=payload, headers=TOKEN_HEADERS)
    except httpx.HTTPError as exc:
        # Deliberately cut: httpx's error holds the request, whose body is the refresh
        # token, and its text is unscrubbed; _network_error keeps a scrubbed summary.
        raise _network_error(account, exc) from None
    return parse_token_response(account, resp.status_code, resp.content, grant=grant)


def post_token_sync(url: str, payload: dict[str, str], *, account: str,
                    http: httpx.Client | None = None, timeout: float = 30.0,
                    grant: str = "refresh token") -> TokenAnswer:
    """:func:`post_token` for synchronous callers (the CLI)."""
    import httpx

    try:
        if http is not None:
            resp = http.post(url, json=payload, headers=TOKEN_HEADERS, timeout=timeout)
        else:
            with httpx.Client(timeout=timeout) as client:
                resp = client.post(url, json=payload, headers=TOKEN_HEADERS)
    except httpx.HTTPError as exc:
        # Cut on purpose, as in post_token: the request on the error carries the token.
        raise _network_error(account, exc) from None
    return parse_token_response(account, resp.status_code, resp.content, grant=grant)
