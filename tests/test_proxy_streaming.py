"""Streaming, backpressure, disconnects and cleanup, seen through a raw ASGI harness and sockets.

``httpx.ASGITransport`` buffers whole responses and only says ``http.disconnect``
at the end, so these tests drive :class:`RotatingProxy` with hand-made ``receive``
and ``send`` callables (in the test's event loop, against the fake upstream served
on loopback), or talk raw HTTP/1.1 to the served proxy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from ccrotate import (
    AccountPool,
    AiohttpUpstream,
    Failover,
    HttptoolsUpstream,
    RequestRecord,
    RotatingProxy,
)
from ccrotate._proxy.watch import DEADLINE, DISCONNECT, Watches
from ccrotate._upstream import aiohttp_transport, httptools_transport
from ccrotate.testing import (
    ApiError,
    CutStream,
    FakeUpstream,
    Gate,
    Overloaded,
    RateLimited,
    Reply,
    ServerHandle,
    StreamError,
)
from conftest import KEY_A, MODEL, FakeClock, Stack, fast_config

Server = ServerHandle[FakeUpstream]


def request_body(**extra: Any) -> bytes:
    return json.dumps({"model": MODEL, "max_tokens": 64, "stream": True,
                       "messages": [{"role": "user", "content": "hello"}], **extra}).encode()


@dataclass
class Harness:
    """One raw ASGI request: ``receive`` gives the body, then waits for :meth:`disconnect`."""

    body: bytes
    sent: list[tuple[float, MutableMapping[str, Any]]] = field(default_factory=list)
    gone: anyio.Event = field(default_factory=anyio.Event)
    on_send: Callable[[MutableMapping[str, Any]], Awaitable[None]] | None = None
    _body_given: bool = False

    def scope(self, path: str = "/v1/messages") -> dict[str, Any]:
        return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
                "raw_path": path.encode(), "query_string": b"", "root_path": "",
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(self.body)).encode())],
                "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080)}

    async def receive(self) -> dict[str, Any]:
        if not self._body_given:
            self._body_given = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append((anyio.current_time(), message))
        if self.on_send is not None:
            await self.on_send(message)

    async def run(self, app: Any) -> None:
        """Call ``app`` with this request."""
        await app(self.scope(), self.receive, self.send)

    def disconnect(self) -> None:
        self.gone.set()

    @property
    def status(self) -> int:
        status: int = next(m["status"] for _, m in self.sent
                           if m["type"] == "http.response.start")
        return status

    @property
    def chunks(self) -> list[bytes]:
        return [m["body"] for _, m in self.sent if m["type"] == "http.response.body" and m["body"]]

    @property
    def headers(self) -> dict[bytes, bytes]:
        start = next(m for _, m in self.sent if m["type"] == "http.response.start")
        return dict(start["headers"])

    def events(self) -> list[str]:
        text = b"".join(self.chunks).decode()
        return [line[7:] for line in text.splitlines() if line.startswith("event: ")]

    def body_messages(self) -> int:
        return sum(1 for _, m in self.sent if m["type"] == "http.response.body")


@pytest.fixture(params=["httptools", "aiohttp"])
async def proxy(request: pytest.FixtureRequest, upstream_server: Server,
                pool: AccountPool) -> AsyncIterator[RotatingProxy]:
    """A proxy running in the test's own event loop (the fake upstream is served on loopback),
    on the default transport and on aiohttp's."""
    config = fast_config(upstream_server.url)
    kind = HttptoolsUpstream if request.param == "httptools" else AiohttpUpstream
    upstream = kind(timeouts=config.timeouts)
    async with RotatingProxy(pool, config=config, upstream=upstream) as proxy:
        yield proxy


class Records:
    """An observer keeping every finished :class:`RequestRecord`."""

    def __init__(self) -> None:
        self.done: list[RequestRecord] = []

    def on_failover(self, record: RequestRecord, failover: Failover) -> None:
        pass

    def on_request(self, record: RequestRecord) -> None:
        self.done.append(record)


def acquired(proxy: RotatingProxy) -> int:
    """Upstream connections the proxy's transport has handed out and not got back."""
    upstream = proxy.upstream
    if isinstance(upstream, HttptoolsUpstream):
        return upstream.open_connections - upstream.idle_connections
    assert isinstance(upstream, AiohttpUpstream)
    session = upstream._session
    assert session is not None
    connector = session.connector
    assert connector is not None
    return len(list(connector._acquired))


