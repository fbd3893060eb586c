"""An upstream transport that calls an ASGI app in process: no socket, and still streaming.

Unlike ``httpx.ASGITransport``, which runs the app to completion and buffers the
whole body, :class:`ASGIUpstream` runs each request's app call as a task and
hands the body over chunk by chunk through a zero-buffer memory stream: the
app's ``await send(...)`` of a body chunk returns only once the consumer has
pulled it, so a slow reader slows the app down (STYLE §2.6) and an SSE
event reaches the proxy when the app sends it.

Task ownership: the app tasks live in a task group that :meth:`ASGIUpstream.start`
opens and :meth:`ASGIUpstream.aclose` closes (cancelling whatever is left), so no
task outlives the transport. Closing one response before its body ended delivers
``http.disconnect`` to the app, makes its next ``send`` raise ``OSError`` (as ASGI
spec 2.4 servers do), waits briefly for it to stop, then cancels it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
from anyio.abc import TaskGroup

from ccrotate._asgi import ASGIApp, Message, Scope
from ccrotate._exceptions import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from ccrotate._upstream.base import DEFAULT_BODY_LIMIT, RawHeaders, Timeouts, Transport

__all__ = ["ASGIUpstream"]

# The peer the app sees: a loopback client on an ephemeral port.
_CLIENT = ("127.0.0.1", 50000)


class _Exchange:
    """One request in flight: the app task's side (receive/send) and the consumer's."""

    def __init__(self, app: ASGIApp, scope: Scope, body: bytes) -> None:
        self.app = app
        self.scope = scope
        self.cancel_scope = anyio.CancelScope()
        self.head = anyio.Event()       # the response started, or the app ended first
        self.done = anyio.Event()       # the app task has finished
        self.over = anyio.Event()       # body complete or consumer gone: receive() ends
        self.status: int | None = None
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.error: Exception | None = None
        self.body_complete = False
        self.consumer_gone = False
        self._body: bytes | None = body
        # Zero buffer: the app's send() of a chunk completes only when it is pulled.
        self.chunk_in, self.chunk_out = anyio.create_memory_object_stream[bytes](0)

    async def run(self) -> None:
        """The app call, as a task of the transport's task group."""
        try:
            with self.cancel_scope:
                try:
                    await self.app(self.scope, self.receive, self.send)
                except Exception as exc:
                    # Kept for the consumer, never raised here: an exception out of this
                    # task would cancel the whole task group (every other request).
                    self.error = exc
        finally:
            # Order matters: error and body_complete are set before the stream closes,
            # so the consumer that sees the end also sees why.
            self.chunk_in.close()
            self.head.set()
            self.done.set()

    async def receive(self) -> Message:
        """The request body in one message, then ``http.disconnect`` once it is over."""
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        # Blocks (never a busy loop of empty messages) until the response is complete or
        # the consumer closed it, as uvicorn does.
        await self.over.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        """The app's ``send``: records the head, hands body chunks to the consumer."""
        if self.consumer_gone:
            raise OSError("ASGIUpstream: the response was closed by its reader")
        kind = message["type"]
        if kind == "http.response.start":
            if self.status is not None:
                raise RuntimeError("http.response.start sent twice")
            self.raw_headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
            self.status = int(message["status"])
            self.head.set()
        elif kind == "http.response.body":
            if self.status is None or self.body_complete:
                raise RuntimeError("http.response.body outside a response")
            body = bytes(message.get("body", b""))
            if body:
                try:
                    await self.chunk_in.send(body)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                    raise OSError("ASGIUpstream: the response was closed by its reader") \
                        from exc
            if not message.get("more_body", False):
                self.body_complete = True
                self.chunk_in.close()
                self.over.set()
        # Other messages (trailers, extensions) carry nothing this transport relays.

    def check_complete(self) -> None:
        """At the end of the chunks: raise unless the app ended its body properly."""
        if self.body_complete:
            return
        if self.error is not None:
            raise UpstreamProtocolError(
                f"the ASGI app failed mid-response ({type(self.error).__name__})",
            ) from self.error
        raise UpstreamProtocolError("the ASGI app stopped before its body was complete")

    async def finish(self, grace: float) -> None:
        """Tell the app its reader is gone, give it ``grace`` seconds, then cancel it."""
        self.consumer_gone = True
        self.over.set()
        self.chunk_out.close()  # a send() blocked on a chunk raises BrokenResourceError
        if not self.done.is_set():
            with anyio.move_on_after(grace):
                await self.done.wait()
            self.cancel_scope.cancel()
            await self.done.wait()


