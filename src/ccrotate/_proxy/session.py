"""Which conversation a request belongs to, for session affinity.

A conversation that stays on one account keeps hitting that account's prompt
cache. The key comes, in this order, from the session in ``metadata.user_id``
(Claude Code sends a JSON *string* holding ``session_id``; older clients the
``user_<hash>_account_<uuid>_session_<uuid>`` form), from a session header
(``X-Session-Id`` by default), from an opaque ``metadata.user_id`` as a whole,
or, only when the request marks a
``cache_control`` breakpoint, from a hash of the body up to the first one:
requests that share that prefix share a prompt cache, so they belong together.

Everything here is string slicing or one C-speed hash over a bounded prefix:
no JSON decoding on the hot path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["PREFIX_LIMIT", "prefix_key", "session_key", "session_of_user_id"]

PREFIX_LIMIT = 16 * 1024
"""Bytes of the prefix hashed at most: enough to tell conversations apart, bounded cost."""
_SESSION_FIELD = '"session_id"'
_BREAKPOINT = b'"cache_control"'


def session_of_user_id(user_id: str | None) -> str | None:
    """The session id inside ``metadata.user_id``, or ``None`` if it names none."""
    if not user_id:
        return None
    if user_id.startswith("{"):
        at = user_id.find(_SESSION_FIELD)
        if at < 0:
            return None
        colon = user_id.find(":", at + len(_SESSION_FIELD))
        start = user_id.find('"', colon + 1) if colon >= 0 else -1
        end = user_id.find('"', start + 1) if start >= 0 else -1
        return user_id[start + 1:end] or None if end > start >= 0 else None
    _, sep, session = user_id.rpartition("_session_")
    return session or None if sep else None


def prefix_key(body: bytes) -> str | None:
    """A hash of ``body`` up to its first ``cache_control`` breakpoint, ``None`` without one."""
    at = body.find(_BREAKPOINT)
    if at < 0:
        return None
    prefix = body[:min(at, PREFIX_LIMIT)]
    return "prefix:" + hashlib.blake2b(prefix, digest_size=12).hexdigest() + f":{at}"


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1") or None
    return None


def session_key(user_id: str | None, headers: Sequence[tuple[bytes, bytes]], body: bytes,
                header: bytes | None) -> str | None:
    """The affinity key of one request, or ``None`` (it rotates as usual).

    Parameters:
        user_id: ``metadata.user_id`` of the request, if any.
        headers: the client's ASGI headers (lower-case names).
        body: the raw request body (for the cache-prefix fallback).
        header: the lower-case session header name, ``None`` to ignore headers.
    """
    session = session_of_user_id(user_id)
    if session is not None:
        return "session:" + session
    if header is not None:
        value = _header(headers, header)
        if value is not None:
            return "header:" + value
    if user_id:
        # An opaque id (OpenAI's ``user``, a custom client's): no session in it, but the
        # one conversation-ish identity the client gave, and it was the key before.
        return "user:" + user_id
    return prefix_key(body)
