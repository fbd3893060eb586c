"""The upstream transports: one contract, four implementations, and the proxy on top of them.

The contract tests run against every transport: httptools, aiohttp and httpx (the transport's own
client, and a user's ``httpx2.AsyncClient``) talk to a :class:`FakeUpstream` served on a
loopback port; :class:`ASGIUpstream` calls the same fake in process. Streaming is shown
with the fake's gates (a chunk arrives while the fake is provably still holding the
rest), never with timing.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import anyio
import anyio.lowlevel
import httpx
import httpx2
import pytest
from pytest_httpx import HTTPXMock
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ccrotate import (
    AccountPool,
    AiohttpUpstream,
    ASGIUpstream,
    ConfigError,
    HttptoolsUpstream,
    HTTPXUpstream,
    RotatingProxy,
    Timeouts,
    Upstream,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
)
from ccrotate.testing import CutStream, FakeUpstream, Gate, RateLimited, Reply, serve_app
from conftest import HELLO, KEY_A, MODEL, fast_config

KEY = "sk-ant-api03-transport-test"
HEADERS = [("x-api-key", KEY), ("anthropic-version", "2023-06-01"),
           ("content-type", "application/json"), ("accept-encoding", "identity")]
TRANSPORTS = ["httptools", "aiohttp", "httpx", "httpx2", "asgi"]


def messages_body(*, stream: bool = False) -> bytes:
    return json.dumps({"model": MODEL, "max_tokens": 64, "stream": stream,
                       "messages": [{"role": "user", "content": "hello"}]}).encode()


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Harness:
    """One transport kind and the fake upstream it talks to."""

    kind: str
    fake: FakeUpstream
    base_url: str
    user_clients: list[httpx2.AsyncClient] = field(default_factory=list)

    def transport(self, read: float | None = None) -> Upstream:
        timeouts = Timeouts(read=read) if read is not None else None
        if self.kind == "httptools":
            return HttptoolsUpstream(timeouts=timeouts)
        if self.kind == "aiohttp":
            return AiohttpUpstream(timeouts=timeouts)
        if self.kind == "httpx":
            return HTTPXUpstream(timeouts=timeouts)
        if self.kind == "httpx2":
            client = httpx2.AsyncClient(timeout=httpx2.Timeout(10.0, read=read))
            self.user_clients.append(client)
            return HTTPXUpstream(client)
        return ASGIUpstream(self.fake, timeouts=timeouts)

    @contextlib.asynccontextmanager
    async def opened(self, read: float | None = None) -> AsyncIterator[Upstream]:
        upstream = self.transport(read)
        await upstream.start()
        try:
            yield upstream
        finally:
            await upstream.aclose()
            for client in self.user_clients:
                # HTTPXUpstream leaves a client it was given open: its owner closes it.
                assert not client.is_closed
                await client.aclose()

    async def post(self, upstream: Upstream, *, stream: bool = False) -> UpstreamResponse:
        return await upstream.send("POST", self.base_url + "/v1/messages", HEADERS,
                                   messages_body(stream=stream))


@pytest.fixture(params=TRANSPORTS)
def harness(request: pytest.FixtureRequest, fake_upstream: FakeUpstream) -> Iterator[Harness]:
    if request.param == "asgi":
        # No server: a host that does not resolve proves that no socket is involved.
        yield Harness("asgi", fake_upstream, "http://fake")
        return
    with serve_app(fake_upstream) as server:
        yield Harness(request.param, fake_upstream, server.url)


async def collect(resp: UpstreamResponse) -> bytes:
    async with contextlib.aclosing(resp.chunks()) as chunks:  # type: ignore[type-var]
        return b"".join([chunk async for chunk in chunks])


# -- the contract, for every transport -----------------------------------------------------


async def test_json_response(harness: Harness) -> None:
    """Status, case-insensitive headers, raw headers, content type and the whole body."""
    harness.fake.script(KEY, Reply(text="hi there", headers={"X-Custom": "yes"}))
    async with harness.opened() as upstream:
        resp = await harness.post(upstream)
        try:
            assert resp.status == 200
            assert resp.headers.get("x-custom") == "yes"
            assert resp.headers.get("X-Custom") == "yes"
            assert resp.headers.get("x-absent") is None
            raw = {k.lower(): v for k, v in resp.raw_headers}
            assert raw[b"x-custom"] == b"yes"
            assert raw[b"content-type"].startswith(b"application/json")
            assert resp.content_type == "application/json"
            assert resp.content_encoding is None
            message = json.loads(await resp.read())
        finally:
            await resp.aclose()
    assert message["content"][0]["text"] == "hi there"
    assert harness.fake.last_request.credential == KEY


async def test_stream_delivers_the_first_chunk_before_the_rest_exists(harness: Harness) -> None:
    """An SSE chunk reaches the reader while the fake is still holding the later events."""
    gate = Gate()
    harness.fake.script(KEY, Reply(text="one two three", hold=gate, hold_after=2))
    async with harness.opened() as upstream:
        resp = await harness.post(upstream, stream=True)
        try:
            assert resp.status == 200
            assert resp.content_type == "text/event-stream"
            chunks = resp.chunks()
            with anyio.fail_after(5):  # a buffering transport would wait for the gate
                first = await anext(chunks)
            # The fake cannot have produced the end yet: it is parked at the gate.
            assert not gate.released
            assert b"event: message_start" in first
            assert b"message_stop" not in first
            with anyio.fail_after(5):
                await gate.wait_arrivals_async(1)
            gate.release()
            rest = b"".join([chunk async for chunk in chunks])
        finally:
            gate.release()
            await resp.aclose()
    assert b"event: message_stop" in rest


async def test_a_second_chunks_iterator_resumes_where_the_first_stopped(
        harness: Harness) -> None:
    """The proxy peeks at a stream's first event, then relays the rest with a new iterator."""
    harness.fake.script(KEY, Reply(text="one two three"))
    async with harness.opened() as upstream:
        resp = await harness.post(upstream, stream=True)
        try:
            first = await anext(resp.chunks())  # this iterator is then dropped
            rest = await collect(resp)
        finally:
            await resp.aclose()
    whole = first + rest
    assert whole.startswith(b"event: message_start")
    assert whole.rstrip().endswith(b'data: {"type":"message_stop"}')