class _Response:
    """The app's response as an :class:`UpstreamResponse`, streaming from its task."""

    __slots__ = ("_closed", "_ex", "_grace", "_read_timeout", "headers", "raw_headers",
                 "status")

    def __init__(self, ex: _Exchange, read_timeout: float, grace: float) -> None:
        if ex.status is None:  # pragma: no cover - send() only builds it after the head
            raise UpstreamConnectError("the ASGI app has not started a response")
        self._ex = ex
        self._read_timeout = read_timeout
        self._grace = grace
        self._closed = False
        self.status: int = ex.status
        self.raw_headers: Sequence[tuple[bytes, bytes]] = ex.raw_headers
        self.headers = RawHeaders(ex.raw_headers)

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-case (``""`` when absent)."""
        return (self.headers.get("content-type") or "").partition(";")[0].strip().lower()

    @property
    def content_encoding(self) -> str | None:
        """The app's ``content-encoding``; its bytes are passed on as sent."""
        return self.headers.get("content-encoding")

    async def _next(self) -> bytes | None:
        try:
            with anyio.fail_after(self._read_timeout):
                return await self._ex.chunk_out.receive()
        except anyio.EndOfStream:
            self._ex.check_complete()
            return None
        except anyio.ClosedResourceError as exc:
            raise UpstreamProtocolError("the response was already closed") from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(f"the ASGI app sent nothing for {self._read_timeout:g} s") \
                from exc

    async def read(self, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
        """The whole body. Raises :class:`UpstreamProtocolError` past ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        while (chunk := await self._next()) is not None:
            size += len(chunk)
            if size > limit:
                raise UpstreamProtocolError("upstream body larger than the proxy accepts")
            parts.append(chunk)
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body chunks as the app sends them (one per non-empty ``http.response.body``)."""
        while (chunk := await self._next()) is not None:
            yield chunk

    async def aclose(self) -> None:
        """End the exchange: ``http.disconnect`` to an app still sending, then reap its task."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._ex.finish(self._grace)


class _Lifespan:
    """The app's lifespan protocol, run as one task of the transport's task group."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.started = anyio.Event()
        self.stop = anyio.Event()
        self.stopped = anyio.Event()
        self.failure: str | None = None
        self.error: Exception | None = None
        self._asked = False

    async def run(self) -> None:
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                        "state": self.state}
        try:
            await self.app(scope, self.receive, self.send)
        except Exception as exc:
            self.error = exc  # as in _Exchange.run: never out of the task
        finally:
            if not self.started.is_set():
                self.failure = self.failure or "the app's lifespan ended before its startup"
            self.started.set()
            self.stopped.set()

    async def receive(self) -> Message:
        if not self._asked:
            self._asked = True
            return {"type": "lifespan.startup"}
        await self.stop.wait()
        return {"type": "lifespan.shutdown"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.started.set()
        elif kind == "lifespan.startup.failed":
            self.failure = str(message.get("message") or "startup failed")
            self.started.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self.stopped.set()


class ASGIUpstream(Transport):
    """A transport that calls an ASGI app in process (no socket) and streams its answers.

    Parameters:
        app: the ASGI app that plays the upstream, e.g. a
            :class:`ccrotate.testing.FakeUpstream` (which is itself an ASGI app).
        timeouts: ``read`` bounds the wait for the response head and between two body
            chunks (an app that hangs gives :class:`~ccrotate.UpstreamTimeout`).
        lifespan: run the app's lifespan protocol in :meth:`start` / :meth:`aclose`
            (off by default: FakeUpstream needs none). A failed startup raises
            :class:`~ccrotate.UpstreamConnectError`.
        disconnect_grace: seconds an app gets to stop by itself after its response is
            closed early, before it is cancelled.

    It must be started before use and closed in the same task, like any task group:
    ``async with ASGIUpstream(app):``, or give it to a :class:`~ccrotate.RotatingProxy`
    whose lifespan (or ``async with proxy:``) does it. Unstarted, :meth:`send` raises
    :class:`~ccrotate.UpstreamConnectError`. The URL's path and query become the ASGI
    scope's; its host becomes the ``host`` header.
    """

    def __init__(self, app: ASGIApp, *, timeouts: Timeouts | None = None,
                 lifespan: bool = False, disconnect_grace: float = 1.0) -> None:
        self.app = app
        self.timeouts = timeouts or Timeouts()
        self.lifespan = lifespan
        self.disconnect_grace = disconnect_grace
        self.state: dict[str, Any] = {}
        """Lifespan state: the app fills it at startup; each request scope gets a copy."""
        self._tg: TaskGroup | None = None
        self._lifespan: _Lifespan | None = None

    async def start(self) -> None:
        """Open the task group of the app calls; run the lifespan startup (idempotent)."""
        if self._tg is not None:
            return
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        if not self.lifespan:
            return
        span = _Lifespan(self.app, self.state)
        self._lifespan = span
        try:
            tg.start_soon(span.run, name="ccrotate ASGIUpstream lifespan")
            await span.started.wait()
        except BaseException:
            await self.aclose()
            raise
        if span.failure is not None or span.error is not None:
            await self.aclose()
            reason = span.failure or type(span.error).__name__
            raise UpstreamConnectError(f"the ASGI app's lifespan startup failed: {reason}") \
                from span.error

    async def aclose(self) -> None:
        """Run the lifespan shutdown, cancel every app call still running (idempotent)."""
        tg, span = self._tg, self._lifespan
        if tg is None:
            return
        self._tg = self._lifespan = None
        if span is not None:
            with anyio.CancelScope(shield=True):
                span.stop.set()
                with anyio.move_on_after(self.timeouts.read):
                    await span.stopped.wait()
        # Not inside a shielded scope: the task group's own scope must be the innermost
        # one when it exits. No shield is needed either: a task group's exit waits for
        # its (now cancelled) tasks even when the host task is being cancelled.
        tg.cancel_scope.cancel()
        await tg.__aexit__(None, None, None)

    async def send(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                   body: bytes | None) -> _Response:
        """Call the app and return once it has sent ``http.response.start``."""
        tg = self._tg
        if tg is None:
            raise UpstreamConnectError("ASGIUpstream is not started: use `async with` "
                                       "(or the proxy's lifespan) around its use")
        ex = _Exchange(self.app, self._scope(method, url, headers, body), body or b"")
        tg.start_soon(ex.run, name=f"ccrotate ASGIUpstream {method} {ex.scope['path']}")
        try:
            with anyio.fail_after(self.timeouts.read):
                await ex.head.wait()
        except TimeoutError as exc:
            with anyio.CancelScope(shield=True):
                await ex.finish(0)
            raise UpstreamTimeout(f"the ASGI app did not answer within "
                                  f"{self.timeouts.read:g} s") from exc
        except BaseException:
            with anyio.CancelScope(shield=True):
                await ex.finish(0)
            raise
        if ex.status is None:
            # The app ended (raised or returned) without a response: like a refused connection.
            with anyio.CancelScope(shield=True):
                await ex.finish(0)
            if ex.error is not None:
                raise UpstreamConnectError(f"the ASGI app failed before responding "
                                           f"({type(ex.error).__name__})") from ex.error
            raise UpstreamConnectError("the ASGI app returned without a response")
        return _Response(ex, self.timeouts.read, self.disconnect_grace)

    def _scope(self, method: str, url: str, headers: Sequence[tuple[str, str]],
               body: bytes | None) -> Scope:
        parts = urlsplit(url)
        scheme = parts.scheme or "http"
        raw_path = parts.path or "/"
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        names = {k for k, _ in raw}
        # What an HTTP client would have added on the wire.
        host = parts.netloc.rpartition("@")[2]
        if b"host" not in names and host:
            raw.insert(0, (b"host", host.encode("latin-1")))
        if body is not None and b"content-length" not in names:
            raw.append((b"content-length", str(len(body)).encode()))
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method.upper(),
            "scheme": scheme,
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("latin-1"),
            "query_string": parts.query.encode("latin-1"),
            "root_path": "",
            "headers": raw,
            "server": ("127.0.0.1", parts.port or (443 if scheme == "https" else 80)),
            "client": _CLIENT,
            "state": dict(self.state),
        }
