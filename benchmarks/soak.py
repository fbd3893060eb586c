"""Soak: steady mixed load through the reference server for minutes; fail on resource growth.

The fake upstream (``ccrotate.testing.FakeUpstream``) runs in this process on a loopback
port; ccrotate's reference server (``soak_server.py``: a ``Rotator``'s app under uvicorn with
httptools and uvloop, like ``ccrotate serve``) runs in a child process in front of it.
``--workers`` client loops (aiohttp) then send, until the time is up:

- streamed and non-streamed ``/api/v1/messages`` requests,
- streamed and non-streamed ``/api/v1/chat/completions`` requests (the OpenAI route),
- streams the client abandons after their first event (the connection is closed),

while a scripter queues one-shot upstream failures on a random account every half
second (a 429 with ``retry-after: 1``, an error event opening the stream, a 529), so
the proxy fails over to another account all along.

The server's RSS, open file descriptors and asyncio task count (from its
``/soak/debug`` route) are read after a warm-up of 12,000 requests (the server keeps the
last 10,000 in an in-memory log: its filling is growth by design) and at the end, each
time with no load running and after ``--settle`` seconds (longer than the upstream
pool's 30 s keep-alive, so idle pooled connections have closed). The exit status is 1
when any of the three grew by more than ``--max-growth`` percent (10), or when the server
answered 500 (an unhandled error) at any time.

Usage: ``python benchmarks/soak.py [--minutes 10] [--workers 8]``; ``nox -s soak -- --minutes 2``.
Everything listens on 127.0.0.1; every loop stops by itself when the time is up.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _procs import Proc  # noqa: E402
from soak_server import CLIENT_KEY, KEYS  # noqa: E402

from ccrotate.testing import (  # noqa: E402
    FakeUpstream,
    Overloaded,
    RateLimited,
    Reply,
    StreamError,
    serve_app,
)

MODEL = "claude-sonnet-4-6"
PROMPT = [{"role": "user", "content": "Tell me something about rotating accounts."}]
# Streams of ~20 deltas, 2 ms apart: long enough for a client to leave in the middle.
REPLY = Reply(text="The quick brown fox jumps over the lazy dog. " * 8, text_deltas=20,
              event_gap=0.002)
MIX = (("stream", 35), ("json", 25), ("openai_stream", 15), ("openai_json", 10),
       ("cancel", 15))


class Counts:
    """Outcomes per request kind, e.g. ``stream 200``, ``cancel cancelled``."""

    def __init__(self) -> None:
        self.by = collections.Counter[str]()

    def add(self, kind: str, outcome: str | int) -> None:
        self.by[f"{kind} {outcome}"] += 1

    def total(self) -> int:
        return sum(self.by.values())


async def one_request(session: aiohttp.ClientSession, base: str, kind: str,
                      counts: Counts) -> None:
    openai = kind.startswith("openai")
    stream = kind in ("stream", "openai_stream", "cancel")
    body: dict[str, Any] = {"model": MODEL, "messages": PROMPT, "max_tokens": 256}
    if stream:
        body["stream"] = True
    if openai:
        url, headers = base + "/api/v1/chat/completions", {
            "authorization": f"Bearer {CLIENT_KEY}"}
    else:
        url, headers = base + "/api/v1/messages", {
            "x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            if kind == "cancel" and resp.status == 200:
                await resp.content.readuntil(b"\n\n")  # the first event, then leave
                resp.close()  # drops the connection mid-stream
                counts.add(kind, "cancelled")
                return
            data = await resp.read()
            if resp.status == 200 and stream:
                end = b"data: [DONE]" if openai else b"event: message_stop"
                counts.add(kind, 200 if end in data else "200-truncated")
            else:
                counts.add(kind, resp.status)
    except (TimeoutError, aiohttp.ClientError) as exc:
        counts.add(kind, type(exc).__name__)


async def load(base: str, seconds: float, workers: int, counts: Counts, seed: int,
               requests: int | None = None) -> None:
    """``workers`` closed loops of mixed requests, stopping once ``seconds`` are up (or
    ``requests`` have been answered, when given)."""
    deadline = time.monotonic() + seconds
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    timeout = aiohttp.ClientTimeout(total=30)

    async def worker(rng: random.Random) -> None:
        while time.monotonic() < deadline and (requests is None
                                                or counts.total() < requests):
            await one_request(session, base, rng.choices(kinds, weights)[0], counts)

    connector = aiohttp.TCPConnector(limit=workers)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(random.Random(seed + i)) for i in range(workers)))


class Scripter(threading.Thread):
    """Queues a one-shot upstream failure on a random account every ``period`` seconds."""

    def __init__(self, fake: FakeUpstream, period: float, seed: int) -> None:
        super().__init__(name="soak-scripter", daemon=True)
        self.fake = fake
        self.period = period
        self.rng = random.Random(seed)
        self.active = threading.Event()
        self.stopped = threading.Event()
        self.statuses = collections.Counter[int]()

    def run(self) -> None:
        failures = (RateLimited(retry_after=1), StreamError(after=0), Overloaded())
        while not self.stopped.wait(self.period):
            if self.active.is_set():
                self.fake.script(self.rng.choice(KEYS), self.rng.choice(failures))
            self.drain()

    def drain(self) -> None:
        """Count the upstream's answers and forget its records (they would pile up)."""
        records = self.fake.requests
        self.fake.clear_requests()
        self.statuses.update(r.status or 0 for r in records if r.path == "/v1/messages")


