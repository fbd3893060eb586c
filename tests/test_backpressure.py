"""A slow reader holds the upstream back: the proxy buffers no more than socket buffers.

Over real loopback sockets: the fake upstream streams a long reply (tens of MB of text
deltas) → ccrotate's proxy → a raw socket client with a small receive buffer that
reads a little, pauses, and then stops reading. The fake records how many body bytes
the server has taken from it (``RecordedRequest.sent_bytes``). Once that stops moving,
what the fake has sent minus what the client has read is what sits in between: it
must fit in the kernel's socket queues on the way (read from ``/proc/net/tcp``) plus
a small margin for the proxy's and servers' own buffers, and be far below the length
of the stream. A proxy that read the upstream faster than the client (an unbounded
queue, a buffering middleware) would let the fake send the whole reply.

No timing is asserted: the waits only give the pipeline time to fill up, and a slow
machine can only make the check pass later, not fail.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ccrotate import AccountPool, OpenAIRoute, RotatingProxy
from ccrotate.testing import FakeUpstream, RecordedRequest, Reply, ServerHandle, serve_app
from conftest import MODEL, FakeClock, fast_config, make_accounts

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="reads socket queues from /proc/net/tcp"),
]

STREAM_MB = 32
DELTAS = 3000  # ~8 KB of text per event
CLIENT_RCVBUF = 8192
READ_FIRST = 256 * 1024  # what the slow client reads before it stops
# What user space holds on the way: the fake's and the proxy's transport write buffers
# (64 KiB plus the chunk being written), aiohttp's read buffer (it pauses reading past
# 128 KiB, after a read of up to 256 KiB) and the chunk the proxy holds. Measured at
# 1.3-1.7 MB on Linux with uvloop; twice that leaves room. A proxy that buffered would
# hold most of the 32 MB.
MARGIN = 3 * 1024 * 1024


@dataclass
class Served:
    fake: FakeUpstream
    upstream: ServerHandle[FakeUpstream]
    proxy: ServerHandle[Any]


@pytest.fixture
def served() -> Iterator[Served]:
    fake = FakeUpstream()
    text = ("Slow readers must not make the proxy buffer. " * 30)[:1000]
    reply = Reply(text=text * (STREAM_MB * 1024 * 1024 // len(text)), text_deltas=DELTAS,
                  # A tiny gap makes the fake hand each event to the server on its own,
                  # so sent_bytes follows the stream event by event.
                  event_gap=1e-6)
    fake.default = reply
    pool = AccountPool(make_accounts(), clock=FakeClock())
    with serve_app(fake) as upstream:
        proxy = RotatingProxy(pool, config=fast_config(upstream.url), openai=OpenAIRoute())
        with serve_app(proxy) as server:
            yield Served(fake, upstream, server)


def socket_queues(ports: set[int]) -> int:
    """Bytes queued in the kernel (send + receive queues) on connections touching ``ports``."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state != "01":  # ESTABLISHED
            continue
        if {int(local.split(":")[1], 16), int(remote.split(":")[1], 16)} & ports:
            tx, rx = fields[4].split(":")
            total += int(tx, 16) + int(rx, 16)
    return total


def request_bytes(path: str, body: dict[str, Any], port: int) -> bytes:
    raw = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            "content-type: application/json\r\nanthropic-version: 2023-06-01\r\n"
            "x-api-key: client-key\r\nauthorization: Bearer client-key\r\n"
            f"connection: close\r\ncontent-length: {len(raw)}\r\n\r\n")
    return head.encode() + raw


def stream_request(served: Served) -> RecordedRequest:
    records = served.fake.requests_for(path="/v1/messages")
    assert records, "the stream never reached the upstream"
    return records[-1]


def wait_still(served: Served, *, quiet: float = 0.5, limit: float = 15.0) -> int:
    """The fake's progress once it has not moved for ``quiet`` seconds (or ``limit`` passed)."""
    deadline = time.monotonic() + limit
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = stream_request(served).sent_bytes
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.05)
    return last


@pytest.mark.parametrize(("path", "end"), [
    pytest.param("/v1/messages", b"event: message_stop", id="messages"),
    pytest.param("/v1/chat/completions", b"data: [DONE]", id="openai"),
])
def test_slow_reader_holds_back_the_upstream(served: Served, path: str, end: bytes) -> None:
    """While the client has read N bytes, the upstream has sent at most N + buffers."""
    body = {"model": MODEL, "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "talk for a long time"}]}
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
    client.settimeout(30)
    with client:
        client.connect(("127.0.0.1", served.proxy.port))
        client.sendall(request_bytes(path, body, served.proxy.port))
        received = 0
        head = b""
        while received < READ_FIRST:  # a little at a time, with pauses
            piece = client.recv(4096)
            assert piece, "the proxy closed the stream early"
            received += len(piece)
            head = head or piece
            time.sleep(0.001)
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        sent = wait_still(served)
        queued = socket_queues({served.proxy.port, served.upstream.port})
        total = text_size(served)
        in_between = sent - received
        assert in_between <= queued + MARGIN, (
            f"the upstream sent {sent} bytes while the client read {received}: "
            f"{in_between} bytes in between, socket queues hold {queued}")
        assert sent < total, f"the upstream sent all {total} bytes: the stream is too short"

        # Reading on drains the rest: the stream was held back, not broken.
        tail = b""
        while piece := client.recv(1 << 20):
            received += len(piece)
            tail = (tail + piece)[-4096:]
        assert end in tail
    assert stream_request(served).sent_bytes > total
    assert received > total  # the whole reply came through


def text_size(served: Served) -> int:
    reply = served.fake.default
    assert isinstance(reply, Reply)
    return len(reply.text)