def in_flight(pool: AccountPool) -> dict[str, int]:
    return {s.name: s.in_flight for s in pool.statuses()}


async def test_events_are_relayed_as_they_arrive(proxy: RotatingProxy,
                                                 fake_upstream: FakeUpstream) -> None:
    """With 100 ms between upstream events, the first reaches the client long before the last."""
    fake_upstream.script(KEY_A, Reply(event_gap=0.1, text_deltas=2))
    h = Harness(request_body())
    with anyio.fail_after(5):
        await h.run(proxy)
    assert h.status == 200
    assert h.events()[0] == "message_start"
    assert h.events()[-1] == "message_stop"
    bodies = [t for t, m in h.sent if m["type"] == "http.response.body" and m["body"]]
    assert len(bodies) >= 6  # one message per upstream event, not one buffered blob
    assert bodies[-1] - bodies[0] >= 0.4  # seven paced events: ~0.7 s apart end to end
    assert h.headers[b"x-ccrotate-account"] == b"a"
    assert b"content-length" not in h.headers


async def test_one_upstream_chunk_is_pulled_per_client_send(
        proxy: RotatingProxy, fake_upstream: FakeUpstream,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """While the client is not reading, the proxy reads nothing more from the upstream."""
    pulled = 0
    response = (httptools_transport._Response if isinstance(proxy.upstream, HttptoolsUpstream)
                else aiohttp_transport._Response)
    original = response.chunks

    async def counting(self: Any) -> AsyncIterator[bytes]:
        nonlocal pulled
        async for chunk in original(self):
            pulled += 1
            yield chunk

    monkeypatch.setattr(response, "chunks", counting)
    fake_upstream.script(KEY_A, Reply(event_gap=0.01, text_deltas=20))
    stalled = anyio.Event()
    resume = anyio.Event()

    async def on_send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and len(h.chunks) == 3:
            stalled.set()
            await resume.wait()  # a client that stops reading

    h = Harness(request_body(), on_send=on_send)
    async with anyio.create_task_group() as tg:
        tg.start_soon(h.run, proxy)
        with anyio.fail_after(5):
            await stalled.wait()
        before = pulled
        await anyio.sleep(0.25)  # the upstream has ~20 more events ready meanwhile
        assert pulled == before
        resume.set()
    assert pulled > before
    assert h.events()[-1] == "message_stop"


async def test_http_disconnect_cancels_the_upstream_stream(
        proxy: RotatingProxy, fake_upstream: FakeUpstream, pool: AccountPool) -> None:
    """``http.disconnect`` mid-stream stops relaying and aborts the upstream request at once."""
    fake_upstream.script(KEY_A, Reply(event_gap=0.05, text_deltas=40))

    async def on_send(message: MutableMapping[str, Any]) -> None:
        if len(h.chunks) == 3:
            h.disconnect()

    h = Harness(request_body(), on_send=on_send)
    with anyio.fail_after(2):  # the whole reply would take ~2.2 s
        await h.run(proxy)
        await fake_upstream.wait_cancelled_async(1)
    assert fake_upstream.requests[0].cancelled
    assert in_flight(pool) == {"a": 0, "b": 0, "c": 0}
    assert "message_stop" not in h.events()
    await anyio.sleep(0.05)
    assert acquired(proxy) == 0


async def test_disconnect_while_waiting_for_the_upstream_head(
        proxy: RotatingProxy, fake_upstream: FakeUpstream, pool: AccountPool) -> None:
    """A client leaving before the upstream answers cancels the pending upstream request."""
    gate = Gate()
    fake_upstream.script(KEY_A, Reply(hold=gate))
    h = Harness(request_body())
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(h.run, proxy)
                await gate.wait_arrivals_async(1)
                h.disconnect()
            await fake_upstream.wait_cancelled_async(1)
    finally:
        gate.release()
    assert h.sent == []  # nothing was ever sent to a client that was gone
    assert in_flight(pool) == {"a": 0, "b": 0, "c": 0}


async def test_send_raising_oserror_stops_the_upstream(
        proxy: RotatingProxy, fake_upstream: FakeUpstream, pool: AccountPool) -> None:
    """ASGI 2.4 servers raise OSError from ``send`` once the client is gone: same cleanup."""
    fake_upstream.script(KEY_A, Reply(event_gap=0.05, text_deltas=40))

    async def on_send(message: MutableMapping[str, Any]) -> None:
        if len(h.chunks) >= 3:  # and on every later send, as such servers do
            raise OSError("client disconnected")

    records = Records()
    proxy.observers.append(records)
    h = Harness(request_body(), on_send=on_send)
    with anyio.fail_after(2):
        await h.run(proxy)
        await fake_upstream.wait_cancelled_async(1)
    assert in_flight(pool) == {"a": 0, "b": 0, "c": 0}
    [record] = records.done
    assert (record.status, record.client_disconnected) == (499, True)
    assert record.error_type is None  # the client left; the upstream did nothing wrong
    await anyio.sleep(0.05)
    assert acquired(proxy) == 0


async def test_task_cancellation_mid_stream_closes_the_upstream(
        proxy: RotatingProxy, fake_upstream: FakeUpstream, pool: AccountPool) -> None:
    """A raw ``asyncio.Task.cancel()`` of the request still closes the upstream response."""
    fake_upstream.script(KEY_A, Reply(event_gap=0.05, text_deltas=40))
    relaying = asyncio.Event()

    async def on_send(message: MutableMapping[str, Any]) -> None:
        if len(h.chunks) == 2:
            relaying.set()

    h = Harness(request_body(), on_send=on_send)
    task = asyncio.ensure_future(h.run(proxy))
    with anyio.fail_after(2):
        await relaying.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await fake_upstream.wait_cancelled_async(1)
    assert in_flight(pool) == {"a": 0, "b": 0, "c": 0}
    await anyio.sleep(0.05)
    assert acquired(proxy) == 0


async def test_no_upstream_connection_leaks_after_failovers_and_disconnects(
        proxy: RotatingProxy, fake_upstream: FakeUpstream, pool: AccountPool,
        clock: FakeClock) -> None:
    """Failovers, stream errors, cuts and disconnects all give their connections back."""

    async def run(h: Harness) -> Harness:
        with anyio.fail_after(5):
            await h.run(proxy)
        return h

    async def leave_early(message: MutableMapping[str, Any]) -> None:
        if len(h.chunks) == 2:
            h.disconnect()

    for _ in range(3):
        # One request through three failures (529, error event, 429): the last one is returned.
        fake_upstream.script_any(Overloaded(), StreamError(after=0),
                                 RateLimited(retry_after=1, reset_after=1))
        assert (await run(Harness(request_body()))).status == 429
        clock.advance(300)  # past the cooldown and any backoff the 529s and 500s started
        # A 500, then a stream cut midway: 200 ending in an error event.
        fake_upstream.script_any(ApiError(status=500), CutStream(after=2))
        assert (await run(Harness(request_body()))).events()[-1] == "error"
        # A JSON body cut midway fails over to the next account.
        fake_upstream.script_any(CutStream())
        assert (await run(Harness(request_body(stream=False)))).status == 200
        # A client that leaves mid-stream.
        fake_upstream.script_any(Reply(event_gap=0.02, text_deltas=30))
        h = Harness(request_body(), on_send=leave_early)
        await run(h)
        clock.advance(300)
    with anyio.fail_after(2):
        await fake_upstream.wait_cancelled_async(3)
    await anyio.sleep(0.05)
    assert acquired(proxy) == 0
    assert in_flight(pool) == {"a": 0, "b": 0, "c": 0}


async def _read_events(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    events: list[bytes] = []
    buf = b""
    while len(events) < count:
        data = await reader.read(4096)
        assert data, "the stream ended early"
        buf += data
        while b"event: " in buf:
            at = buf.index(b"event: ")
            end = buf.find(b"\n", at)
            if end < 0:
                break
            events.append(buf[at + 7:end])
            buf = buf[end:]
    return events


def test_closing_a_real_socket_stops_the_upstream_stream(proxy_server: Stack) -> None:
    """A client that closes its socket mid-stream makes the proxy abort the upstream at once."""
    proxy_server.fake.script(KEY_A, Reply(event_gap=0.05, text_deltas=60))

    async def client() -> list[bytes]:
        reader, writer = await asyncio.open_connection(proxy_server.server.host,
                                                       proxy_server.server.port)
        body = request_body()
        writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: proxy\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        events = await _read_events(reader, 3)
        writer.close()
        await writer.wait_closed()
        return events

    events = anyio.run(client)
    assert events[0] == b"message_start"
    assert proxy_server.fake.wait_cancelled(1, timeout=2)  # the reply would take 3+ s
    assert proxy_server.wait_idle(2)
    assert proxy_server.pool.status("a").in_flight == 0


async def test_records_tell_the_observers_what_happened(
        proxy: RotatingProxy, fake_upstream: FakeUpstream) -> None:
    """A request that failed over once is recorded with its failover, account and usage."""
    fake_upstream.script(KEY_A, RateLimited(retry_after=9, reset_after=9))
    records = Records()
    proxy.observers.append(records)
    h = Harness(request_body())
    with anyio.fail_after(5):
        await h.run(proxy)
    [record] = records.done
    assert (record.route, record.model, record.stream, record.status) == (
        "messages", MODEL, True, 200)
    assert (record.account, record.attempts) == ("b", 2)
    assert record.failovers == [Failover("a", "quota", 429)]
    assert record.input_tokens is not None
    assert record.output_tokens is not None
    assert record.error_type is None
    assert not record.client_disconnected


class Broken:
    """An observer that fails on everything."""

    def on_failover(self, record: RequestRecord, failover: Failover) -> None:
        raise RuntimeError("metrics backend down")

    def on_request(self, record: RequestRecord) -> None:
        raise RuntimeError("metrics backend down")


async def test_a_broken_observer_silences_neither_the_others_nor_the_request(
        proxy: RotatingProxy, fake_upstream: FakeUpstream,
        caplog: pytest.LogCaptureFixture) -> None:
    """An observer raising on a failover and on the record: the request still fails over
    and answers, the observers after it still hear of both, and each failure is logged."""
    fake_upstream.script(KEY_A, RateLimited(retry_after=9, reset_after=9))
    records, seen = Records(), []
    records.on_failover = lambda record, failover: seen.append(failover)  # type: ignore[method-assign]
    proxy.observers.extend([Broken(), records])
    h = Harness(request_body())
    with anyio.fail_after(5):
        await h.run(proxy)
    assert h.status == 200
    [record] = records.done
    assert record.failovers == seen == [Failover("a", "quota", 429)]
    messages = [r.getMessage() for r in caplog.records if r.name == "ccrotate.proxy"]
    assert any("failed on a failover" in m for m in messages)
    assert any("failed on a request record" in m for m in messages)


async def test_a_client_leaving_during_the_upload_costs_nothing(
        proxy: RotatingProxy, fake_upstream: FakeUpstream, pool: AccountPool) -> None:
    """A disconnect before the body is complete ends the request: no account, no upstream."""
    records = Records()
    proxy.observers.append(records)
    body = request_body()
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[:10], "more_body": True},
        {"type": "http.disconnect"}]
    h = Harness(body)

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    with anyio.fail_after(5):
        await proxy(h.scope(), receive, h.send)
    assert h.sent == []
    assert records.done[0].status == 499
    assert fake_upstream.requests == []
    assert all(s.requests == 0 for s in pool.statuses())


