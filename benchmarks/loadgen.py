"""The load generator: raw asyncio sockets on uvloop with httptools parsing, in its own process.

Every client connection is an :class:`asyncio.Protocol` that writes a pre-built request
and timestamps what comes back in ``data_received`` (``time.perf_counter``): the
response head, the first body byte, each complete SSE event (a ``\\n\\n`` in the
de-chunked body) and the end. Closed loop: ``concurrency`` keep-alive connections
each send the next request as soon as the previous answer ends, for a warm-up and
then a measured period (or a request count, whichever ends first); the period is
stretched until at least ``min_samples`` requests (default: one per connection) were
measured, so that no figure comes back empty on a slow machine.

Kinds (a JSON spec on argv, a JSON result on stdout):

- ``closed``: latency, time to first byte, event gaps and throughput.
- ``sequence``: one connection, variants interleaved (``a b c a b c …``), each sample
  optionally preceded by an untimed ``POST reset``; for failover.
- ``hold``: open ``streams`` streams at once, print ``OPEN <n>`` when each has its first
  event, wait for a line on stdin, close them all and report.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httptools

CLIENT_KEY = "bench-client-key"
SMALL = {"model": "claude-sonnet-4-6", "max_tokens": 1024,
         "messages": [{"role": "user", "content": "Hello, Claude. Please say hello back."}]}
IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."


def large_body() -> dict[str, Any]:
    """A Claude-Code-shaped request of about 115 KB (system, 13 tools, a long first turn)."""
    words = "the quick brown fox jumps over the lazy dog while reading files and "
    tools = [{"name": f"Tool{i}", "description": words * 40,
              "input_schema": {"type": "object", "properties": {
                  f"arg{j}": {"type": "string", "description": words * 2} for j in range(6)},
                  "required": ["arg0"]}} for i in range(13)]
    return {
        "model": "claude-sonnet-4-6", "max_tokens": 32000,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197"},
                   {"type": "text", "text": IDENTITY, "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": words * 400}],
        "tools": tools,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": words * 500, "cache_control": {"type": "ephemeral"}}]}],
        "metadata": {"user_id": json.dumps({"device_id": "d" * 64, "session_id": "s" * 36})},
        "thinking": {"type": "enabled", "budget_tokens": 31999},
    }


def build_request(spec: dict[str, Any], path: str, headers: dict[str, str],
                  stream: bool) -> bytes:
    """The raw HTTP/1.1 request bytes."""
    doc = dict(large_body() if spec.get("body") == "large" else SMALL)
    if stream:
        doc["stream"] = True
    body = json.dumps(doc, separators=(",", ":")).encode()
    lines = [f"POST {path} HTTP/1.1", f"host: {spec['host']}:{spec['port']}",
             "content-type: application/json", "anthropic-version: 2023-06-01",
             f"x-api-key: {CLIENT_KEY}", "user-agent: ccrotate-bench/1", "accept: */*"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(slots=True)
class Sample:
    start: float
    status: int = 0
    head: float = 0.0
    first_byte: float = 0.0
    end: float = 0.0
    events: list[float] = field(default_factory=list)
    chunks: int = 0


class Client(asyncio.Protocol):
    """One keep-alive connection; :meth:`request` sends one request and awaits its end."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.sample: Sample | None = None
        self.done: asyncio.Future[Sample] | None = None
        self.first_event: asyncio.Future[None] | None = None
        self.now = 0.0
        self.tail = b""
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.now = time.perf_counter()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionResetError("connection closed"))
        if not self.lost.done():
            self.lost.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)
        if self.first_event is not None:
            self.first_event.cancel()  # nobody may be waiting: cancelled futures stay quiet

    def on_headers_complete(self) -> None:
        if self.sample is not None:
            self.sample.status = self.parser.get_status_code()
            self.sample.head = self.now

    def on_body(self, body: bytes) -> None:
        s = self.sample
        if s is None:
            return
        if not s.first_byte:
            s.first_byte = self.now
        s.chunks += 1
        buf = self.tail + body if self.tail else body
        found = buf.count(b"\n\n")
        if found:
            s.events.extend([self.now] * found)
            if self.first_event is not None and not self.first_event.done():
                self.first_event.set_result(None)
        cut = buf.rfind(b"\n\n")
        self.tail = buf[cut + 2:] if cut >= 0 else buf[-4096:]

    def on_message_complete(self) -> None:
        s = self.sample
        if s is not None:
            s.end = self.now
            if not s.first_byte:
                s.first_byte = self.now
        if self.done is not None and not self.done.done() and s is not None:
            self.done.set_result(s)

    def start(self, raw: bytes) -> asyncio.Future[Sample]:
        """Send one request; the future completes with its :class:`Sample`."""
        if self.transport is None:
            raise ConnectionResetError("connection closed")
        loop = asyncio.get_running_loop()
        self.tail = b""
        self.done = loop.create_future()
        self.first_event = loop.create_future()
        self.sample = Sample(time.perf_counter())
        self.transport.write(raw)
        return self.done

    async def request(self, raw: bytes) -> Sample:
        return await self.start(raw)


