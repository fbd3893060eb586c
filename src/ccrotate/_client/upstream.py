"""``httpx2`` transports seen through ccrotate's :class:`~ccrotate.Upstream` seam.

The failover loop (:func:`~ccrotate._proxy.attempts.run_attempts`) talks to an
``Upstream``; these adapters put an inner ``httpx2`` transport behind it, so the
client-side transports reuse the loop whole instead of re-implementing it. Errors
below HTTP become :class:`~ccrotate.UpstreamError` subclasses, as at every transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import anyio.to_thread
import httpx2

from ccrotate._exceptions import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from ccrotate._upstream.base import DEFAULT_BODY_LIMIT, Transport

__all__ = ["AsyncInner", "AsyncInnerResponse", "SyncInner", "SyncInnerResponse", "mapped"]


@contextmanager
def mapped() -> Iterator[None]:
    """Map ``httpx2`` transport errors to :class:`~ccrotate.UpstreamError` subclasses."""
    try:
        yield
    except httpx2.TimeoutException as exc:
        raise UpstreamTimeout(str(exc) or type(exc).__name__) from exc
    except httpx2.ConnectError as exc:
        raise UpstreamConnectError(str(exc) or type(exc).__name__) from exc
    except httpx2.TransportError as exc:
        raise UpstreamProtocolError(str(exc) or type(exc).__name__) from exc


class _Head:
    # What both response adapters share: the head of an httpx2 response.
    __slots__ = ("response",)

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def headers(self) -> httpx2.Headers:
        return self.response.headers

    @property
    def raw_headers(self) -> Sequence[tuple[bytes, bytes]]:
        return self.response.headers.raw

    @property
    def content_type(self) -> str:
        return self.response.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def content_encoding(self) -> str | None:
        return self.response.headers.get("content-encoding")

    def chunks(self) -> AsyncIterator[bytes]:
        raise NotImplementedError  # each adapter reads its own kind of body stream

    async def read(self, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise _too_long(limit)
            parts.append(chunk)
        return b"".join(parts)


def _too_long(limit: int) -> UpstreamProtocolError:
    return UpstreamProtocolError(f"upstream response body is over {limit} bytes")


class AsyncInnerResponse(_Head):
    """An async ``httpx2`` response as an :class:`~ccrotate.UpstreamResponse`.

    ``raw`` is the one iterator over its body: the failover loop reads the first SSE
    event through :meth:`chunks`, and the relay to the SDK goes on from there.
    """

    __slots__ = ("_closed", "raw")

    def __init__(self, response: httpx2.Response) -> None:
        super().__init__(response)
        stream = response.stream
        if not isinstance(stream, httpx2.AsyncByteStream):
            raise TypeError("the inner transport of an async client must answer asynchronously")
        self.raw: AsyncIterator[bytes] = aiter(stream)
        self._closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            with mapped():
                try:
                    chunk = await anext(self.raw)
                except StopAsyncIteration:
                    return
            yield chunk

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self.response.aclose()


class SyncInnerResponse(_Head):
    """A sync ``httpx2`` response as an :class:`~ccrotate.UpstreamResponse`.

    The loop's reads run in a worker thread (the private event loop must not block);
    after hand-off the caller's thread reads ``raw`` directly.
    """

    __slots__ = ("_closed", "raw")

    def __init__(self, response: httpx2.Response) -> None:
        super().__init__(response)
        stream = response.stream
        if not isinstance(stream, httpx2.SyncByteStream):
            raise TypeError("the inner transport of a sync client must answer synchronously")
        self.raw: Iterator[bytes] = iter(stream)
        self._closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        end = object()
        while True:
            with mapped():
                chunk: Any = await anyio.to_thread.run_sync(next, self.raw, end)
            if chunk is end:
                return
            yield chunk

    def close(self) -> None:
        """Release the connection from the caller's thread (idempotent)."""
        if not self._closed:
            self._closed = True
            self.response.close()

    async def aclose(self) -> None:
        if not self._closed:
            await anyio.to_thread.run_sync(self.close)


def _request(method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes | None,
             extensions: dict[str, Any]) -> httpx2.Request:
    # The SDK's extensions carry its timeouts: keep them for every attempt.
    return httpx2.Request(method, url, headers=list(headers), content=body,
                          extensions=dict(extensions))


class AsyncInner(Transport):
    """An ``httpx2.AsyncBaseTransport`` as an :class:`~ccrotate.Upstream` for one request."""

    __slots__ = ("_extensions", "_transport")

    def __init__(self, transport: httpx2.AsyncBaseTransport, extensions: dict[str, Any]) -> None:
        self._transport = transport
        self._extensions = extensions

    async def send(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                   body: bytes | None) -> AsyncInnerResponse:
        request = _request(method, url, headers, body, self._extensions)
        with mapped():
            response = await self._transport.handle_async_request(request)
        return AsyncInnerResponse(response)


class SyncInner(Transport):
    """An ``httpx2.BaseTransport`` as an :class:`~ccrotate.Upstream`, sent from a worker thread."""

    __slots__ = ("_extensions", "_transport")

    def __init__(self, transport: httpx2.BaseTransport, extensions: dict[str, Any]) -> None:
        self._transport = transport
        self._extensions = extensions

    async def send(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                   body: bytes | None) -> SyncInnerResponse:
        request = _request(method, url, headers, body, self._extensions)
        with mapped():
            response = await anyio.to_thread.run_sync(self._transport.handle_request, request)
        return SyncInnerResponse(response)

