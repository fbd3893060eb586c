"""Small raw-ASGI helpers shared by the proxy and the middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio

__all__ = ["ASGIApp", "BodyTimeout", "BodyTooLarge", "ClientGone", "Receive", "Scope", "Send",
           "api_path", "from_browser", "has_encoded_separator", "json_body_ok", "read_body",
           "route_path", "send_bytes", "serve_lifespan"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """The request body is larger than allowed."""


class BodyTimeout(Exception):
    """The request body did not arrive in full within the allowed time."""


class ClientGone(Exception):
    """The client disconnected while the request body was still arriving."""


def route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette keeps the full path and sets ``root_path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root):] or "/"
    return path


def api_path(scope: Scope) -> str:
    """:func:`route_path` without one trailing slash (Litestar mounts add one)."""
    path = route_path(scope)
    return path[:-1] if len(path) > 1 and path.endswith("/") else path


def has_encoded_separator(scope: Scope) -> bool:
    """Whether the request target spells a ``/`` or ``\\`` as ``%2F``/``%5C``.

    Servers decode ``%2F`` into ``path``, so ``/v1/messages%2Fcount_tokens`` would
    look like a real route; only ``raw_path`` (when the server gives it) still shows
    the trick. No client of the Messages API needs an encoded separator.
    """
    raw: bytes | None = scope.get("raw_path")
    if not raw or b"%" not in raw:
        return False  # the common case: one byte search
    lowered = raw.lower()
    return b"%2f" in lowered or b"%5c" in lowered


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (name lower-case)."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def json_body_ok(scope: Scope) -> bool:
    """Whether the request's body, if any, is declared as JSON.

    ``application/json`` or any ``application/*+json``, in any case and with any
    parameters (``charset=utf-8``). Without a ``Content-Type`` only a request without a
    body passes. Why it matters: a web page can send ``text/plain`` (or no type) to any
    address without a CORS preflight, but never ``application/json``.
    """
    ctype = header(scope, b"content-type")
    if ctype is None:
        length = header(scope, b"content-length")
        return (length is None or length.strip() == b"0") and (
            header(scope, b"transfer-encoding") is None)
    media = ctype.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/")
                                            and media.endswith(b"+json"))


def from_browser(scope: Scope) -> bool:
    """Whether a web browser sent the request: it carries ``Origin`` or ``Sec-Fetch-*``.

    Browsers add these themselves and pages cannot remove them; other clients (SDKs,
    curl, Claude Code) send neither.
    """
    return any(name == b"origin" or name.startswith(b"sec-fetch-")
               for name, _ in scope["headers"])


def is_openai_client(scope: Scope) -> bool:
    """OpenAI SDKs send neither ``anthropic-version`` nor ``x-api-key``; Anthropic's send both."""
    return header(scope, b"anthropic-version") is None and header(scope, b"x-api-key") is None


async def read_body(scope: Scope, receive: Receive, limit: int,
                    time_limit: float | None = None) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes as early as possible.

    With ``time_limit``, raises :class:`BodyTimeout` when the body has not arrived in full
    that many seconds after the call: a client trickling its body would otherwise hold
    the request (and its socket) open for as long as it likes.
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    if time_limit is None:
        return await _read_body(receive, limit)
    with anyio.move_on_after(time_limit):
        return await _read_body(receive, limit)
    # Reached only when the deadline cancelled the read: a return or a raise leaves above.
    raise BodyTimeout


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_bytes(send: Send, status: int, headers: Sequence[tuple[bytes, bytes]],
                     body: bytes) -> None:
    """Send a complete response with a correct ``content-length``."""
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def serve_lifespan(app: AbstractAsyncContextManager[Any], receive: Receive,
                         send: Send) -> None:
    """Answer the ASGI lifespan protocol by entering ``app`` at startup and leaving it at
    shutdown (for components served on their own, without a host app's lifespan)."""
    started = False
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await app.__aenter__()
                started = True
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if started:
                await app.__aexit__(None, None, None)
            await send({"type": "lifespan.shutdown.complete"})
            return
