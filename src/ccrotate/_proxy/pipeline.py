"""One request pipeline for every dialect.

Per request: authenticate the client, read the body, let the route prepare an
attempt, run the attempt loop under the request deadline, then relay the
winner through the route's adapter. While the proxy waits on the upstream or
relays it, a watcher listens for ``http.disconnect`` and cancels everything
when the client leaves (within 0.1 s, see watch.py), so no tokens are spent on
an answer nobody reads. Per-request state lives in locals only: one pipeline
serves every request concurrently.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence

import anyio

from ccrotate._asgi import (
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    json_body_ok,
    read_body,
    send_bytes,
)
from ccrotate._exceptions import UpstreamError, UpstreamProtocolError
from ccrotate._proxy.attempts import AttemptLoop, Failed, Won, run_attempts
from ccrotate._proxy.dialects.base import ClientRequest, Prepared, ResponseAdapter, Route
from ccrotate._proxy.record import (
    Observer,
    RequestRecord,
    apply_usage,
    new_request_id,
    notify_request,
)
from ccrotate._proxy.watch import DEADLINE, Watch, Watches
from ccrotate._wire import parse_error, usage_of_body

__all__ = ["Authenticator", "Pipeline", "refusal", "watch_disconnect"]

Authenticator = Callable[[Sequence[tuple[bytes, bytes]]], bool]


class Pipeline:
    """Serves one route's request end to end; shared by every route and dialect.

    Parameters:
        loop: the attempt loop (pool, upstream, providers, refresher).
        authenticate: ``headers -> bool``; refused requests get a 401 before any account
            is touched.
        observers: receive a :class:`RequestRecord` per request.
        max_body_size: largest request body accepted (413 beyond).
        request_timeout: seconds from the request's arrival until an account must have
            answered, across every attempt (504 beyond).
        body_timeout: seconds the client has to send its whole body (408 beyond).
    """

    __slots__ = ("_watches", "authenticate", "body_timeout", "loop", "max_body_size",
                 "observers", "request_timeout")

    def __init__(self, loop: AttemptLoop, *, authenticate: Authenticator | None = None,
                 observers: list[Observer] | None = None,
                 max_body_size: int = 32 * 1024 * 1024,
                 request_timeout: float = 600.0, body_timeout: float | None = 60.0) -> None:
        self.loop = loop
        self.authenticate = authenticate
        self.observers = observers if observers is not None else []
        self.max_body_size = max_body_size
        self.request_timeout = request_timeout
        self.body_timeout = body_timeout
        self._watches: Watches | None = None

    async def handle(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request on ``route`` and tell the observers about it."""
        record = RequestRecord(request_id=new_request_id(), started_at=time.time(),
                               route=route.name, method=route.method)
        t0 = time.perf_counter()
        try:
            # Refusals speak the route's dialect: OpenAI clients understand only theirs.
            refusal = self._refusal(scope)
            if refusal is not None:
                await _refuse(send, record, route, refusal)
            else:
                await self._handle(route, scope, receive, send, record, t0)
        finally:
            record.latency = time.perf_counter() - t0
            notify_request(self.observers, record)

    def _refusal(self, scope: Scope) -> Failed | None:
        found = refusal(self.authenticate, scope)
        return None if found is None else Failed.of(*found)

    async def _handle(self, route: Route, scope: Scope, receive: Receive, send: Send,
                      record: RequestRecord, t0: float) -> None:
        # One cancel scope, and no timer or task of its own: the request registers a Watch,
        # and the loop's one sweeper cancels the scope at the body deadline while the body
        # arrives, at the request deadline while accounts are tried, and when the client
        # leaves (watch.py). A scope, not the task, so shielded work inside completes.
        watches = self._watches
        if watches is None or watches.loop is not asyncio.get_running_loop():
            watches = self._watches = Watches(asyncio.get_running_loop(), self.body_timeout,
                                              self.request_timeout)
        run = _Run()
        with watches.scope_type() as cancel:
            watch = watches.enter(cancel, self.body_timeout)
            try:
                try:
                    body = await read_body(scope, receive, self.max_body_size)
                except BodyTooLarge:
                    await _refuse(send, record, route, Failed.of(
                        413, "request_too_large",
                        f"ccrotate: request body exceeds {self.max_body_size} bytes"))
                    return
                except ClientGone:
                    record.status, record.client_disconnected = 499, True
                    return
                # A deadline that passed as the last bytes came cancels nothing more: a 408.
                if watch.reason is None:
                    run.body_read = True
                    watch.watch(receive, record, watches.loop.time() + self.request_timeout)
                    await self._prepared(route, scope, body, send, record, t0, watch, run)
            finally:
                watches.leave(watch)
        if not run.body_read:
            await self._body_timed_out(send, record, route)
            return
        if run.prepared is not None:
            await self._served(send, run.prepared, record, watch)

    async def _prepared(self, route: Route, scope: Scope, body: bytes, send: Send,
                        record: RequestRecord, t0: float, watch: Watch, run: _Run) -> None:
        prepared = await route.prepare(ClientRequest(scope, body, record, self.loop))
        if isinstance(prepared, Failed):
            # Already in the route's own shape, its error type already recorded.
            record.status = prepared.status
            await send_bytes(send, prepared.status, prepared.headers, prepared.body)
            return
        run.prepared = prepared
        await self._serve(prepared, send, record, t0, watch)

    async def _body_timed_out(self, send: Send, record: RequestRecord, route: Route) -> None:
        failed = Failed.of(408, "timeout_error", "ccrotate: request body not received "
                           f"within {self.body_timeout:g} s")
        # The rest of the body may still be trickling in: end the connection with it.
        failed.headers.append((b"connection", b"close"))
        await _refuse(send, record, route, failed)

    async def _serve(self, prepared: Prepared, send: Send, record: RequestRecord, t0: float,
                     watch: Watch) -> None:
        # The request deadline covers every attempt until an answer starts; a started
        # answer is bounded by the read timeout between chunks.
        try:
            # run_attempts, not loop.run: one coroutine frame fewer to resume at each await.
            outcome = await run_attempts(prepared.attempt, self.loop, record)
            watch.deadline = math.inf
            if isinstance(outcome, Failed):
                record.account = outcome.account
                await _relay_error(send, prepared.adapter, outcome, record)
                watch.relayed = True
            else:
                record.account = outcome.account.name
                try:
                    await _relay(send, prepared, outcome, record, t0)
                    watch.relayed = True
                finally:
                    try:
                        await outcome.response.aclose()
                    finally:
                        self.loop.pool.release(outcome.account.name)
        except OSError:
            # ASGI spec 2.4 servers raise on send() once the client is gone.
            record.client_disconnected = True

    async def _served(self, send: Send, prepared: Prepared, record: RequestRecord,
                      watch: Watch) -> None:
        if watch.error is not None:
            raise watch.error  # receive() itself failed, as a task group would have raised it
        if watch.relayed:
            # Servers answer receive() with http.disconnect once the response is complete,
            # and the watcher may read that before it is cancelled: not a client leaving.
            record.client_disconnected = False
        elif (watch.reason == DEADLINE and watch.scope.cancelled_caught
              and not record.client_disconnected):
            await self._deadline_passed(send, prepared, record)
        if record.client_disconnected:
            record.status = 499

    async def _deadline_passed(self, send: Send, prepared: Prepared,
                               record: RequestRecord) -> None:
        try:
            await _relay_error(send, prepared.adapter, Failed.of(
                504, "api_error", "ccrotate: no account answered within "
                f"{math.ceil(self.request_timeout)} s (request_timeout)"), record)
        except OSError:
            record.client_disconnected = True


