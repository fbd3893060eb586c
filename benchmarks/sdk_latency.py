"""What SDK mode costs per call: a Claude Code process against a direct API-mode call.

Serves the fake upstream, API mode (``RotatingProxy``) and SDK mode (``SDKApp``) on
loopback in this process, then times sequential non-streamed calls with the
``anthropic`` client: API mode, SDK mode (a fresh agent per call), SDK mode on a warm
session (``/sdk/{session}/v1/messages``), and the time to the first streamed byte in
SDK mode. The upstream answers at once, so every figure is overhead.

Usage: ``python benchmarks/sdk_latency.py [--calls N] [--out FILE]`` (needs the
``ccrotate[sdk]`` extra; nothing leaves the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anthropic
import httpx

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    ProxyConfig,
    RotatingProxy,
    SDKApp,
    SDKConfig,
    Secret,
)
from ccrotate.testing import FakeUpstream, serve_app

MODEL = "claude-sonnet-4-6"
HELLO: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hello"}]


def _timed(call: Callable[[], object], n: int) -> list[float]:
    call()  # warm-up: imports, connections, the OS page cache for the CLI binary
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {"p50_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 1),
            "mean_ms": round(statistics.fmean(ordered), 1)}


def _first_byte(url: str) -> None:
    body = {"model": MODEL, "max_tokens": 64, "stream": True, "messages": HELLO}
    with httpx.stream("POST", url + "/v1/messages", json=body, timeout=60) as response:
        next(response.iter_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    key = "sk-ant-api03-bench-0001"
    with serve_app(FakeUpstream()) as upstream:
        pool = AccountPool([Account(name="a", kind=AccountKind.API_KEY, api_key=Secret(key))])
        config = SDKConfig(upstream_url=upstream.url, max_concurrent=2)
        proxy = RotatingProxy(pool, config=ProxyConfig(upstream_url=upstream.url))
        with serve_app(proxy) as api, serve_app(SDKApp(pool, config=config)) as sdk:
            direct = anthropic.Anthropic(base_url=api.url, api_key="x", max_retries=0)
            agent = anthropic.Anthropic(base_url=sdk.url, api_key="x", max_retries=0)
            warm = anthropic.Anthropic(base_url=sdk.url + "/bench-session", api_key="x",
                                       max_retries=0)

            def create(client: anthropic.Anthropic) -> Callable[[], object]:
                return lambda: client.messages.create(model=MODEL, max_tokens=64,
                                                      messages=HELLO)

            figures = {"api_mode": _summary(_timed(create(direct), args.calls)),
                       "sdk_mode": _summary(_timed(create(agent), args.calls)),
                       "sdk_warm_session": _summary(_timed(create(warm), args.calls)),
                       "sdk_stream_ttfb": _summary(_timed(lambda: _first_byte(sdk.url),
                                                          args.calls))}
    added = figures["sdk_mode"]["p50_ms"] - figures["api_mode"]["p50_ms"]
    result = {"figures": figures, "added_p50_ms": round(added, 1),
              "meta": {"calls": args.calls, "python": platform.python_version(),
                       "cpus": os.cpu_count(), "platform": platform.platform()}}
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
