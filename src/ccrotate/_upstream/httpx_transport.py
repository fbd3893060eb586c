"""An upstream transport over the user's own ``httpx.AsyncClient`` (or ``httpx2.AsyncClient``).

For the cases the default transport cannot cover: a corporate proxy (its own client
honours ``HTTPS_PROXY``) or TLS already configured on an httpx client, or
``pytest-httpx`` (and ``httpx2-pytest``) mocking the upstream in a user's tests. It is
not the fast path: httpcore's default pool is several times slower than aiohttp under
concurrency, and aiohttp slower than :class:`~ccrotate.HttptoolsUpstream`, the default
(docs/benchmarks.md).

Bodies pass through as received (``aiter_raw``): the proxy forwards
``content-encoding`` as-is, so decoding here would corrupt them. httpx is
imported on first use, so ``import ccrotate`` never pays for it.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

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
    import httpx
    import httpx2

__all__ = ["HTTPXUpstream"]

# The headers httpx adds to every request of a client it builds. On a client this
# transport creates, these two are removed so the upstream sees what the caller sent:
# the caller's own User-Agent (or none, as with aiohttp) and its own Accept-Encoding
# (a default "gzip" would have the upstream compress bodies nobody asked to compress).
_OWN_CLIENT_DROP = ("user-agent", "accept-encoding")


@dataclass(frozen=True, slots=True)
class _Errors:
    """The exception classes of the httpx flavour (httpx or httpx2) a client comes from."""

    timeout: type[BaseException]
    caught: tuple[type[BaseException], ...]

    @classmethod
    def of(cls, module_name: str) -> _Errors:
        mod = importlib.import_module(module_name)
        # HTTPError covers every transport, decoding and redirect error; StreamError
        # (closed or consumed stream) and InvalidURL sit outside it. OSError is for
        # custom transports that let a socket error through unmapped.
        return cls(mod.TimeoutException,
                   (mod.HTTPError, mod.StreamError, mod.InvalidURL, OSError))

    def on_send(self, exc: BaseException) -> UpstreamError:
        """Before a response head: the request never got an answer."""
        # Only the exception's type name: its text may come from any custom transport
        # and this message reaches clients in a 502 body. The cause keeps the rest.
        if isinstance(exc, self.timeout):
            return UpstreamTimeout(f"upstream timed out ({type(exc).__name__})")
        return UpstreamConnectError(f"cannot reach upstream ({type(exc).__name__})")

    def on_body(self, exc: BaseException) -> UpstreamError:
        """While reading a body: the response started and then broke."""
        if isinstance(exc, self.timeout):
            return UpstreamTimeout(f"upstream timed out mid-response ({type(exc).__name__})")
        return UpstreamProtocolError(f"upstream response was cut off ({type(exc).__name__})")


def _flavour(client: object) -> str:
    """``"httpx"`` or ``"httpx2"``: whose ``AsyncClient`` ``client`` is (subclasses too)."""
    for cls in type(client).__mro__:
        root = cls.__module__.partition(".")[0]
        if cls.__name__ == "AsyncClient" and root in ("httpx", "httpx2"):
            return root
    raise ConfigError(f"HTTPXUpstream needs an httpx.AsyncClient or httpx2.AsyncClient, "
                      f"not {type(client).__name__}")


class _Response:
    """One streamed httpx response as an :class:`UpstreamResponse`; :meth:`aclose` is idempotent."""

    __slots__ = ("_closed", "_errors", "_raw", "_resp", "headers", "raw_headers", "status")

    def __init__(self, resp: httpx.Response, errors: _Errors) -> None:
        self._resp = resp
        self._raw: AsyncIterator[bytes] | None = None
        self._errors = errors
        self._closed = False
        self.status = resp.status_code
        self.headers: httpx.Headers = resp.headers
        # .raw keeps the names' original case and repeated headers, as the protocol asks.
        self.raw_headers: Sequence[tuple[bytes, bytes]] = resp.headers.raw

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-case (``""`` when absent)."""
        value = self.headers.get("content-type") or ""
        return value.partition(";")[0].strip().lower()

    @property
    def content_encoding(self) -> str | None:
        """The upstream ``content-encoding``; the raw bytes are passed on still encoded."""
        value: str | None = self.headers.get("content-encoding")
        return value

    def _body(self) -> AsyncIterator[bytes]:
        # One iterator for the response's life: httpx allows a single aiter_raw() call,
        # and the proxy reads a stream's first event through one chunks() iterator and
        # relays the rest through another.
        if self._raw is None:
            self._raw = self._resp.aiter_raw()
        return self._raw

    async def read(self, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
        """The whole raw body. Raises :class:`UpstreamProtocolError` past ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in self._body():
                size += len(chunk)
                if size > limit:
                    raise UpstreamProtocolError("upstream body larger than the proxy accepts")
                parts.append(chunk)
        except self._errors.caught as exc:
            raise self._errors.on_body(exc) from exc
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Raw body chunks as they arrive (no decompression, no re-chunking)."""
        try:
            async for chunk in self._body():
                yield chunk
        except self._errors.caught as exc:
            raise self._errors.on_body(exc) from exc

    async def aclose(self) -> None:
        """Release the connection (to the pool if the body was read, else dropped)."""
        if self._closed:
            return
        self._closed = True
        # Shielded: a cancelled request must still give its connection back (STYLE §2.2).
        # An error while closing a broken connection is no news: it is dropped either way.
        with anyio.CancelScope(shield=True), contextlib.suppress(*self._errors.caught):
            await self._resp.aclose()


class HTTPXUpstream(Transport):
    """A transport over an ``httpx.AsyncClient`` (or an ``httpx2.AsyncClient``).

    Parameters:
        client: the client to send with, configured as you like (proxy, TLS, mocked
            transport). ``None``: the transport creates an ``httpx.AsyncClient`` itself.
        timeouts: connect/read timeouts and pool size of the client it creates; only
            valid without ``client`` (configure your own client's timeouts on it).

    Who closes what: a client you pass is yours. :meth:`aclose` leaves it open (so one
    client can serve several transports or outlive the proxy); close it yourself. A
    client the transport created is closed by :meth:`aclose` and re-created on the
    next :meth:`start` or request. Redirects are never followed and bodies pass
    through undecoded, whatever the client's settings.
    """

    def __init__(self, client: httpx.AsyncClient | httpx2.AsyncClient | None = None, *,
                 timeouts: Timeouts | None = None) -> None:
        if client is not None and timeouts is not None:
            raise ConfigError("HTTPXUpstream: timeouts apply only to the client it creates; "
                              "set them on the client you pass instead")
        self.timeouts = timeouts or Timeouts()
        self._owns_client = client is None
        # httpx2 keeps httpx's API (build_request, send(stream=True), aiter_raw, aclose),
        # so both are driven through httpx's types; only the exception classes differ.
        self._client: httpx.AsyncClient | None = cast("httpx.AsyncClient | None", client)
        self._errors = _Errors.of(_flavour(client) if client is not None else "httpx")

    @property
    def client(self) -> httpx.AsyncClient | httpx2.AsyncClient | None:
        """The client in use (``None`` before a created one is opened or after it closed)."""
        return self._client

    async def start(self) -> None:
        """Create the client if this transport owns it (idempotent)."""
        if self._client is None and self._owns_client:
            import httpx

            t = self.timeouts
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.read,
                                      pool=t.connect),
                limits=httpx.Limits(max_connections=t.pool_size,
                                    max_keepalive_connections=t.pool_size,
                                    keepalive_expiry=30.0),
                follow_redirects=False)
            for name in _OWN_CLIENT_DROP:
                del client.headers[name]
            self._client = client

    async def aclose(self) -> None:
        """Close the client if this transport created it; a client you passed stays open."""
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def send(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                   body: bytes | None) -> _Response:
        """Send one request and return once the response head has arrived."""
        if self._client is None:
            await self.start()
        client = self._client
        if client is None:  # pragma: no cover - start() always sets an owned client
            raise UpstreamConnectError("upstream client could not be opened")
        if client.is_closed:
            # httpx would raise a RuntimeError: a client passed in and closed by its owner.
            raise UpstreamConnectError("the httpx client of HTTPXUpstream is closed")
        try:
            request = client.build_request(method, url, headers=list(headers), content=body)
            # stream=True: the head only. httpx closes the response itself if this
            # call is cancelled or fails, so nothing is left to release here.
            resp = await client.send(request, stream=True, follow_redirects=False)
        except self._errors.caught as exc:
            raise self._errors.on_send(exc) from exc
        return _Response(resp, self._errors)
