"""An upstream transport on one pooled aiohttp session, errors mapped to ccrotate's.

The default before HttptoolsUpstream (docs/benchmarks.md), kept for those who want
aiohttp's client; it needs the ``aiohttp`` extra. Nothing from aiohttp escapes this
module: exceptions become :class:`~ccrotate.UpstreamError` subclasses and
responses implement :class:`~ccrotate._upstream.base.UpstreamResponse`.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import sys
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import anyio

from ccrotate._exceptions import (
    ConfigError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from ccrotate._upstream.base import DEFAULT_BODY_LIMIT, Timeouts, Transport

if TYPE_CHECKING:
    import aiohttp
    from multidict import CIMultiDictProxy

__all__ = ["AiohttpUpstream"]

_NO_AGENT = ("User-Agent",)


def _map(exc: BaseException) -> UpstreamError:
    import aiohttp

    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout("upstream timed out")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamProtocolError("upstream response was cut off")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamConnectError("upstream closed the connection")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamConnectError(f"cannot connect to upstream: {exc.strerror or exc}")
    return UpstreamConnectError(f"upstream connection failed: {type(exc).__name__}")


@functools.cache
def _errors() -> tuple[type[BaseException], ...]:
    # aiohttp is imported on first use: a notebook that only uses the pool never pays for it.
    import aiohttp

    return (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class _Response:
    """One aiohttp response as an :class:`UpstreamResponse`; :meth:`aclose` is idempotent."""

    __slots__ = ("_closed", "_resp", "headers", "raw_headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self._closed = False
        self.status = resp.status
        self.headers: CIMultiDictProxy[str] = resp.headers
        self.raw_headers: Sequence[tuple[bytes, bytes]] = resp.raw_headers

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-case."""
        return self._resp.content_type

    @property
    def content_encoding(self) -> str | None:
        """The upstream ``content-encoding``; the raw bytes are passed on still encoded."""
        return self.headers.get("content-encoding")

    async def read(self, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
        """The whole (raw) body. Raises :class:`UpstreamProtocolError` past ``limit`` bytes."""
        # The same loop as chunks(), minus an async generator per response.
        content = self._resp.content
        parts: list[bytes] = []
        size = 0
        try:
            while chunk := await content.readany():
                size += len(chunk)
                if size > limit:
                    raise UpstreamProtocolError("upstream body larger than the proxy accepts")
                parts.append(chunk)
        except _errors() as exc:
            raise _map(exc) from exc
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Raw body chunks as they arrive (no decompression, no re-chunking)."""
        content = self._resp.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except _errors() as exc:
            raise _map(exc) from exc

    async def aclose(self) -> None:
        """Release the connection (back to the pool if the body was read, else dropped)."""
        if self._closed:
            return
        self._closed = True
        # Both calls are synchronous, so no cancellation can land between them.
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            # A half-read body cannot be reused: drop the connection instead.
            self._resp.close()


class AiohttpUpstream(Transport):
    """A pooled ``aiohttp`` client (the ``aiohttp`` extra); the default before
    :class:`~ccrotate.HttptoolsUpstream`, which costs a third less CPU per request.

    Parameters:
        timeouts: connect and read timeouts, and the pool size.

    Open with ``async with`` or :meth:`start` (a :class:`~ccrotate.Rotator` starts it
    beside its services, aiohttp's import in a thread, so the server answers before it
    is open). The session is also created lazily on the first request, so
    a proxy whose lifespan never ran still answers; only closing then relies on
    the process ending.
    """

    def __init__(self, *, timeouts: Timeouts | None = None) -> None:
        if importlib.util.find_spec("aiohttp") is None:
            raise ConfigError("AiohttpUpstream needs aiohttp: pip install 'ccrotate[aiohttp]' "
                              "(or use the default transport, HttptoolsUpstream)")
        self.timeouts = timeouts or Timeouts()
        self._session: aiohttp.ClientSession | None = None
        self._opening: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Create the connection pool (idempotent; callers at the same moment share one
        opening)."""
        if self._session is not None and not self._session.closed:
            return
        opening = self._opening
        if opening is None or opening.done():
            opening = self._opening = asyncio.ensure_future(self._open())
        # Shielded: a request cancelled while it waits leaves the opening to the others.
        await asyncio.shield(opening)

    async def _open(self) -> None:
        if "aiohttp" not in sys.modules:
            # ~0.15 s of imports and two TLS contexts read from disk: in a worker thread,
            # so the event loop keeps serving (/health, the status API) meanwhile.
            await anyio.to_thread.run_sync(importlib.import_module, "aiohttp")
        import aiohttp

        if self._session is None or self._session.closed:
            t = self.timeouts
            connector = aiohttp.TCPConnector(limit=t.pool_size, limit_per_host=0,
                                             keepalive_timeout=30, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=t.connect,
                                              sock_read=t.read),
                auto_decompress=False,
                # No session-wide skip_auto_headers: it copies the headers on every
                # request. send() asks for it only when the client sent no User-Agent.
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def aclose(self) -> None:
        """Close every pooled connection."""
        opening = self._opening
        if opening is not None and not opening.done():
            # An opening under way (the import in its thread) ends first, so that no
            # session appears after this close. asyncio.wait raises none of its errors.
            with anyio.CancelScope(shield=True):
                await asyncio.wait([opening])
        if self._session is not None:
            with anyio.CancelScope(shield=True):
                await self._session.close()
            self._session = None

    async def send(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                   body: bytes | None) -> _Response:
        """Send one request and return once the response head has arrived."""
        if self._session is None or self._session.closed:
            await self.start()
        session = self._session
        if session is None:  # pragma: no cover - start() always sets it
            raise UpstreamConnectError("upstream session could not be opened")
        # The client's own User-Agent is forwarded; aiohttp's is never added.
        skip = None if any(k.lower() == "user-agent" for k, _ in headers) else _NO_AGENT
        try:
            resp = await session.request(
                method, url, headers=headers, data=body,
                allow_redirects=False, compress=None, skip_auto_headers=skip)
        except _errors() as exc:
            raise _map(exc) from exc
        return _Response(resp)