def refusal(authenticate: Authenticator | None, scope: Scope) -> tuple[int, str, str] | None:
    """Why a request is refused before its body is read, as (status, error type, message):
    a wrong client key, or a body not declared as JSON. ``None`` lets it through."""
    if authenticate is not None and not authenticate(scope["headers"]):
        return 401, "authentication_error", "ccrotate: invalid or missing client key"
    if not json_body_ok(scope):
        # text/plain is how a web page skips the CORS preflight (docs/security.md).
        return 415, "invalid_request_error", "ccrotate: the request body must be application/json"
    return None


class _Run:
    # What one request reached while watched, read once the watch is left.
    __slots__ = ("body_read", "prepared")

    def __init__(self) -> None:
        self.body_read = False
        self.prepared: Prepared | None = None


async def _refuse(send: Send, record: RequestRecord, route: Route, failed: Failed) -> None:
    record.error_type = parse_error(failed.body)[0]
    shown = route.refusal(failed)
    record.status = shown.status
    await send_bytes(send, shown.status, shown.headers, shown.body)


async def _relay_error(send: Send, adapter: ResponseAdapter, failed: Failed,
                       record: RequestRecord) -> None:
    record.error_type = parse_error(failed.body)[0]
    shown = adapter.error(failed)
    record.status = shown.status
    await send_bytes(send, shown.status, shown.headers, shown.body)


