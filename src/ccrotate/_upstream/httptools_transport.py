"""A lean HTTP/1.1 client for the proxy's one job: asyncio protocols and httptools' parser.

Why its own client: after ccrotate's own work, the upstream client was the largest cost
of a proxied request (a third of the CPU in the profile, docs/benchmarks.md). aiohttp
builds a request object, a payload, automatic headers, a timer and a response object
per request; the proxy needs none of that. Here a request is one ``write`` of bytes
joined once, the response head and body come from httptools' C parser straight into
the response, and the pool is a LIFO list of idle connections per origin.

What it does not do (use :class:`~ccrotate.HTTPXUpstream` for these): HTTP proxies,
HTTP/2, redirects, cookies, decompression (bytes pass through still encoded, as with
the other transports).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import anyio
import httptools

from ccrotate._exceptions import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from ccrotate._upstream.base import DEFAULT_BODY_LIMIT, RawHeaders, Timeouts, Transport

if TYPE_CHECKING:
    import ssl

__all__ = ["HttptoolsUpstream"]

_KEEPALIVE = 30.0  # seconds an idle connection is kept (as AiohttpUpstream's pool)
_HIGH_WATER = 1 << 20  # buffered body bytes past which reading pauses until drained
_TARGET_SAFE = "/?:@!$&'()*+,;=%~"
_IDEMPOTENT = frozenset({"GET", "OPTIONS"})  # HEAD is never sent: the proxy routes no HEAD
_Origin = tuple[str, str, int]


class _Response:
    """One response as an :class:`~ccrotate._upstream.base.UpstreamResponse`."""

    __slots__ = ("_buffered", "_closed", "_conn", "_read_all", "_total", "body",
                 "complete", "content_encoding", "content_type", "error", "headers",
                 "raw_headers", "status")

    def __init__(self, conn: _Conn, status: int, raw: list[tuple[bytes, bytes]],
                 content_type: str, content_encoding: str | None) -> None:
        self._conn = conn
        self.status = status
        self.raw_headers = raw
        self.headers = RawHeaders(raw)
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.body: list[bytes] = []
        self._buffered = 0
        self._total = 0
        self._read_all = False
        self.complete = False
        self.error: UpstreamError | None = None
        self._closed = False

    def _take(self) -> bytes:
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self._buffered = 0
        return data

    async def read(self, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
        """The whole (raw) body. Raises :class:`UpstreamProtocolError` past ``limit`` bytes."""
        self._read_all = True  # no pause at the high-water mark: everything is wanted
        conn = self._conn
        while not self.complete:
            if self._total > limit:
                break
            if self.error is not None:
                raise self.error
            await conn.wait()
        if self._total > limit:
            raise UpstreamProtocolError("upstream body larger than the proxy accepts")
        return self._take() if self.body else b""

    async def chunks(self) -> AsyncIterator[bytes]:
        """Raw body chunks as they arrive (what has arrived since the last one, joined)."""
        conn = self._conn
        while True:
            if self.body:
                yield self._take()
            elif self.complete:
                return
            elif self.error is not None:
                raise self.error
            else:
                await conn.wait()

    async def aclose(self) -> None:
        """Release the connection: to the pool if the answer was read whole, else closed."""
        if self._closed:
            return
        self._closed = True
        self._conn.done(self.complete)


class _Conn(asyncio.Protocol):
    """One upstream connection; httptools calls back into it as bytes arrive."""

    __slots__ = ("_ctype", "_encoding", "_framed", "_head", "_raw", "_waiter", "closed",
                 "got_bytes", "idle_since", "keep_alive", "loop", "origin", "parser",
                 "paused", "pool", "resp", "transport")

    def __init__(self, pool: HttptoolsUpstream, origin: _Origin,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = loop
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.resp: _Response | None = None
        self._head: asyncio.Future[_Response] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._raw: list[tuple[bytes, bytes]] = []
        self._ctype = ""
        self._encoding: str | None = None
        self._framed = False
        self.closed = False
        self.got_bytes = False
        self.keep_alive = False
        self.paused = False
        self.idle_since = 0.0

    # -- asyncio -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(_caused(UpstreamProtocolError("upstream sent malformed HTTP"), exc))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        resp = self.resp
        if resp is not None and exc is None and not self._framed and not resp.complete:
            # Neither a length nor chunks: the answer ends where the connection does.
            resp.complete = True
            self._wake()
            return
        if resp is not None and resp.complete:
            return
        cause = exc if exc is not None else EOFError("the upstream closed the connection")
        if resp is not None:
            self._fail(_caused(UpstreamProtocolError("upstream response was cut off"), cause))
        else:
            self._fail(_caused(UpstreamConnectError("upstream closed the connection"), cause))

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._raw = []
        self._ctype = ""
        self._encoding = None
        self._framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))
        size = len(name)
        # Compared by length first: two headers of ~15 need their value read.
        if size == 12 and name.lower() == b"content-type":
            self._ctype = value.partition(b";")[0].strip().lower().decode("latin-1")
        elif size == 16 and name.lower() == b"content-encoding":
            self._encoding = value.decode("latin-1")
        elif (size == 14 and name.lower() == b"content-length") or (
                size == 17 and name.lower() == b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        head = self._head
        if head is None or head.done():
            # An answer nobody asked for: the connection cannot be trusted any more.
            self.close()
            return
        status = self.parser.get_status_code()
        if status < 200:
            return  # 1xx (never asked for) is skipped: its final answer follows
        resp = self.resp = _Response(self, status, self._raw, self._ctype, self._encoding)
        head.set_result(resp)

    def on_body(self, body: bytes) -> None:
        resp = self.resp
        if resp is None:
            return
        resp.body.append(body)
        size = len(body)
        resp._buffered += size
        resp._total += size
        if resp._buffered > _HIGH_WATER and not resp._read_all and not self.paused:
            self.paused = True
            if self.transport is not None:
                self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        resp = self.resp
        if resp is None:
            return
        resp.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    # -- the consumer's side -------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        resp = self.resp
        if resp is not None and resp.error is None and not resp.complete:
            resp.error = error
        self._wake()

    def _timed_out(self) -> None:
        self._fail(_caused(UpstreamTimeout("upstream timed out"), TimeoutError(
            f"nothing received for {self.pool.timeouts.read:g} s")))

    async def wait(self) -> None:
        """Until more of the answer (or its end, or an error) has arrived; the read timeout
        bounds the silence."""
        if self.paused:
            self.paused = False
            if self.transport is not None:
                self.transport.resume_reading()
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_later(self.pool.timeouts.read, self._timed_out)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def exchange(self, data: bytes) -> _Response:
        """Write one request and wait for its answer's head."""
        self.got_bytes = False
        self.resp = None
        head: asyncio.Future[_Response] = self.loop.create_future()
        self._head = head
        if self.transport is None or self.closed:
            raise UpstreamConnectError("upstream closed the connection")
        self.transport.write(data)
        timer = self.loop.call_later(self.pool.timeouts.read, self._timed_out)
        try:
            return await head
        finally:
            timer.cancel()
            self._head = None

    def done(self, complete: bool) -> None:
        """The response's owner is finished with it."""
        self.resp = None
        self.pool._release(self, complete and self.keep_alive and not self.closed)

    def close(self) -> None:
        """Drop the connection (a half-read answer cannot be reused)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttptoolsUpstream(Transport):
    """A lean HTTP/1.1 client: one write per request, httptools' C parser, a LIFO pool.

    The default, and the fastest transport measured for the proxy's hot path
    (docs/benchmarks.md). HTTP/1.1 with keep-alive, TLS by the standard library; for
    HTTP proxies or mocks, use :class:`~ccrotate.HTTPXUpstream`.

    Parameters:
        timeouts: connect and read timeouts, and the most connections open at once.
        ssl_context: the TLS settings for ``https`` upstreams (a private CA, a client
            certificate); by default ``ssl.create_default_context()``, the system's CAs.
    """

    def __init__(self, *, timeouts: Timeouts | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeouts = timeouts or Timeouts()
        self._idle: dict[_Origin, collections.deque[_Conn]] = {}
        self._targets: dict[str, tuple[_Origin, bytes]] = {}
        self._open = 0
        self._slots: collections.deque[asyncio.Future[None]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tls = ssl_context
        self._closed = False

    @property
    def open_connections(self) -> int:
        """Upstream connections open now, in use or idle (0 once closed and drained)."""
        return self._open

    @property
    def idle_connections(self) -> int:
        """Open connections waiting in the pool for the next request."""
        return sum(len(idle) for idle in self._idle.values())

    async def start(self) -> None:
        """Ready to send (connections open on demand, so this is optional; idempotent)."""
        self._closed = False

    async def aclose(self) -> None:
        """Close every idle connection; those in use close as their answers end. A later
        request opens connections anew."""
        self._closed = True
        for idle in self._idle.values():
            while idle:
                self._drop(idle.pop())
        self._idle.clear()
        while self._slots:
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_exception(UpstreamConnectError("upstream transport closed"))

    async def send(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                   body: bytes | None) -> _Response:
        """Send one request and return once the response head has arrived."""
        target = self._targets.get(url)
        if target is None:
            target = self._target(url)
        origin, request_line = target
        data = _encode(method, request_line, headers, body)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._rebind(loop)
        conn = self._reuse(origin, loop)
        if conn is not None:
            try:
                return await conn.exchange(data)
            except UpstreamConnectError:
                self._release(conn, reusable=False)
                # The upstream closed an idle connection as the request went out on it
                # (a keep-alive race). Like aiohttp, only an idempotent request goes
                # again; a POST may have been acted on, and fails over instead.
                if conn.got_bytes or method not in _IDEMPOTENT:
                    raise
            except BaseException:
                self._release(conn, reusable=False)
                raise
        conn = await self._connect(origin, loop)
        try:
            return await conn.exchange(data)
        except BaseException:
            self._release(conn, reusable=False)
            raise

    # -- the pool ------------------------------------------------------------------------

    def _target(self, url: str) -> tuple[_Origin, bytes]:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        # The messages never quote the URL: an account's base URL may carry credentials.
        if scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamConnectError("cannot connect to upstream: unsupported URL "
                                       f"(scheme {scheme!r}, an http or https URL expected)")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise UpstreamConnectError("cannot connect to upstream: bad port in the URL") from exc
        netloc = parts.netloc.rpartition("@")[2]
        if not netloc.isascii() or not netloc.isprintable() or " " in netloc:
            raise UpstreamConnectError("cannot connect to upstream: bad host in the URL")
        # The path comes decoded from the client's request (a model id, say): a space or
        # a CR LF in it would split the request line, so everything outside RFC 3986's
        # path and query characters is percent-encoded, as aiohttp's URL does.
        path = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                     safe=_TARGET_SAFE)
        line = f" {path} HTTP/1.1\r\nhost: {netloc}".encode("ascii")
        target = ((scheme, parts.hostname, port), line)
        if len(self._targets) >= 256:
            self._targets.clear()  # a bound, not a cache policy: URLs barely vary
        self._targets[url] = target
        return target

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        # Connections belong to the loop that opened them (a notebook may run several).
        if self._loop is not None:
            for idle in self._idle.values():
                for conn in idle:
                    conn.closed = True
            self._idle = {}
            self._open = 0
            self._slots.clear()
        self._loop = loop

    def _reuse(self, origin: _Origin, loop: asyncio.AbstractEventLoop) -> _Conn | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn.closed and loop.time() - conn.idle_since < _KEEPALIVE:
                return conn
            self._drop(conn)
        return None

    async def _connect(self, origin: _Origin, loop: asyncio.AbstractEventLoop) -> _Conn:
        self._closed = False
        while self._open >= self.timeouts.pool_size:
            # At the cap: a connection to this origin freed meanwhile is taken, an idle
            # one to another origin is let go, else wait for one to come back.
            conn = self._reuse(origin, loop)
            if conn is not None:
                return conn
            if not self._drop_an_idle():
                slot = loop.create_future()
                self._slots.append(slot)
                await slot
        self._open += 1
        try:
            return await self._dial(origin, loop)
        except BaseException:
            self._open -= 1
            self._next_slot()
            raise

    async def _dial(self, origin: _Origin, loop: asyncio.AbstractEventLoop) -> _Conn:
        scheme, host, port = origin
        tls = None
        if scheme == "https":
            tls = self._tls
            if tls is None:
                # Reading the system's CA store takes tens of milliseconds: not on the loop.
                import ssl

                tls = self._tls = await anyio.to_thread.run_sync(ssl.create_default_context)
        try:
            with anyio.fail_after(self.timeouts.connect):
                _, conn = await loop.create_connection(
                    lambda: _Conn(self, origin, loop), host, port, ssl=tls,
                    server_hostname=host if tls is not None else None)
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream timed out") from exc
        except OSError as exc:
            raise UpstreamConnectError(
                f"cannot connect to upstream: {exc.strerror or exc}") from exc
        return conn

    def _release(self, conn: _Conn, reusable: bool) -> None:
        same_loop = conn.loop is self._loop
        if reusable and same_loop and not self._closed:
            conn.idle_since = conn.loop.time()
            idle = self._idle.get(conn.origin)
            if idle is None:
                idle = self._idle[conn.origin] = collections.deque()
            idle.append(conn)
            # LIFO keeps the newest busy; the oldest are let go once past keep-alive.
            while idle[0].closed or conn.idle_since - idle[0].idle_since >= _KEEPALIVE:
                self._drop(idle.popleft())
            self._next_slot()  # a request parked at the cap may take it
            return
        if same_loop:
            self._drop(conn)
            self._next_slot()
        else:
            conn.close()

    def _drop_an_idle(self) -> bool:
        for idle in self._idle.values():
            if idle:
                self._drop(idle.popleft())
                return True
        return False

    def _drop(self, conn: _Conn) -> None:
        conn.close()
        self._open -= 1

    def _next_slot(self) -> None:
        while self._slots:
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_result(None)
                return


def _caused(error: UpstreamError, cause: BaseException) -> UpstreamError:
    # As if raised "from" the cause: every transport keeps the original as __cause__.
    error.__cause__ = cause
    return error


def _encode(method: str, request_line: bytes, headers: Sequence[tuple[str, str]],
            body: bytes | None) -> bytes:
    lines = [f"{k}: {v}" for k, v in headers]
    if body is not None:
        lines.append(f"content-length: {len(body)}")
    text = "\r\n" + "\r\n".join(lines) if lines else ""
    # A CR or LF inside a name or value would start a header of the caller's choosing.
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        raise UpstreamConnectError("cannot send upstream: a header contains a line break")
    try:
        head = method.encode("ascii") + request_line + text.encode("latin-1") + b"\r\n\r\n"
    except UnicodeEncodeError as exc:
        raise UpstreamConnectError("cannot send upstream: a header is not Latin-1") from exc
    return head + body if body else head