async def test_error_status_with_body(harness: Harness) -> None:
    """A 429 comes back as a response (not an exception) with its headers and body."""
    harness.fake.script(KEY, RateLimited(retry_after=5))
    async with harness.opened() as upstream:
        resp = await harness.post(upstream)
        try:
            assert resp.status == 429
            assert resp.headers.get("retry-after") == "5"
            body = json.loads(await resp.read())
        finally:
            await resp.aclose()
    assert body["error"]["type"] == "rate_limit_error"


async def test_stream_cut_midway_is_a_protocol_error(harness: Harness) -> None:
    """A stream that dies after its head raises UpstreamProtocolError, cause kept."""
    harness.fake.script(KEY, CutStream(after=2))
    async with harness.opened() as upstream:
        resp = await harness.post(upstream, stream=True)
        try:
            assert resp.status == 200
            with pytest.raises(UpstreamProtocolError) as caught:
                await collect(resp)
        finally:
            await resp.aclose()
    assert caught.value.__cause__ is not None
    assert KEY not in str(caught.value)


async def test_read_timeout(harness: Harness) -> None:
    """An upstream that sends no head within the read timeout gives UpstreamTimeout."""
    gate = Gate()  # holds the answer before it starts; released only after the timeout
    harness.fake.script(KEY, Reply(hold=gate))
    try:
        async with harness.opened(read=0.2) as upstream:
            with pytest.raises(UpstreamTimeout) as caught:
                await harness.post(upstream)
    finally:
        gate.release()
    assert caught.value.__cause__ is not None


async def test_read_over_the_limit_is_a_protocol_error(harness: Harness) -> None:
    """read(limit) refuses a body longer than limit instead of buffering it."""
    harness.fake.script(KEY, Reply(text="x" * 2000))
    async with harness.opened() as upstream:
        resp = await harness.post(upstream)
        try:
            with pytest.raises(UpstreamProtocolError, match="larger"):
                await resp.read(limit=100)
        finally:
            await resp.aclose()