async def _relay(send: Send, prepared: Prepared, won: Won, record: RequestRecord,
                 t0: float) -> None:
    adapter = prepared.adapter
    resp = won.response
    if not won.streaming:
        raw = won.head[0]
        try:
            body = adapter.body(won, raw)
        except UpstreamProtocolError as exc:
            await _relay_error(send, adapter, Failed.of(502, "api_error", f"ccrotate: {exc}"),
                               record)
            return
        status, headers = adapter.head(won)
        if prepared.usage_from_body and resp.content_encoding is None:
            apply_usage(record, usage_of_body(raw))
        record.status = status
        record.ttfb = time.perf_counter() - t0
        await send_bytes(send, status, headers, body)
        return
    status, headers = adapter.head(won)
    record.status = status
    await send({"type": "http.response.start", "status": status, "headers": headers})
    record.ttfb = time.perf_counter() - t0
    stream = adapter.stream(won)
    scanner = won.scanner
    # A pass-through stream (Anthropic's) is not called per chunk: the bytes go as they came.
    feed = None if getattr(stream, "passthrough", False) else stream.feed
    for chunk in won.head:  # the scanner has already seen the head
        data = chunk if feed is None else feed(chunk)
        if data:
            await send({"type": "http.response.body", "body": data, "more_body": True})
    try:
        async for chunk in resp.chunks():
            if scanner is not None:
                scanner.feed(chunk)
            data = chunk if feed is None else feed(chunk)
            if data:
                await send({"type": "http.response.body", "body": data, "more_body": True})
    except UpstreamError as exc:
        # Only the upstream dying mid-stream: an OSError from send() is the client
        # leaving (ASGI 2.4) and must reach the pipeline untouched, not become an error.
        record.error_type = "api_error"
        tail = stream.fail(str(exc))
        if tail is None:
            raise
    else:
        ended_early = scanner is not None and not scanner.finished and scanner.error is None
        if ended_early:
            record.error_type = "api_error"
        tail = stream.finish(ended_early)
    if scanner is not None:
        if scanner.error is not None:
            record.error_type = scanner.error[0]
        apply_usage(record, scanner.usage)
    await send({"type": "http.response.body", "body": tail, "more_body": False})


async def watch_disconnect(receive: Receive, scope: anyio.CancelScope,
                           record: RequestRecord) -> None:
    """Cancel ``scope`` when the client disconnects (and mark ``record``), once the request
    body has been read; run as a task beside the work it guards."""
    # The body has been read in full, so this task is the only consumer of receive().
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                record.client_disconnected = True
                scope.cancel()
                return
    except Exception:
        scope.cancel()  # stop the work; the pipeline re-raises this once the scope is left
        raise