async def test_an_oversized_body_is_a_413_without_upstream(
        upstream_server: Server, pool: AccountPool) -> None:
    """A body over ``max_body_size`` is refused by the proxy itself."""
    h = Harness(request_body())
    config = fast_config(upstream_server.url, max_body_size=64)
    async with RotatingProxy(pool, config=config) as proxy:
        with anyio.fail_after(5):
            await h.run(proxy)
    assert h.status == 413
    assert json.loads(b"".join(h.chunks))["error"]["type"] == "request_too_large"
    assert upstream_server.app.requests == []


# -- deadlines and disconnects: the per-loop sweeper (watch.py) --------------------------------


async def test_a_deadline_leaves_the_tasks_cancellation_count_as_it_was(
        upstream_server: Server, pool: AccountPool, fake_upstream: FakeUpstream) -> None:
    """A 504 at the request deadline takes back its own cancellation: the task that ran
    the request (the server's, here the test's) can still time out and be cancelled."""
    gate = Gate()
    fake_upstream.script(KEY_A, Reply(hold=gate))
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
    h = Harness(request_body(stream=False))
    try:
        async with RotatingProxy(pool, config=fast_config(upstream_server.url,
                                                          request_timeout=0.2)) as proxy:
            started = anyio.current_time()
            await h.run(proxy)
            took = anyio.current_time() - started
    finally:
        gate.release()
    assert h.status == 504
    assert took >= 0.2  # not before the deadline (and the upstream never answers at all)
    assert task.cancelling() == 0
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)
    assert in_flight(pool) == {"a": 0, "b": 0, "c": 0}