async def connect(host: str, port: int) -> Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(Client, host, port)
    return client


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (``q`` in 0..100); NaN-free: 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(values_ms: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of a list of milliseconds."""
    if not values_ms:
        return {"n": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    return {"n": len(values_ms), "p50": pct(values_ms, 50), "p90": pct(values_ms, 90),
            "p99": pct(values_ms, 99), "max": max(values_ms),
            "mean": sum(values_ms) / len(values_ms)}


async def closed(spec: dict[str, Any]) -> dict[str, Any]:
    raw = build_request(spec, spec["path"], spec.get("headers", {}), spec.get("stream", False))
    clients = await asyncio.gather(*(connect(spec["host"], spec["port"])
                                     for _ in range(spec["concurrency"])))
    loop_start = time.perf_counter()
    measure_from = loop_start + spec.get("warmup", 0.3) + spec.get("stagger", 0)
    until = measure_from + spec.get("duration", 3.0)
    limit = spec.get("requests", 10**9)
    # A window that closes by time alone can close before one round of requests has come
    # back (c64 through a Python proxy on a busy 2-core machine takes longer than a smoke
    # run's 80 ms), leaving a figure with no samples at all. So the window also waits for
    # one measured request per client: never binding in a real run, where each client
    # completes hundreds.
    min_samples = min(limit, spec.get("min_samples", spec["concurrency"]))
    samples: list[Sample] = []
    errors: dict[str, int] = {}
    sent = 0

    async def worker(client: Client) -> None:
        nonlocal sent
        # Streams of equal length started together stay in phase, and a proxy then sees
        # every stream's event at the same instant: a burst no real traffic makes.
        if spec.get("stagger"):
            await asyncio.sleep(random.uniform(0, spec["stagger"]))
        while True:
            now = time.perf_counter()
            if len(samples) >= limit or (now >= until and len(samples) >= min_samples):
                return
            sent += 1
            try:
                s = await client.request(raw)
            except Exception as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            if s.start >= measure_from and len(samples) < limit:
                samples.append(s)

    await asyncio.gather(*(worker(c) for c in clients))
    first = min((s.start for s in samples), default=measure_from)
    last = max((s.end for s in samples), default=first)
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    expected_gap = float(spec.get("headers", {}).get("x-bench-gap-ms", 0))
    gaps: list[float] = []
    coalesced = 0
    for s in samples:
        for a, b in zip(s.events, s.events[1:], strict=False):
            gap = (b - a) * 1000
            gaps.append(gap)
            if expected_gap and gap < expected_gap / 2:
                coalesced += 1
    statuses: dict[str, int] = {}
    for s in samples:
        statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
    return {
        "requests": len(samples),
        "sent": sent,
        "elapsed": last - first,
        "rps": len(samples) / (last - first) if last > first else 0.0,
        "latency": summary([(s.end - s.start) * 1000 for s in samples]),
        "ttfb": summary([(s.first_byte - s.start) * 1000 for s in samples]),
        "gaps": summary(gaps),
        "gap_error": summary([abs(g - expected_gap) for g in gaps]) if expected_gap else None,
        "coalesced": coalesced,
        "events_per_request": (sum(len(s.events) for s in samples) / len(samples)
                               if samples else 0),
        "statuses": statuses,
        "errors": errors,
    }


async def sequence(spec: dict[str, Any]) -> dict[str, Any]:
    variants = spec["variants"]
    raws = [build_request(spec, spec["path"], v.get("headers", {}), False) for v in variants]
    reset = (f"POST {spec['reset']} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".encode()
             if spec.get("reset") else None)
    client = await connect(spec["host"], spec["port"])
    results: dict[str, list[float]] = {v["name"]: [] for v in variants}
    statuses: dict[str, dict[str, int]] = {v["name"]: {} for v in variants}
    warm = spec.get("warmup_samples", 20)
    for i in range(spec["samples"] + warm):
        for v, raw in zip(variants, raws, strict=True):
            if reset is not None:
                await client.request(reset)
            s = await client.request(raw)
            if i >= warm:
                results[v["name"]].append((s.end - s.start) * 1000)
                st = statuses[v["name"]]
                st[str(s.status)] = st.get(str(s.status), 0) + 1
    if client.transport is not None:
        client.transport.close()
    return {name: {**summary(values), "statuses": statuses[name]}
            for name, values in results.items()}


async def hold(spec: dict[str, Any]) -> dict[str, Any]:
    raw = build_request(spec, spec["path"], spec.get("headers", {}), True)
    n = spec["streams"]
    clients: list[Client] = []
    # Connect in batches: a burst of SYNs beyond the accept backlog costs retransmit
    # timeouts (a second each), not memory, and would only slow the figure down.
    for at in range(0, n, 200):
        clients += await asyncio.gather(*(connect(spec["host"], spec["port"])
                                          for _ in range(min(200, n - at))))
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    answers = [c.start(raw) for c in clients]
    waits = [c.first_event for c in clients if c.first_event is not None]
    done, _ = await asyncio.wait(waits, timeout=spec.get("timeout", 60))
    opened = sum(1 for f in done if not f.cancelled())
    print(f"OPEN {opened} {time.perf_counter() - started:.3f}", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    for c in clients:
        if c.transport is not None:
            c.transport.abort()
    await asyncio.gather(*answers, return_exceptions=True)
    return {"streams": n, "opened": opened}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one spec on a fresh event loop (uvloop when installed)."""
    kind = {"closed": closed, "sequence": sequence, "hold": hold}[spec["kind"]]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is part of the server extra
        return asyncio.run(kind(spec))
    return uvloop.run(kind(spec))


def main() -> None:
    """One spec from argv, or (no argument) a worker reading one JSON spec per stdin line."""
    if len(sys.argv) > 1:
        print("RESULT " + json.dumps(run(json.loads(sys.argv[1]))), flush=True)
        return
    for line in sys.stdin:
        if line.strip():
            print("RESULT " + json.dumps(run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
