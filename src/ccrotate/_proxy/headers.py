"""Header hygiene for both directions of the proxy (RFC 9110 §7.6.1 hop-by-hop rules)."""

from __future__ import annotations

from collections.abc import Iterable

from ccrotate._wire import relayable_error

__all__ = ["request_headers", "response_headers", "sanitize_error"]

DEFAULT_VERSION = "2023-06-01"

_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
# Never forwarded upstream: the client's own credentials (replaced by the pooled
# account's), routing controls meant for ccrotate, framing that httpx/aiohttp
# recompute, and cookies that Anthropic has no use for.
_REQUEST_DROP = _HOP_BY_HOP | frozenset({
    b"host", b"content-length", b"x-api-key", b"authorization", b"x-account-name",
    b"cookie", b"accept-encoding", b"expect",
})
# Framing is ccrotate's to decide on the way back (it may buffer or rewrite).
_RESPONSE_DROP = _HOP_BY_HOP | frozenset({b"content-length", b"date", b"server"})


def _connection_named(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    named: set[bytes] = set()
    for key, value in headers:
        if key == b"connection":
            named.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(named)


def request_headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[list[tuple[str, str]], str | None,
                                                                 str | None]:
    """Filter the client's ASGI headers for forwarding.

    Returns the forwardable pairs (lower-case names, duplicates kept), the
    client's ``anthropic-beta`` value and its ``x-account-name``, both taken out
    so the proxy can merge or act on them.
    """
    items = list(raw)
    named = _connection_named(items)
    drop = _REQUEST_DROP | named if named else _REQUEST_DROP  # no set union per request
    out: list[tuple[str, str]] = []
    betas: list[str] = []
    pinned: str | None = None
    has_version = False
    for key, value in items:
        if key == b"x-account-name":
            pinned = _pin(value)
        elif key == b"anthropic-beta":
            betas.append(value.decode("latin-1"))
        elif key not in drop:
            if key == b"anthropic-version":
                has_version = True
            out.append((key.decode("latin-1"), value.decode("latin-1")))
    if not has_version:
        out.append(("anthropic-version", DEFAULT_VERSION))
    return out, (",".join(betas) if betas else None), pinned


_NAME_MAX = 64  # account names are at most 64 characters (see _accounts.file)


def _pin(value: bytes) -> str | None:
    # A longer value names no account: the pool answers 400 "no account named ...",
    # and that message echoes the name, so a megabyte header must not reach it whole.
    # The cut value (65 characters, ending in an ellipsis) cannot match any account.
    name = value.decode("latin-1").strip()
    if len(name) > _NAME_MAX:
        return name[:_NAME_MAX] + "\u2026"
    return name or None


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Filter upstream response headers for the client (lower-case names for ASGI)."""
    # One pass on the hot path; the rare Connection-named headers get a second one.
    out: list[tuple[bytes, bytes]] = []
    named: frozenset[bytes] = frozenset()
    for key, value in raw:
        key = key.lower()
        if key not in _RESPONSE_DROP:
            out.append((key, value))
        elif key == b"connection":
            named |= _connection_named(((key, value),))
    return [(k, v) for k, v in out if k not in named] if named else out


# What a client learns from an upstream error besides its body: when to retry and
# the limits behind it, the id to quote to Anthropic's support, nothing else
# (cookies, server banners, internal tracing headers stay behind).
_ERROR_KEEP = frozenset({b"retry-after", b"request-id", b"x-should-retry"})
_ERROR_KEEP_PREFIX = b"anthropic-ratelimit-"
_JSON = (b"content-type", b"application/json")


def sanitize_error(status: int, raw_headers: Iterable[tuple[bytes, bytes]], body: bytes,
                   ) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """An upstream error response as the client may see it: allowed headers, minimal body.

    Headers: ``retry-after``, ``request-id``, ``x-should-retry`` and
    ``anthropic-ratelimit-*`` (lower-case), plus ``content-type: application/json``
    for the re-serialised body (see :func:`~ccrotate._wire.relayable_error`).
    """
    headers = [_JSON]
    for key, value in raw_headers:
        key = key.lower()
        if key in _ERROR_KEEP or key.startswith(_ERROR_KEEP_PREFIX):
            headers.append((key, value))
    return headers, relayable_error(status, body)