async def test_a_cancellation_from_outside_still_propagates_past_a_fired_deadline(
        upstream_server: Server, pool: AccountPool, fake_upstream: FakeUpstream) -> None:
    """The server cancelling the request in the same tick as its deadline: the request
    task ends cancelled, it does not answer 504 and carry on."""
    gate = Gate()
    fake_upstream.script(KEY_A, Reply(hold=gate))
    h = Harness(request_body(stream=False))
    try:
        async with RotatingProxy(pool, config=fast_config(upstream_server.url,
                                                          request_timeout=0.2)) as proxy:
            task = asyncio.ensure_future(h.run(proxy))
            await gate.wait_arrivals_async(1)
            watches = proxy.pipeline._watches
            assert watches is not None
            assert watches.in_flight() == 1
            # What a deadline firing does, then a cancel from outside, before either lands.
            [watch] = watches._live
            watch.fire(DEADLINE)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert watches.in_flight() == 0
    finally:
        gate.release()
    assert h.sent == []
    assert in_flight(pool) == {"a": 0, "b": 0, "c": 0}


async def test_short_requests_start_no_task_and_the_sweeper_stops_when_idle(
        proxy: RotatingProxy, fake_upstream: FakeUpstream) -> None:
    """A request that ends before the sweeper's first tick costs a set insert: no timer
    of its own, no watcher task. The sweeper's timer stops once nothing is in flight."""
    before = len(asyncio.all_tasks())
    short = 0
    for _ in range(3):
        watches = proxy.pipeline._watches
        while watches is not None and watches._handle is not None:  # noqa: ASYNC110
            await anyio.sleep(0.02)  # idle: the next request arms the first tick itself
        seen: list[int] = []

        async def on_send(message: MutableMapping[str, Any], seen: list[int] = seen) -> None:
            seen.append(len(asyncio.all_tasks()))

        h = Harness(request_body(stream=False), on_send=on_send)
        started = anyio.current_time()
        await h.run(proxy)
        assert h.status == 200
        if anyio.current_time() - started < 0.09:  # ended before its first tick (0.1 s)
            short += 1
            # While it answered, no task beside the test's own (and the fixtures') ran.
            assert max(seen) == before
    assert short > 0
    watches = proxy.pipeline._watches
    assert watches is not None
    assert watches.in_flight() == 0
    await anyio.sleep(watches.tick * 3)
    assert watches._handle is None