async def test_aclose_is_idempotent(harness: Harness) -> None:
    """Responses close twice without error, read or half-read; so does the transport."""
    gate = Gate()
    harness.fake.script(KEY, Reply(), Reply(hold=gate, hold_after=1))
    try:
        upstream = harness.transport()
        await upstream.start()
        await upstream.start()
        done = await harness.post(upstream)
        await done.read()
        await done.aclose()
        await done.aclose()
        half = await harness.post(upstream, stream=True)
        await anext(half.chunks())
        await half.aclose()
        await half.aclose()
        await upstream.aclose()
        await upstream.aclose()
    finally:
        gate.release()
        for client in harness.user_clients:
            await client.aclose()


@pytest.mark.parametrize("kind", ["httptools", "aiohttp", "httpx", "httpx2"])
async def test_connection_refused_is_a_connect_error(kind: str) -> None:
    """Nothing listening: UpstreamConnectError from send(), cause kept."""
    harness = Harness(kind, FakeUpstream(), f"http://127.0.0.1:{closed_port()}")
    async with harness.opened() as upstream:
        with pytest.raises(UpstreamConnectError) as caught:
            await harness.post(upstream)
    assert isinstance(caught.value.__cause__, Exception)


# -- HTTPXUpstream -------------------------------------------------------------------------


def mock_client(handler: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_httpx_passes_encoded_bytes_through_undecoded() -> None:
    """Bodies are the bytes on the wire (aiter_raw): the proxy forwards content-encoding."""
    payload = gzip.compress(b'{"ok": true}')

    class Wire(httpx.AsyncByteStream):
        # Not content=: httpx would treat such a response as read already.
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield payload[:10]
            yield payload[10:]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Wire(), headers={
            "content-type": "application/json", "content-encoding": "gzip"})

    async with mock_client(handler) as client, HTTPXUpstream(client) as upstream:
        resp = await upstream.send("GET", "http://up/x", [], None)
        try:
            assert resp.content_encoding == "gzip"
            assert await resp.read() == payload
        finally:
            await resp.aclose()


@pytest.mark.parametrize(("error", "expected"), [
    (httpx.ConnectTimeout("t"), UpstreamTimeout),
    (httpx.PoolTimeout("t"), UpstreamTimeout),
    (httpx.ConnectError("refused"), UpstreamConnectError),
    (httpx.RemoteProtocolError("closed before head"), UpstreamConnectError),
    (httpx.ProxyError("proxy says no"), UpstreamConnectError),
])
async def test_httpx_send_errors_are_mapped(error: Exception,
                                            expected: type[Exception]) -> None:
    """Each httpx failure before a head becomes the matching UpstreamError, cause kept."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    async with mock_client(handler) as client, HTTPXUpstream(client) as upstream:
        with pytest.raises(expected) as caught:
            await upstream.send("POST", "http://up/v1/messages", HEADERS, b"{}")
    assert caught.value.__cause__ is error


@pytest.mark.parametrize(("error", "expected"), [
    (httpx.ReadError("reset"), UpstreamProtocolError),
    (httpx.RemoteProtocolError("incomplete chunked read"), UpstreamProtocolError),
    (httpx.ReadTimeout("silence"), UpstreamTimeout),
])
async def test_httpx_body_errors_are_mapped(error: Exception,
                                            expected: type[Exception]) -> None:
    """Failures while reading a started body: protocol error (or timeout), cause kept."""

    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            raise error

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Broken(),
                              headers={"content-type": "text/event-stream"})

    async with mock_client(handler) as client, HTTPXUpstream(client) as upstream:
        for read in (lambda r: r.read(), collect):
            resp = await upstream.send("POST", "http://up/v1/messages", HEADERS, b"{}")
            try:
                with pytest.raises(expected) as caught:
                    await read(resp)
            finally:
                await resp.aclose()
            assert caught.value.__cause__ is error


async def test_httpx_closed_user_client_is_a_connect_error() -> None:
    """A client its owner already closed fails cleanly, not with httpx's RuntimeError."""
    client = httpx.AsyncClient()
    await client.aclose()
    with pytest.raises(UpstreamConnectError, match="closed"):
        await HTTPXUpstream(client).send("GET", "http://up/", [], None)


