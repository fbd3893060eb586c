"""ccrotate's own work per request, in instructions: deterministic, unlike any timing.

Drives a :class:`~ccrotate.Rotator`'s app in process with a stub upstream that answers at
once (one suspension per request, as a real one has), so nothing but ccrotate's request
path, its observers and the access log's flush runs. ``valgrind --tool=cachegrind`` counts
the instructions of two runs, of 300 and 1,300 requests; the difference over 1,000 is the
cost of one request, start-up and imports cancelling out. A neighbour on the machine
cannot change the count, so it prices changes too small for a timed run to see
(docs/benchmarks.md, "Issue 18").

``--transport httptools`` (or ``aiohttp``) replaces the stub by that transport talking
to the bench's fake upstream (``upstream.py``, started outside valgrind, so only the
proxy's process is counted): the client's cost, socket calls and event-loop work
included, which the stub leaves out. Timing then enters a little (the deadline sweeper
may tick during a request under valgrind), so counts vary by a few thousand.

Usage: ``python benchmarks/instructions.py [--stream] [--lines stream|logging|none]
[--off access_log,metrics,auth] [--transport stub|httptools|aiohttp] [--ccrotate-path DIR]``.
Needs valgrind on the PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

MODEL = "claude-sonnet-4-6"
EVENT = "event: {0}\ndata: {1}\n\n"


def _answer_events() -> list[bytes]:
    def event(kind: str, data: dict[str, Any]) -> bytes:
        return EVENT.format(kind, json.dumps({"type": kind, **data})).encode()

    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
               "content": [], "usage": {"input_tokens": 12, "output_tokens": 1}}
    return [event("message_start", {"message": message}),
            event("content_block_start", {"index": 0,
                                          "content_block": {"type": "text", "text": ""}}),
            *[event("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                                  "text": "hi"}})] * 20,
            event("content_block_stop", {"index": 0}),
            event("message_delta", {"delta": {"stop_reason": "end_turn"},
                                    "usage": {"output_tokens": 20}}),
            event("message_stop", {})]


class _Response:
    # What AiohttpUpstream's response gives the proxy, from constants.
    def __init__(self, stream: bool) -> None:
        from multidict import CIMultiDict, CIMultiDictProxy

        self.status = 200
        self.stream = stream
        kind = b"text/event-stream" if stream else b"application/json"
        self.raw_headers = [(b"content-type", kind), (b"request-id", b"req_1"),
                            (b"anthropic-ratelimit-requests-limit", b"4000"),
                            (b"anthropic-ratelimit-requests-remaining", b"3999")]
        self.headers = CIMultiDictProxy(CIMultiDict(
            (k.decode(), v.decode()) for k, v in self.raw_headers))
        self.content_type = kind.decode()
        self.content_encoding = None

    async def read(self, limit: int = 0) -> bytes:
        return ANSWER

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in EVENTS:
            yield chunk

    async def aclose(self) -> None:
        return None


class _Upstream:
    def __init__(self, stream: bool) -> None:
        self.stream_ = stream

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def send(self, method: str, url: str, headers: Any, body: Any) -> _Response:
        await asyncio.sleep(0)
        return _Response(self.stream_)


ANSWER = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
                     "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn",
                     "usage": {"input_tokens": 12, "output_tokens": 6}}).encode()
EVENTS = _answer_events()


class _Request:
    # One request's receive and send: the body, then a client that stays connected.
    def __init__(self, body: bytes, never: asyncio.Future[None]) -> None:
        self.body: bytes | None = body
        self.never = never
        self.sent: list[Any] = []

    async def receive(self) -> dict[str, Any]:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.never  # a watcher waits here, as it would under uvicorn
        return {"type": "http.disconnect"}

    async def send(self, message: Any) -> None:
        self.sent.append(message)


def _upstream(stream: bool, transport: str) -> Any:
    if transport == "stub":
        return _Upstream(stream)
    import ccrotate

    # A tree from before HttptoolsUpstream (--ccrotate-path) has only aiohttp's.
    kind = getattr(ccrotate, "HttptoolsUpstream", None) if transport == "httptools" else None
    return (kind or ccrotate.AiohttpUpstream)()


async def _drive(count: int, stream: bool, lines: str, off: set[str], sink: Any,
                 transport: str = "stub", upstream_url: str = "http://127.0.0.1:9") -> None:
    import logging

    from ccrotate import Account, AccountKind, AccountPool, Rotator, Secret, Settings

    client_key = "bench-client-key-0123456789"
    settings = Settings(upstream_url=upstream_url, hot_reload=False,
                        auth_tokens=() if "auth" in off else (client_key,))
    options: dict[str, Any] = {}
    if lines == "stream":
        from ccrotate import StreamSink
        options["access_sinks"] = [StreamSink(sink, prefix="INFO ")]
    elif lines == "logging":
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s",
                            stream=sink)
    accounts = [Account(name=f"acct{i}", kind=AccountKind.API_KEY,
                        api_key=Secret(f"sk-ant-api03-key{i}")) for i in range(3)]
    rotator = Rotator(settings, pool=AccountPool(accounts),
                      upstream=_upstream(stream, transport), **options)
    if "access_log" in off:
        rotator.proxy.observers.remove(rotator.access_log)
    if "metrics" in off and rotator.metrics is not None:
        rotator.proxy.observers.remove(rotator.metrics)
    body = json.dumps({"model": MODEL, "max_tokens": 1024, "stream": stream,
                       "messages": [{"role": "user", "content": "Hello"}]}).encode()
    headers = [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
               (b"anthropic-version", b"2023-06-01"), (b"x-api-key", client_key.encode()),
               (b"user-agent", b"ccrotate-bench/1"), (b"accept", b"*/*"),
               (b"content-length", str(len(body)).encode())]
    app = rotator.app
    async with rotator:
        gc.collect()
        gc.freeze()  # as ccrotate serve does
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for _ in range(count):
            scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
                     "http_version": "1.1", "server": ("127.0.0.1", 8080),
                     "client": ("127.0.0.1", 5555), "scheme": "http", "method": "POST",
                     "root_path": "", "path": "/api/v1/messages",
                     "raw_path": b"/api/v1/messages", "query_string": b"", "headers": headers}
            request = _Request(body, never)
            await app(scope, request.receive, request.send)
            if request.sent[0]["status"] != 200:
                raise SystemExit(f"request failed: {request.sent}")
        await rotator.access_log.flush()


def _count(args: argparse.Namespace, requests: int, upstream_url: str | None) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if args.ccrotate_path:
        env["PYTHONPATH"] = args.ccrotate_path
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
           "--cachegrind-out-file=/dev/null", sys.executable, __file__, "--child",
           str(requests), "--lines", args.lines, "--off", args.off]
    if args.stream:
        cmd.append("--stream")
    if upstream_url is not None:
        cmd += ["--transport", args.transport, "--upstream-url", upstream_url]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stderr
    found = re.search(r"I\s+refs:\s+([\d,]+)", out)
    if found is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{out}")
    return int(found[1].replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", action="store_true", help="streamed answers (26 events)")
    parser.add_argument("--lines", choices=("stream", "logging", "none"), default="stream",
                        help="access-log lines as ccrotate serve writes them (stream), "
                             "through logging, or none")
    parser.add_argument("--off", default="", help="comma list of: access_log, metrics, auth")
    parser.add_argument("--transport", choices=("stub", "httptools", "aiohttp"),
                        default="stub", help="the in-process stub (ccrotate's work only), "
                        "or a real transport to the bench's fake upstream")
    parser.add_argument("--ccrotate-path", help="import ccrotate from this directory")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    off = set(filter(None, args.off.split(",")))
    if args.child is not None:
        import uvloop

        with open(os.devnull, "w") as sink:
            uvloop.run(_drive(args.child, args.stream, args.lines, off, sink, args.transport,
                              args.upstream_url or "http://127.0.0.1:9"))
        return 0
    if shutil.which("valgrind") is None:
        print("instructions.py needs valgrind (apt install valgrind)", file=sys.stderr)
        return 2
    with _fake_upstream(args.transport) as upstream_url:
        per_request = (_count(args, 1300, upstream_url) - _count(args, 300, upstream_url)) / 1000
    shape = "streamed" if args.stream else "plain"
    print(f"{per_request / 1000:.0f}k instructions per request ({shape}, lines: {args.lines}, "
          f"off: {args.off or 'none'}, transport: {args.transport})")
    return 0


@contextlib.contextmanager
def _fake_upstream(transport: str) -> Iterator[str | None]:
    # The bench's upstream in a process of its own, outside valgrind.
    if transport == "stub":
        yield None
        return
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen([sys.executable, os.path.join(here, "upstream.py")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise SystemExit(f"the fake upstream did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    sys.exit(main())
