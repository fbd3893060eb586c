"""HttptoolsUpstream's own behaviour beyond the shared contract (tests/test_transports.py).

Each test serves a scripted raw HTTP/1.1 peer on a loopback socket (asyncio.start_server),
so what the client puts on the wire and how it treats each connection is seen from the
other end: connections opened, bytes received, a peer that stops reading or hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccrotate import (
    HttptoolsUpstream,
    Timeouts,
    UpstreamConnectError,
    UpstreamProtocolError,
)

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
Handler = Callable[["Peer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Peer:
    """A raw HTTP/1.1 server; ``handler`` runs once per connection."""

    handler: Handler
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    url: str = ""

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return head + body

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(self, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def peer(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Peer]:
    server_peer = Peer(handler)
    server = await asyncio.start_server(server_peer._serve, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if tls is not None else "http"
    server_peer.url = f"{scheme}://localhost:{port}/v1/messages?beta=true"
    try:
        yield server_peer
    finally:
        server.close()


async def answer_each(peer_: Peer, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
    while True:
        await peer_.read_request(reader)
        writer.write(OK)
        await writer.drain()


def replying(raw: bytes, *, hold: bool = False) -> Handler:
    """A peer answering one request with ``raw``, then hanging up (with ``hold``: keeping
    the connection until the client leaves)."""
    async def handler(peer_: Peer, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await peer_.read_request(reader)
        writer.write(raw)
        await writer.drain()
        if hold:
            await reader.read()

    return handler


HEADERS = [("x-api-key", "sk-ant-api03-h1"), ("content-type", "application/json")]


async def test_requests_in_turn_share_one_connection_and_the_wire_is_plain() -> None:
    """Keep-alive: three requests, one connection; each request is the method, the
    target with its query, a Host header, the caller's headers and a content length."""
    async with peer(answer_each) as server, HttptoolsUpstream() as upstream:
        for _ in range(3):
            resp = await upstream.send("POST", server.url, HEADERS, b'{"a":1}')
            assert await resp.read() == b"{}"
            await resp.aclose()
    assert server.connections == 1
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/messages?beta=true HTTP/1.1"
    assert lines[1].startswith(b"host: localhost:")
    assert lines[2:] == [b"x-api-key: sk-ant-api03-h1", b"content-type: application/json",
                         b"content-length: 7"]
    assert body == b'{"a":1}'