async def test_httpx_own_client_is_closed_and_reopened(harness_served: str) -> None:
    """The client HTTPXUpstream creates is its to close; it adds no User-Agent of its own."""
    upstream = HTTPXUpstream(timeouts=Timeouts(connect=2.0, read=5.0))
    assert upstream.client is None
    async with upstream:
        own = upstream.client
        assert isinstance(own, httpx.AsyncClient)
        resp = await upstream.send("POST", harness_served + "/v1/messages", HEADERS,
                                   messages_body())
        await resp.read()
        await resp.aclose()
    assert own.is_closed
    assert upstream.client is None
    # Used again after closing: a fresh client, closed again by the next aclose().
    resp = await upstream.send("POST", harness_served + "/v1/messages",
                               [*HEADERS, ("user-agent", "my-app/1.0")], messages_body())
    await resp.aclose()
    await upstream.aclose()


@pytest.fixture
def harness_served(fake_upstream: FakeUpstream) -> Iterator[str]:
    with serve_app(fake_upstream) as server:
        yield server.url


async def test_httpx_own_client_forwards_only_the_callers_agent(
        fake_upstream: FakeUpstream, harness_served: str) -> None:
    """Without a User-Agent from the caller none is sent (as with aiohttp); with one, it is."""
    async with HTTPXUpstream() as upstream:
        for extra in ([], [("user-agent", "my-app/1.0")]):
            resp = await upstream.send("POST", harness_served + "/v1/messages",
                                       [*HEADERS, *extra], messages_body())
            await resp.aclose()
    first, second = (dict(r.headers) for r in fake_upstream.requests)
    assert "user-agent" not in first
    assert second["user-agent"] == "my-app/1.0"
    assert first["accept-encoding"] == "identity"


async def test_httpx_aclose_of_a_half_read_stream_frees_its_connection(
        fake_upstream: FakeUpstream, harness_served: str) -> None:
    """aclose() mid-body releases the request in httpcore's pool and the fake sees it go."""
    gate = Gate()
    fake_upstream.script(KEY, Reply(hold=gate, hold_after=1))
    try:
        async with HTTPXUpstream() as upstream:
            resp = await upstream.send("POST", harness_served + "/v1/messages", HEADERS,
                                       messages_body(stream=True))
            await anext(resp.chunks())
            client = upstream.client
            assert isinstance(client, httpx.AsyncClient)
            pool = client._transport._pool  # type: ignore[attr-defined]
            assert len(pool._requests) == 1
            await resp.aclose()
            assert pool._requests == []
            with anyio.fail_after(5):
                await fake_upstream.wait_cancelled_async(1)
    finally:
        gate.release()


def test_httpx_refuses_what_it_cannot_honour() -> None:
    """Timeouts with a user's client, or a client that is not httpx's: ConfigError at once."""
    client = httpx.AsyncClient()
    with pytest.raises(ConfigError, match="timeouts"):
        HTTPXUpstream(client, timeouts=Timeouts())
    with pytest.raises(ConfigError, match="AsyncClient"):
        HTTPXUpstream(object())  # type: ignore[arg-type]


