"""``RotatingTransport`` and ``AsyncRotatingTransport``: the pool inside the SDK's client.

Each request to the Messages API (``/v1/messages``, ``count_tokens``) or ``/v1/models``
becomes an :class:`~ccrotate._proxy.attempts.Attempt` and runs through the proxy's own
failover loop (:class:`~ccrotate._proxy.attempts.AttemptLoop`): the same account
choice, providers (credential, betas, identity block), error taxonomy, cooldowns and
OAuth refresh-and-retry as the server. The winner's body is handed to the SDK as a
stream; closing it releases the account.

The sync transport drives the (async) loop on one private event loop in a daemon
thread: concurrent threads share it, so a :class:`~ccrotate.TokenRefresher`'s per-account
lock keeps refreshes single-flight, which one ``asyncio.run`` per request could not.
Blocking sends run in worker threads; after hand-off the body is read in the caller's
thread, without the loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

import anyio
import httpx2
import msgspec

from ccrotate._client.upstream import AsyncInner, AsyncInnerResponse, SyncInner, SyncInnerResponse
from ccrotate._pool.pool import AccountPool
from ccrotate._pool.strategy import SelectionContext
from ccrotate._proxy.attempts import Attempt, AttemptLoop, Failed, LoopConfig, Refresher, Won
from ccrotate._proxy.headers import request_headers, response_headers
from ccrotate._proxy.record import RequestRecord, new_request_id
from ccrotate._proxy.session import session_key
from ccrotate._upstream.providers import OutgoingRequest, Providers
from ccrotate._wire import needs_identity, peek_request

__all__ = ["AsyncRotatingTransport", "RotatingTransport"]

T = TypeVar("T")

_ROUTES = ("/v1/messages", "/v1/messages/count_tokens")


def _route(path: str) -> str | None:
    if path in _ROUTES:
        return "messages" if path == "/v1/messages" else "count_tokens"
    if path == "/v1/models" or path.startswith("/v1/models/"):
        return "models"
    return None


def _prepare(request: httpx2.Request, body: bytes, pool: AccountPool) -> Attempt | Failed:
    """The request as the failover loop takes it, or the error to answer at once."""
    route = _route(request.url.path)
    if route is None:
        return Failed.of(404, "not_found_error", f"ccrotate: the rotating transport serves "
                         f"/v1/messages, count_tokens and /v1/models, not {request.url.path}")
    raw = [(k.lower(), v) for k, v in request.headers.raw]
    context = SelectionContext(headers=raw)
    wants_identity = False
    if route != "models" and body:
        try:
            peek = peek_request(body)
        except msgspec.MsgspecError as exc:
            return Failed.of(400, "invalid_request_error",
                             f"ccrotate: invalid request body ({exc})")
        wants_identity = route == "messages" and needs_identity(peek.system)
        user = peek.metadata.user_id if peek.metadata is not None else None
        key = session_key(user, raw, body, pool.session_header) if pool.affinity else None
        context = SelectionContext(model=peek.model, session_key=key, headers=raw)
    # The SDK's x-api-key / authorization go no further: request_headers drops them.
    fwd, beta, pinned = request_headers(raw)
    path = request.url.raw_path.decode("ascii")
    outgoing = OutgoingRequest(request.method, path, fwd, beta, body or None, wants_identity)
    return Attempt(outgoing, pinned, context)


def _record(request: httpx2.Request) -> RequestRecord:
    return RequestRecord(request_id=new_request_id(), started_at=time.time(),
                         route=request.url.path, method=request.method)


def _failed(failed: Failed, request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(failed.status, headers=failed.client_headers(),
                           content=failed.body, request=request)


def _won_headers(won: Won) -> list[tuple[bytes, bytes]]:
    headers = response_headers(won.response.raw_headers)
    headers.append((b"x-ccrotate-account", won.account.name.encode()))
    return headers


class _Options:
    # What both transports are built from; validated once.
    __slots__ = ("config", "pool", "providers", "refresher")

    def __init__(self, pool: AccountPool, refresher: Refresher | None, base_url: str,
                 max_attempts: int, providers: Providers | None) -> None:
        if not isinstance(pool, AccountPool):
            raise TypeError(f"pool must be an AccountPool, not {type(pool).__name__}")
        self.pool = pool
        self.refresher = refresher
        self.providers = providers or Providers(base_url)
        self.config = LoopConfig(max_attempts=max_attempts)


class _SyncRelay(httpx2.SyncByteStream):
    # The winner's body for the SDK: what the loop already read, then the rest, in the
    # caller's thread. Closing it (the SDK does, or ``with client.messages.stream``)
    # releases the connection and then the account.
    __slots__ = ("_closed", "_pool", "_won")

    def __init__(self, won: Won, pool: AccountPool) -> None:
        self._won, self._pool, self._closed = won, pool, False

    def __iter__(self) -> Iterator[bytes]:
        yield from self._won.head
        response = self._won.response
        if self._won.streaming and isinstance(response, SyncInnerResponse):
            yield from response.raw

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            response = self._won.response
            if isinstance(response, SyncInnerResponse):
                response.close()
        finally:
            self._pool.release(self._won.account.name)


class _AsyncRelay(httpx2.AsyncByteStream):
    # The async twin of _SyncRelay; the close is shielded so a cancelled reader still
    # returns the connection and the account.
    __slots__ = ("_closed", "_pool", "_won")

    def __init__(self, won: Won, pool: AccountPool) -> None:
        self._won, self._pool, self._closed = won, pool, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._won.head:
            yield chunk
        response = self._won.response
        if self._won.streaming and isinstance(response, AsyncInnerResponse):
            async for chunk in response.raw:
                yield chunk

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with anyio.CancelScope(shield=True):
                await self._won.response.aclose()
        finally:
            self._pool.release(self._won.account.name)


class _LoopThread:
    # One private event loop in a daemon thread, started on first use.
    __slots__ = ("_lock", "_loop", "_thread")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _running(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, daemon=True,
                                          name="ccrotate-rotating-transport")
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T], orphan: Any = None) -> T:
        """Run ``coro`` on the loop; if the caller gives up, ``orphan(result)`` cleans up."""
        future = asyncio.run_coroutine_threadsafe(coro, self._running())
        try:
            return future.result()
        except BaseException:
            # KeyboardInterrupt in a notebook: stop the attempt; a result that still
            # arrives (the race) is closed rather than leaked.
            future.cancel()
            if orphan is not None:
                future.add_done_callback(
                    lambda f: orphan(f.result()) if not f.cancelled()
                    and f.exception() is None else None)
            raise

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()


class RotatingTransport(httpx2.BaseTransport):
    """A sync ``httpx2`` transport that rotates each request over an :class:`~ccrotate.AccountPool`.

    ``anthropic.Anthropic(api_key="unused", http_client=httpx2.Client(
    transport=RotatingTransport(pool)))``: the SDK's own key never leaves the process;
    each request goes out with a pooled account's credential, fails over on a rate
    limit, overload or auth refusal before any byte reaches the SDK, and streams.
    With every account cooling the SDK gets a 429 with ``retry-after``.

    Parameters:
        pool: the accounts to rotate over.
        refresher: keeps OAuth tokens fresh (``ensure_fresh`` before use, one refresh and
            retry on a 401). It runs on this transport's private event loop: don't share
            one refresher with another event loop at the same time.
        base_url: the Messages API host (an account's ``base_url`` wins).
        max_attempts: most accounts tried for one request.
        transport: the inner transport that does the I/O (``httpx2.HTTPTransport()``).
        providers: how each kind of account is presented (built from ``base_url``).
    """

    def __init__(self, pool: AccountPool, *, refresher: Refresher | None = None,
                 base_url: str = "https://api.anthropic.com", max_attempts: int = 4,
                 transport: httpx2.BaseTransport | None = None,
                 providers: Providers | None = None) -> None:
        self._options = _Options(pool, refresher, base_url, max_attempts, providers)
        self._inner = transport if transport is not None else httpx2.HTTPTransport()
        self._runner = _LoopThread()

    @property
    def pool(self) -> AccountPool:
        """The pool this transport rotates over."""
        return self._options.pool

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        prepared = _prepare(request, request.read(), self._options.pool)
        if isinstance(prepared, Failed):
            return _failed(prepared, request)
        options = self._options
        loop = AttemptLoop(options.pool, SyncInner(self._inner, request.extensions),
                           options.providers, config=options.config, refresher=options.refresher)
        outcome = self._runner.run(loop.run(prepared, _record(request)), orphan=self._orphan)
        if isinstance(outcome, Failed):
            return _failed(outcome, request)
        return httpx2.Response(outcome.response.status, headers=_won_headers(outcome),
                               stream=_SyncRelay(outcome, options.pool), request=request)

    def _orphan(self, outcome: Won | Failed) -> None:
        if isinstance(outcome, Won):
            _SyncRelay(outcome, self._options.pool).close()

    def close(self) -> None:
        self._runner.stop()
        self._inner.close()


class AsyncRotatingTransport(httpx2.AsyncBaseTransport):
    """The async :class:`RotatingTransport`, for ``anthropic.AsyncAnthropic``.

    ``anthropic.AsyncAnthropic(api_key="unused", http_client=httpx2.AsyncClient(
    transport=AsyncRotatingTransport(pool)))``. The failover loop and the refresher run
    in the caller's event loop.

    Parameters:
        pool: the accounts to rotate over.
        refresher: keeps OAuth tokens fresh (``ensure_fresh`` before use, one refresh and
            retry on a 401).
        base_url: the Messages API host (an account's ``base_url`` wins).
        max_attempts: most accounts tried for one request.
        transport: the inner transport that does the I/O (``httpx2.AsyncHTTPTransport()``).
        providers: how each kind of account is presented (built from ``base_url``).
    """

    def __init__(self, pool: AccountPool, *, refresher: Refresher | None = None,
                 base_url: str = "https://api.anthropic.com", max_attempts: int = 4,
                 transport: httpx2.AsyncBaseTransport | None = None,
                 providers: Providers | None = None) -> None:
        self._options = _Options(pool, refresher, base_url, max_attempts, providers)
        self._inner = transport if transport is not None else httpx2.AsyncHTTPTransport()

    @property
    def pool(self) -> AccountPool:
        """The pool this transport rotates over."""
        return self._options.pool

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        prepared = _prepare(request, await request.aread(), self._options.pool)
        if isinstance(prepared, Failed):
            return _failed(prepared, request)
        options = self._options
        loop = AttemptLoop(options.pool, AsyncInner(self._inner, request.extensions),
                           options.providers, config=options.config, refresher=options.refresher)
        outcome = await loop.run(prepared, _record(request))
        if isinstance(outcome, Failed):
            return _failed(outcome, request)
        return httpx2.Response(outcome.response.status, headers=_won_headers(outcome),
                               stream=_AsyncRelay(outcome, options.pool), request=request)

    async def aclose(self) -> None:
        await self._inner.aclose()