def snapshot(proc: Proc, base: str) -> dict[str, int]:
    import urllib.request

    with urllib.request.urlopen(base + "/soak/debug", timeout=10) as answer:  # loopback
        tasks = json.loads(answer.read())["tasks"]
    return {"rss_kb": proc.rss_kb(), "fds": len(os.listdir(f"/proc/{proc.pid}/fd")),
            "tasks": tasks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="load time in all, warm-up included (default 10)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--settle", type=float, default=65.0,
                        help="idle seconds before each measurement (default 65)")
    parser.add_argument("--max-growth", type=float, default=10.0,
                        help="allowed growth of RSS, fds and tasks in percent (default 10)")
    parser.add_argument("--warmup-requests", type=int, default=12_000,
                        help="requests before the first measurement (default 12,000: more "
                        "than the 10,000 entries the server's in-memory request log keeps)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    total = args.minutes * 60
    # The warm-up ends after --warmup-requests, or a third of the time, whichever is first.
    warmup = total / 3

    fake = FakeUpstream(default=REPLY)
    with serve_app(fake) as upstream:
        server = Proc("ccrotate", [sys.executable, str(HERE / "soak_server.py"),
                                   "--upstream", upstream.url], cpu=None)
        scripter = Scripter(fake, period=0.5, seed=args.seed)
        try:
            base = f"http://127.0.0.1:{server.wait_port()}"
            scripter.start()
            scripter.active.set()
            log(f"server pid {server.pid} on {base}; warm-up: {args.warmup_requests} "
                f"requests or {warmup:.0f} s")
            warm, main_counts = Counts(), Counts()
            t0 = time.monotonic()
            asyncio.run(load(base, warmup, args.workers, warm, args.seed,
                             requests=args.warmup_requests))
            warmup = time.monotonic() - t0
            if warm.total() < args.warmup_requests:
                log(f"warm-up cut short at {warm.total()} requests: RSS may still grow "
                    "while the server's request log fills")
            scripter.active.clear()
            time.sleep(args.settle)
            start = snapshot(server, base)
            log(f"start: {fmt(start)}; soak {total - warmup:.0f} s")
            scripter.active.set()
            t0 = time.monotonic()
            asyncio.run(load(base, total - warmup, args.workers, main_counts,
                             args.seed + 1000))
            elapsed = time.monotonic() - t0
            scripter.active.clear()
            time.sleep(args.settle)
            end = snapshot(server, base)
            scripter.drain()
        finally:
            scripter.stopped.set()
            server.stop()

    log(f"end:   {fmt(end)}")
    failed = False
    print(f"\n{'':8}{'start':>12}{'end':>12}{'growth':>10}")
    for key in ("rss_kb", "fds", "tasks"):
        growth = (end[key] - start[key]) / start[key] * 100 if start[key] else 0.0
        bad = growth > args.max_growth
        failed |= bad
        print(f"{key:8}{start[key]:>12}{end[key]:>12}{growth:>9.1f}%" + ("  FAIL" if bad else ""))
    n = main_counts.total()
    print(f"\nrequests: {warm.total()} in warm-up, {n} in {elapsed:.0f} s of soak "
          f"({n / elapsed:.0f}/s)")
    for outcome, count in sorted(main_counts.by.items()):
        print(f"  {outcome:28}{count:>8}")
    upstream_counts = ", ".join(f"{s}: {c}" for s, c in sorted(scripter.statuses.items()))
    print(f"upstream /v1/messages answers (warm-up and soak): {upstream_counts}; "
          f"streams cancelled upstream: {fake.cancelled}")
    errors = sum(c for o, c in (warm.by + main_counts.by).items() if o.endswith(" 500"))
    if errors:
        print(f"FAIL: {errors} answers with status 500")
        failed = True
    print("FAIL" if failed else "OK")
    return 1 if failed else 0


def fmt(snap: dict[str, int]) -> str:
    return f"RSS {snap['rss_kb'] / 1024:.1f} MB, {snap['fds']} fds, {snap['tasks']} tasks"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
