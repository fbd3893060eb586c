"""A fast fake Anthropic upstream for benchmarks: a raw asyncio HTTP/1.1 server on uvloop.

Not ``ccrotate.testing.FakeUpstream``: that one is built for correctness (recording,
scripts, OAuth) and would be the bottleneck here. This one answers every POST with
pre-encoded bytes, in a callback (no task per request), so that the proxy is what
the benchmark measures. Behaviour is chosen per request by headers, which proxies
forward untouched:

- ``x-bench-delay-ms``: wait before the response head (time to first token for streams).
- ``x-bench-gap-ms``: pause between SSE events (streams only).
- ``x-bench-events``: number of ``content_block_delta`` events (streams only).
- ``x-bench-429``: comma-separated credentials (``x-api-key`` or bearer token) that get
  a 429 ``rate_limit_error``; every other credential succeeds.

A body containing ``"stream":true`` gets the real Messages SSE sequence
(``message_start``, ``content_block_start``, ``ping``, deltas, ``content_block_stop``,
``message_delta``, ``message_stop``) with chunked framing, one event per chunk; any
other body gets a JSON message with ``content-length``. No pipelining: the load
generator and the proxies never send a request before the previous answer ended.

Run: ``python benchmarks/upstream.py [--port 0]``; it prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable

import httptools

_MODEL = "claude-sonnet-4-6"
_USAGE = {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def _sse(name: str, data: object) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + json.dumps(
        data, separators=(",", ":")).encode() + b"\n\n"


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(payload), payload)


# Headers a real answer carries (rate-limit state included: the proxy parses those on
# every success, so leaving them out would flatter it).
_COMMON = (
    b"anthropic-ratelimit-requests-limit: 4000\r\n"
    b"anthropic-ratelimit-requests-remaining: 3999\r\n"
    b"anthropic-ratelimit-requests-reset: 2030-01-01T00:00:00Z\r\n"
    b"anthropic-ratelimit-tokens-limit: 2000000\r\n"
    b"anthropic-ratelimit-tokens-remaining: 1999000\r\n"
    b"anthropic-ratelimit-tokens-reset: 2030-01-01T00:00:00Z\r\n"
    b"request-id: req_011CBenchBenchBenchBench\r\n"
    b"anthropic-organization-id: 00000000-0000-0000-0000-000000000000\r\n"
    b"via: 1.1 google\r\n"
    b"cf-cache-status: DYNAMIC\r\n"
    b"x-robots-tag: none\r\n"
    b"server: cloudflare\r\n"
)

_MESSAGE = json.dumps({
    "id": "msg_01BenchBenchBenchBench01", "type": "message", "role": "assistant",
    "model": _MODEL,
    "content": [{"type": "text", "text": "Hello! How can I help you today? " * 4}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {**_USAGE, "output_tokens": 36},
}, separators=(",", ":")).encode()
_JSON_RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + _COMMON
                  + b"content-length: %d\r\n\r\n" % len(_MESSAGE) + _MESSAGE)

_ERROR = json.dumps({
    "type": "error", "error": {"type": "rate_limit_error",
                               "message": "Number of requests has exceeded your rate limit"},
    "request_id": "req_011CBenchRateLimited",
}, separators=(",", ":")).encode()
_429_RESPONSE = (b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
                 b"retry-after: 30\r\n" + _COMMON.replace(
                     b"requests-remaining: 3999", b"requests-remaining: 0")
                 + b"content-length: %d\r\n\r\n" % len(_ERROR) + _ERROR)

_STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                b"cache-control: no-cache\r\n" + _COMMON + b"transfer-encoding: chunked\r\n\r\n")
_OPENING = [
    _sse("message_start", {"type": "message_start", "message": {
        "id": "msg_01BenchBenchBenchBench01", "type": "message", "role": "assistant",
        "model": _MODEL, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {**_USAGE, "output_tokens": 1}}}),
    _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
    _sse("ping", {"type": "ping"}),
]
_DELTA = _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "text_delta", "text": "Hello, world. "}})


def _closing(events: int) -> list[bytes]:
    return [
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": 4 * events}}),
        _sse("message_stop", {"type": "message_stop"}),
    ]


_STREAM_CACHE: dict[int, list[bytes]] = {}


def stream_events(events: int) -> list[bytes]:
    """The chunk-framed SSE events of one streamed answer with ``events`` deltas."""
    cached = _STREAM_CACHE.get(events)
    if cached is None:
        frames = [*_OPENING, *([_DELTA] * events), *_closing(events)]
        cached = [_chunk(f) for f in frames]
        cached[-1] += b"0\r\n\r\n"
        if len(_STREAM_CACHE) < 64:
            _STREAM_CACHE[events] = cached
    return cached


class _Request:
    __slots__ = ("credential", "delay", "events", "fail", "gap", "stream")

    def __init__(self) -> None:
        self.delay = 0.0
        self.gap = 0.0
        self.events = 10
        self.fail: bytes | None = None
        self.credential: bytes | None = None
        self.stream = False


class BenchProtocol(asyncio.Protocol):
    """One client connection: parse with httptools, answer from pre-built bytes."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.req = _Request()
        self.body: list[bytes] = []
        self.pending: asyncio.TimerHandle | None = None

    # -- asyncio ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pending is not None:
            self.pending.cancel()
        self.transport = None

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.req = _Request()
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if not name.startswith(b"x-") and name != b"authorization":
            return
        req = self.req
        if name == b"x-api-key":
            req.credential = value
        elif name == b"authorization":
            req.credential = value[7:] if value[:7].lower() == b"bearer " else value
        elif name == b"x-bench-delay-ms":
            req.delay = float(value) / 1000
        elif name == b"x-bench-gap-ms":
            req.gap = float(value) / 1000
        elif name == b"x-bench-events":
            req.events = int(value)
        elif name == b"x-bench-429":
            req.fail = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        req = self.req
        body = b"".join(self.body)
        req.stream = b'"stream":true' in body or b'"stream": true' in body
        if req.fail is not None and req.credential is not None and req.credential in [
                f.strip() for f in req.fail.split(b",")]:
            self._later(req.delay, self._write, _429_RESPONSE)
        elif req.stream:
            self._later(req.delay, self._stream, stream_events(req.events), 0, req.gap)
        else:
            self._later(req.delay, self._write, _JSON_RESPONSE)

    # -- answering -------------------------------------------------------------------------

    def _later(self, delay: float, fn: Callable[..., None], *args: object) -> None:
        if delay <= 0:
            fn(*args)
        else:
            self.pending = asyncio.get_running_loop().call_later(delay, fn, *args)

    def _write(self, data: bytes) -> None:
        self.pending = None
        if self.transport is not None:
            self.transport.write(data)

    def _stream(self, chunks: list[bytes], index: int, gap: float) -> None:
        self.pending = None
        transport = self.transport
        if transport is None:
            return
        if gap <= 0:
            transport.write(_STREAM_HEAD + b"".join(chunks))
            return
        if index == 0:
            transport.write(_STREAM_HEAD + chunks[0])
        else:
            transport.write(chunks[index])
        if index + 1 < len(chunks):
            self._later(gap, self._stream, chunks, index + 1, gap)


async def serve(host: str, port: int, ready: Callable[[int], None] | None = None) -> None:
    """Serve until cancelled; ``ready(port)`` is called once listening."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(BenchProtocol, host, port, backlog=4096,
                                      reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    if ready is not None:
        ready(bound)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    def ready(port: int) -> None:
        print(f"PORT {port}", flush=True)

    try:
        import uvloop
        runner: Callable[..., object] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is part of the server extra
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port, ready))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