async def test_a_watch_starts_its_disconnect_watcher_after_a_tick() -> None:
    """The sweeper, alone: a request still waiting after a tick gets a watcher, which
    cancels its scope when ``receive()`` says the client left; the record says so."""
    loop = asyncio.get_running_loop()
    watches = Watches(loop, None, 600.0)
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    record = RequestRecord(request_id="r", started_at=0.0, route="messages", method="POST")
    with anyio.CancelScope() as scope:
        watch = watches.enter(scope, None)
        watch.watch(receive, record, loop.time() + 600)
        assert watch.watcher is None
        try:
            await asyncio.sleep(watches.tick * 1.5)
            assert watch.watcher is not None
            assert not watch.watcher.done()
            gone.set()
            await asyncio.sleep(5)
        finally:
            watches.leave(watch)
    assert scope.cancelled_caught
    assert (watch.reason, record.client_disconnected) == (DISCONNECT, True)


async def test_a_shielded_scope_inside_a_request_runs_to_its_end() -> None:
    """A deadline cancels the request's scope, not its task: work under a shield inside
    (a token refresh whose answer must be saved) completes; the request then stops."""
    watches = Watches(asyncio.get_running_loop(), 0.04)
    steps: list[str] = []
    with watches.scope_type() as scope:  # the class the pipeline uses, taken once per loop
        assert isinstance(scope, anyio.CancelScope)
        watch = watches.enter(scope, 0.04)
        try:
            with anyio.CancelScope(shield=True):
                await asyncio.sleep(0.2)  # past the deadline and several ticks
                steps.append("shielded work done")
            await asyncio.sleep(5)
            steps.append("not reached")
        finally:
            watches.leave(watch)
    assert steps == ["shielded work done"]
    assert watch.reason == DEADLINE
    assert scope.cancelled_caught


async def test_a_watch_left_before_its_tick_is_never_cancelled() -> None:
    """Leaving the watch ends it: a deadline passing afterwards cancels nothing."""
    watches = Watches(asyncio.get_running_loop(), 0.04)
    watch = watches.enter(anyio.CancelScope(), 0.04)
    watches.leave(watch)
    await asyncio.sleep(0.1)  # the deadline and two ticks pass; nothing is cancelled
    assert watch.reason is None
    assert watches.in_flight() == 0