def test_importing_ccrotate_loads_no_httpx() -> None:
    """The transports import httpx/httpx2 lazily: ``import ccrotate`` does not pay for them."""
    code = ("import sys, ccrotate; "
            "print(','.join(m for m in ('httpx', 'httpx2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""


# -- ASGIUpstream --------------------------------------------------------------------------


def running_tasks() -> int:
    return len(anyio.get_running_tasks())


async def test_asgi_backpressure_holds_the_app_until_the_reader_pulls() -> None:
    """The app's send() of a chunk completes only when the reader takes it (no buffer);
    closing the response then fails the app's blocked send() with OSError (ASGI 2.4)."""
    sent = 0
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal sent
        await receive()  # the (empty) request body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for i in range(10):
                await send({"type": "http.response.body", "body": b"%d;" % i,
                            "more_body": True})
                sent += 1
        except OSError:
            seen.append("OSError")
            seen.append((await receive())["type"])
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async with ASGIUpstream(app) as upstream:
        before = running_tasks()
        resp = await upstream.send("GET", "http://app/", [], None)
        chunks = resp.chunks()
        await anyio.wait_all_tasks_blocked()
        assert sent == 0  # the head is out, the first chunk waits for its reader
        assert await anext(chunks) == b"0;"
        await anyio.wait_all_tasks_blocked()
        assert sent == 1
        assert await anext(chunks) == b"1;"
        await anyio.wait_all_tasks_blocked()
        assert sent == 2
        await resp.aclose()
        assert seen == ["OSError", "http.disconnect"]
        assert sent == 2
        assert running_tasks() == before


async def test_asgi_aclose_midbody_delivers_disconnect_and_reaps_the_app() -> None:
    """Closing early: the fake hears http.disconnect, counts a cancel, no task is left."""
    fake = FakeUpstream()
    gate = Gate()
    fake.script(KEY, Reply(hold=gate, hold_after=1))
    async with ASGIUpstream(fake) as upstream:
        before = running_tasks()
        resp = await upstream.send("POST", "http://fake/v1/messages", HEADERS,
                                   messages_body(stream=True))
        assert b"message_start" in await anext(resp.chunks())
        with anyio.fail_after(5):
            await gate.wait_arrivals_async(1)
        await resp.aclose()
        assert fake.cancelled == 1
        assert fake.last_request.cancelled
        assert running_tasks() == before
    assert not gate.released


async def test_asgi_aclose_cancels_an_app_that_ignores_the_disconnect() -> None:
    """An app that keeps working after the reader left is cancelled after the grace."""
    events: list[str] = []

    async def stubborn(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            events.append("cancelled")
            raise

    async with ASGIUpstream(stubborn, disconnect_grace=0.01) as upstream:
        before = running_tasks()
        resp = await upstream.send("GET", "http://app/", [], None)
        assert await anext(resp.chunks()) == b"a"
        await resp.aclose()
        assert events == ["cancelled"]
        assert running_tasks() == before


async def test_asgi_app_failing_before_its_response_is_a_connect_error() -> None:
    """An app that raises before http.response.start: UpstreamConnectError, cause kept."""
    boom = ValueError("the app broke")

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise boom

    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return

    async with ASGIUpstream(broken) as upstream:
        with pytest.raises(UpstreamConnectError) as caught:
            await upstream.send("GET", "http://app/", [], None)
        assert caught.value.__cause__ is boom
        # The task group survived the failure: the transport still serves.
        with pytest.raises(UpstreamConnectError):
            await upstream.send("GET", "http://app/", [], None)
    async with ASGIUpstream(silent) as upstream:
        with pytest.raises(UpstreamConnectError, match="without a response"):
            await upstream.send("GET", "http://app/", [], None)


async def test_asgi_app_that_stops_midbody_is_a_protocol_error() -> None:
    """Raising mid-body (cause kept) or returning before more_body=False: protocol error."""
    boom = RuntimeError("mid-body failure")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        if scope["path"] == "/raise":
            raise boom

    async with ASGIUpstream(app) as upstream:
        for path, cause in (("/raise", boom), ("/return", None)):
            resp = await upstream.send("GET", "http://app" + path, [], None)
            with pytest.raises(UpstreamProtocolError) as caught:
                await resp.read()
            await resp.aclose()
            assert caught.value.__cause__ is cause


async def test_asgi_scope_carries_the_url_and_headers() -> None:
    """Path, raw path, query, lower-case byte headers, host, and loopback server/client."""
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)
        seen["body"] = (await receive())["body"]
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    async with ASGIUpstream(app) as upstream:
        resp = await upstream.send("post", "http://up.example:8080/v1/a%2Fb?limit=2&x=y",
                                   [("X-Api-Key", "k"), ("Anthropic-Beta", "b1")], b"{}")
        assert resp.status == 204
        assert await resp.read() == b""
        await resp.aclose()
    assert seen["method"] == "POST"
    assert seen["path"] == "/v1/a/b"
    assert seen["raw_path"] == b"/v1/a%2Fb"
    assert seen["query_string"] == b"limit=2&x=y"
    assert seen["headers"] == [(b"host", b"up.example:8080"), (b"x-api-key", b"k"),
                               (b"anthropic-beta", b"b1"), (b"content-length", b"2")]
    assert seen["server"] == ("127.0.0.1", 8080)
    assert seen["client"][0] == "127.0.0.1"
    assert seen["body"] == b"{}"


async def test_asgi_refuses_to_send_unstarted() -> None:
    """Used outside its lifecycle it says so, as an UpstreamError the proxy can report."""
    with pytest.raises(UpstreamConnectError, match="not started"):
        await ASGIUpstream(FakeUpstream()).send("GET", "http://fake/v1/models", HEADERS, None)


async def test_asgi_aclose_cancels_exchanges_still_running() -> None:
    """Closing the transport reaps every app call; their readers get a protocol error."""
    fake = FakeUpstream()
    gate = Gate()
    fake.script(KEY, Reply(hold=gate, hold_after=1))
    before = running_tasks()
    upstream = ASGIUpstream(fake)
    await upstream.start()
    resp = await upstream.send("POST", "http://fake/v1/messages", HEADERS,
                               messages_body(stream=True))
    chunks = resp.chunks()
    await anext(chunks)
    await upstream.aclose()
    assert running_tasks() == before
    with pytest.raises(UpstreamProtocolError):
        await anext(chunks)
    await resp.aclose()


def lifespan_app(events: list[str], *, fail: bool = False) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        if fail:
            raise RuntimeError("no database")
        yield {"answer": "42"}
        events.append("shutdown")

    async def answer(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.state.answer)

    return Starlette(routes=[Route("/", answer)], lifespan=lifespan)


async def test_asgi_lifespan_runs_when_asked() -> None:
    """lifespan=True: startup on start() (its state reaches requests), shutdown on aclose()."""
    events: list[str] = []
    async with ASGIUpstream(lifespan_app(events), lifespan=True) as upstream:
        assert events == ["startup"]
        resp = await upstream.send("GET", "http://app/", [], None)
        assert await resp.read() == b"42"
        await resp.aclose()
    assert events == ["startup", "shutdown"]
    events.clear()
    async with ASGIUpstream(lifespan_app(events)):
        pass
    assert events == []  # off by default


async def test_asgi_failed_lifespan_startup_is_a_connect_error() -> None:
    """A startup that fails makes start() raise, and leaves nothing running."""
    before = running_tasks()
    upstream = ASGIUpstream(lifespan_app([], fail=True), lifespan=True)
    with pytest.raises(UpstreamConnectError, match="startup failed"):
        await upstream.start()
    assert running_tasks() == before
    with pytest.raises(UpstreamConnectError, match="not started"):
        await upstream.send("GET", "http://app/", [], None)


# -- end to end: the proxy over the in-process and the mocked transport ---------------------


class RawClient:
    """One raw ASGI request to the proxy (httpx.ASGITransport would buffer the stream)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.gone = anyio.Event()
        self.streaming = anyio.Event()
        self._asked = False

    async def receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": messages_body(stream=True)}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            self.chunks.append(message["body"])
            self.streaming.set()

    async def run(self, proxy: RotatingProxy) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/v1/messages", "raw_path": b"/v1/messages", "query_string": b"",
                 "root_path": "", "headers": [(b"content-type", b"application/json")],
                 "client": ("127.0.0.1", 50001), "server": ("127.0.0.1", 8080)}
        await proxy(scope, self.receive, self.send)


@pytest.mark.parametrize("kind", ["asgi", "httpx"])
@pytest.mark.parametrize("how", ["http.disconnect", "task.cancel"])
async def test_proxy_client_leaving_reaches_the_upstream(
        pool: AccountPool, fake_upstream: FakeUpstream, how: str, kind: str) -> None:
    """A client leaving mid-stream (either way) reaches the upstream app as a disconnect,
    and the transport is left with nothing running and no connection in use."""
    import asyncio

    gate = Gate()  # the reply stops after two events and never ends by itself
    fake_upstream.script(KEY_A, Reply(hold=gate, hold_after=2))
    client = RawClient()
    with contextlib.ExitStack() as stack:
        if kind == "asgi":
            upstream: Upstream = ASGIUpstream(fake_upstream)
            url = "http://fake"
        else:
            upstream = HTTPXUpstream()
            url = stack.enter_context(serve_app(fake_upstream)).url
        proxy = RotatingProxy(pool, upstream=upstream, config=fast_config(url))
        try:
            async with proxy:
                before = running_tasks()
                task = asyncio.ensure_future(client.run(proxy))
                with anyio.fail_after(5):
                    await client.streaming.wait()
                    if how == "http.disconnect":
                        client.gone.set()
                        await task
                    else:
                        task.cancel()
                        with pytest.raises(asyncio.CancelledError):
                            await task
                    await fake_upstream.wait_cancelled_async(1)
                assert running_tasks() == before
                assert {s.name: s.in_flight for s in pool.statuses()} == {"a": 0, "b": 0, "c": 0}
                if isinstance(upstream, HTTPXUpstream):
                    own = upstream.client
                    assert isinstance(own, httpx.AsyncClient)
                    # Whoever closed it (httpcore on a cancelled read, or aclose), no
                    # request stays listed in the pool, holding a connection.
                    assert own._transport._pool._requests == []  # type: ignore[attr-defined]
        finally:
            gate.release()
    assert b"message_start" in b"".join(client.chunks)
    assert fake_upstream.last_request.cancelled


def test_proxy_over_asgi_upstream_answers_the_sdk(pool: AccountPool) -> None:
    """The SDK through a served proxy whose upstream is a FakeUpstream in process.

    ``http://fake`` does not resolve (the suite forbids it), so the answers can only
    have come through ASGIUpstream.
    """
    fake = FakeUpstream()
    proxy = RotatingProxy(pool, upstream=ASGIUpstream(fake), config=fast_config("http://fake"))
    with serve_app(proxy) as server:
        client = anthropic.Anthropic(base_url=server.url, api_key="client-key", max_retries=0)
        message = client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
        with client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
            text = "".join(stream.text_stream)
    assert message.content[0].type == "text"
    assert message.content[0].text == Reply().text
    assert text == Reply().text
    assert [r.path for r in fake.requests] == ["/v1/messages", "/v1/messages"]
    assert fake.requests[0].credential == KEY_A  # the pool's account, not the client's key


def test_proxy_over_httpx_upstream_streams_to_the_sdk(
        pool: AccountPool, fake_upstream_server: Any) -> None:
    """HTTPXUpstream under the proxy: a streamed answer is peeked at, then relayed whole."""
    proxy = RotatingProxy(pool, upstream=HTTPXUpstream(),
                          config=fast_config(fake_upstream_server.url))
    with serve_app(proxy) as server:
        client = anthropic.Anthropic(base_url=server.url, api_key="client-key", max_retries=0)
        with client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
            text = "".join(stream.text_stream)
    assert text == Reply().text
    assert fake_upstream_server.app.last_request.credential == KEY_A


def test_proxy_over_httpx_upstream_with_pytest_httpx(pool: AccountPool,
                                                     httpx_mock: HTTPXMock) -> None:
    """pytest-httpx answers for Anthropic: users can test their own proxy setup this way."""
    httpx_mock.add_response(
        method="POST", url="http://fake/v1/messages",
        json={"id": "msg_mocked", "type": "message", "role": "assistant", "model": MODEL,
              "content": [{"type": "text", "text": "mocked answer"}],
              "stop_reason": "end_turn", "stop_sequence": None,
              "usage": {"input_tokens": 3, "output_tokens": 2}},
        headers={"request-id": "req_mocked"})
    client = httpx.AsyncClient()
    proxy = RotatingProxy(pool, upstream=HTTPXUpstream(client),
                          config=fast_config("http://fake"))
    with serve_app(proxy) as server:
        sdk = anthropic.Anthropic(base_url=server.url, api_key="client-key", max_retries=0)
        raw = sdk.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=HELLO)
    message = raw.parse()
    assert message.content[0].type == "text"
    assert message.content[0].text == "mocked answer"
    assert raw.headers["x-ccrotate-account"] == "a"
    sent = httpx_mock.get_request()
    assert sent is not None
    assert sent.headers["x-api-key"] == KEY_A
    assert "client-key" not in str(sent.headers)
    # The proxy's shutdown closed its transport, but the client is the test's to close.
    assert not client.is_closed
    anyio.run(client.aclose)


async def test_aiohttp_starts_at_once_share_one_session_and_close_waits_for_it() -> None:
    """Requests that open the pool together get one session; a close during the
    opening leaves none behind (the Rotator opens it in the background)."""
    upstream = AiohttpUpstream()
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(upstream.start)
    session = upstream._session
    assert session is not None
    await upstream.start()
    assert upstream._session is session
    await upstream.aclose()
    assert session.closed
    assert upstream._session is None
    async with anyio.create_task_group() as tg:
        tg.start_soon(upstream.start)
        await anyio.lowlevel.checkpoint()
        tg.start_soon(upstream.aclose)
    await upstream.aclose()
    assert upstream._session is None