async def test_a_half_read_answer_closes_its_connection() -> None:
    """A response closed before its end is not reused: the next request dials anew."""
    slow_stream = replying(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                           b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n", hold=True)
    async with peer(slow_stream) as server, HttptoolsUpstream() as upstream:
        for _ in range(2):
            resp = await upstream.send("POST", server.url, HEADERS, b"{}")
            assert await anext(resp.chunks()) == b"hello"
            await resp.aclose()
    assert server.connections == 2


async def test_pool_size_caps_open_connections() -> None:
    """With pool_size=1 a second request waits for the first connection to be free."""
    async with peer(answer_each) as server, HttptoolsUpstream(
            timeouts=Timeouts(pool_size=1)) as upstream:
        first = await upstream.send("POST", server.url, HEADERS, b"{}")
        second = asyncio.ensure_future(upstream.send("POST", server.url, HEADERS, b"{}"))
        await asyncio.sleep(0.05)
        assert not second.done()  # parked: the only connection is busy
        await first.read()
        await first.aclose()
        with anyio.fail_after(5):
            resp = await second
        await resp.read()
        await resp.aclose()
    assert server.connections == 1


async def test_an_idle_connection_the_upstream_closed_is_not_used() -> None:
    """The peer hangs up after one answer (keep-alive ended): the next request dials."""
    async with peer(replying(OK)) as server, HttptoolsUpstream() as upstream:
        for _ in range(2):
            resp = await upstream.send("POST", server.url, HEADERS, b"{}")
            assert await resp.read() == b"{}"
            await resp.aclose()
            await asyncio.sleep(0.05)  # the peer's FIN arrives
    assert server.connections == 2


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("POST", False)])
async def test_keep_alive_race_retries_only_an_idempotent_request(method: str,
                                                                  retried: bool) -> None:
    """The peer takes a second request on a kept connection and hangs up without a byte:
    a GET goes again on a new connection; a POST (maybe acted on) is a connect error."""
    async def drops_second(peer_: Peer, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        await peer_.read_request(reader)
        writer.write(OK)
        await writer.drain()
        if peer_.connections == 1:
            await peer_.read_request(reader)  # then close without answering

    body = b"{}" if method == "POST" else None
    async with peer(drops_second) as server, HttptoolsUpstream() as upstream:
        resp = await upstream.send(method, server.url, HEADERS, body)
        await resp.read()
        await resp.aclose()
        if retried:
            resp = await upstream.send(method, server.url, HEADERS, body)
            assert await resp.read() == b"{}"
            await resp.aclose()
        else:
            with pytest.raises(UpstreamConnectError, match="closed the connection"):
                await upstream.send(method, server.url, HEADERS, body)
    assert server.connections == (2 if retried else 1)


async def test_a_slow_reader_stops_the_upstream_sending() -> None:
    """Past a megabyte buffered and unread, the client stops reading the socket, so the
    upstream's sends back up instead of the proxy's memory growing; reading resumes."""
    blob = b"x" * (64 * 1024)
    sent = 0
    stalled = asyncio.Event()

    async def firehose(peer_: Peer, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await peer_.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"content-length: %d\r\n\r\n" % (len(blob) * 256))
        for _ in range(256):  # 16 MB
            writer.write(blob)
            sent += len(blob)
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                stalled.set()
                await writer.drain()

    async with peer(firehose) as server, HttptoolsUpstream() as upstream:
        resp = await upstream.send("POST", server.url, HEADERS, b"{}")
        with anyio.fail_after(10):
            await stalled.wait()
        assert sent < 12 * 1024 * 1024  # held back, far from the whole 16 MB
        received = 0
        with anyio.fail_after(20):
            async for chunk in resp.chunks():
                received += len(chunk)
        await resp.aclose()
    assert received == len(blob) * 256


async def test_an_answer_without_length_ends_with_the_connection() -> None:
    """Neither content-length nor chunked: the body is what came before the close."""
    unframed = replying(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"connection: close\r\n\r\n{\"ok\": true}")
    async with peer(unframed) as server, HttptoolsUpstream() as upstream:
        resp = await upstream.send("POST", server.url, HEADERS, b"{}")
        assert await resp.read() == b'{"ok": true}'
        await resp.aclose()


async def test_garbage_is_a_protocol_error() -> None:
    """Bytes that are not HTTP/1.1: UpstreamProtocolError with the parser's error as cause."""
    garbage = replying(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", hold=True)
    async with peer(garbage) as server, HttptoolsUpstream() as upstream:
        with pytest.raises(UpstreamProtocolError, match="malformed") as caught:
            await upstream.send("POST", server.url, HEADERS, b"{}")
    assert caught.value.__cause__ is not None


@pytest.mark.parametrize("bad", [("x-evil", "a\r\nx-injected: 1"), ("x-evil\n", "v"),
                                 ("x-evil", "a\nb")])
async def test_a_line_break_in_a_header_is_refused_before_anything_is_sent(
        bad: tuple[str, str]) -> None:
    """Header injection: nothing reaches the upstream."""
    async with peer(answer_each) as server, HttptoolsUpstream() as upstream:
        with pytest.raises(UpstreamConnectError, match="line break"):
            await upstream.send("POST", server.url, [*HEADERS, bad], b"{}")
    assert server.requests == []


@pytest.mark.parametrize(("url", "says"), [
    ("ftp://user:s3cret@example.invalid/x", "unsupported URL"),
    ("http://user:s3cret@example.invalid:99999/x", "bad port"),
    ("http://user:s3cret@exa\x7fmple.invalid/x", "bad host"),
])
async def test_a_bad_url_is_a_connect_error_that_does_not_quote_it(url: str, says: str) -> None:
    """Only http and https origins with a usable host and port; the message never
    repeats the URL, whose userinfo may be a credential."""
    async with HttptoolsUpstream() as upstream:
        with pytest.raises(UpstreamConnectError, match=says) as caught:
            await upstream.send("POST", url, HEADERS, b"{}")
    assert "s3cret" not in str(caught.value)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, made by the system's openssl."""
    if shutil.which("openssl") is None:  # pragma: no cover - every CI image has it
        pytest.skip("no openssl binary to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_https_with_a_given_context_and_the_system_cas_refusing_it(
        certificate: tuple[Path, Path]) -> None:
    """TLS: the caller's context (trusting the peer's certificate) talks; the default
    context (the system's CAs) refuses the self-signed peer with a connect error."""
    cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with peer(answer_each, served) as server:
        async with HttptoolsUpstream(ssl_context=trusting) as upstream:
            for _ in range(2):
                resp = await upstream.send("POST", server.url, HEADERS, b"{}")
                assert await resp.read() == b"{}"
                await resp.aclose()
        assert server.connections == 1
        async with HttptoolsUpstream() as upstream:
            with pytest.raises(UpstreamConnectError, match="cannot connect") as caught:
                await upstream.send("POST", server.url, HEADERS, b"{}")
        assert isinstance(caught.value.__cause__, ssl.SSLError)


async def test_after_aclose_idle_connections_are_gone_and_a_request_dials_anew() -> None:
    """aclose() closes what is idle (the peer sees its connection end); the transport
    still answers a later request, on a new connection."""
    async with peer(answer_each) as server:
        upstream = HttptoolsUpstream()
        resp = await upstream.send("POST", server.url, HEADERS, b"{}")
        await resp.read()
        await resp.aclose()
        await upstream.aclose()
        resp = await upstream.send("POST", server.url, HEADERS, b"{}")
        assert await resp.read() == b"{}"
        await resp.aclose()
        await upstream.aclose()
    assert server.connections == 2


@pytest.mark.parametrize(("path", "sent"), [
    ("/v1/models/claude x", b"/v1/models/claude%20x"),
    # urlsplit drops CR, LF and tab (WHATWG); the space left is encoded.
    ("/v1/models/a\r\nx-injected: 1", b"/v1/models/ax-injected:%201"),
    ("/v1/models/caf\u00e9?beta=true&x=1", b"/v1/models/caf%C3%A9?beta=true&x=1"),
])
async def test_the_request_target_is_percent_encoded(path: str, sent: bytes) -> None:
    """A decoded path (a client's model id) cannot split the request line: what is not a
    path or query character goes percent-encoded, as one request."""
    async with peer(answer_each) as server, HttptoolsUpstream() as upstream:
        base = server.url.split("/v1/")[0]
        resp = await upstream.send("GET", base + path, HEADERS, None)
        assert await resp.read() == b"{}"
        await resp.aclose()
    assert len(server.requests) == 1
    assert server.requests[0].split(b"\r\n")[0] == b"GET " + sent + b" HTTP/1.1"
    assert b"x-injected" not in server.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n", 1)[1]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=12),
       chunked=st.booleans())
async def test_an_answer_split_anywhere_reads_the_same(cuts: list[int], chunked: bool) -> None:
    """However the peer's bytes are cut into TCP writes (mid-line, mid-chunk-size,
    mid-header), the body read is the body sent, and the connection is reused after."""
    events = b"".join(b"event: content_block_delta\ndata: {\"n\": %d}\n\n" % i for i in range(8))
    if chunked:
        body = b"".join(b"%x\r\n%s\r\n" % (len(events[i:i + 50]), events[i:i + 50])
                        for i in range(0, len(events), 50)) + b"0\r\n\r\n"
        head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n")
    else:
        body = events
        head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"content-length: %d\r\n\r\n" % len(events))
    wire = head + body
    marks = sorted({min(c, len(wire) - 1) for c in cuts} | {0, len(wire)})

    async def fragmented(peer_: Peer, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        while True:
            await peer_.read_request(reader)
            for start, end in itertools.pairwise(marks):
                writer.write(wire[start:end])
                await writer.drain()
                await asyncio.sleep(0)

    async with peer(fragmented) as server, HttptoolsUpstream() as upstream:
        for _ in range(2):
            resp = await upstream.send("POST", server.url, HEADERS, b"{}")
            assert resp.content_type == "text/event-stream"
            got = b"".join([chunk async for chunk in resp.chunks()])
            await resp.aclose()
            assert got == events
    assert server.connections == 1
