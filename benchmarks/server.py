"""ccrotate's reference server as the benchmark runs it: a ``Rotator`` with three API-key
accounts in front of the bench upstream, client auth on, served like ``ccrotate serve``.

One addition for the harness, outside the proxy: ``POST /bench/reset`` swaps in a fresh
pool, so every failover sample starts from three available accounts (a 429 cools an
account for at least a second, which would otherwise serialise the samples).
The access log writes its JSON lines to the log (stderr, a file the harness keeps), as
``ccrotate serve``'s default log level has it do. ``CCROTATE_BENCH_OFF`` (a comma list of
``access_log``, ``access_logger``: only its log lines, ``metrics``, ``auth``) turns those
defaults off, to price each (``run.py --off``).
Run: ``python benchmarks/server.py --upstream URL``.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from typing import Any

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    AiohttpUpstream,
    Rotator,
    Secret,
    Settings,
    Timeouts,
)

KEYS = ("sk-ant-api03-bench-key-aaaa", "sk-ant-api03-bench-key-bbbb",
        "sk-ant-api03-bench-key-cccc")
CLIENT_KEY = "bench-client-key"


def accounts() -> list[Account]:
    """The three accounts, in rotation order."""
    return [Account(name=f"acct{i}", kind=AccountKind.API_KEY, api_key=Secret(key))
            for i, key in enumerate(KEYS)]


def configure(upstream: str) -> object:
    off = set(filter(None, os.environ.get("CCROTATE_BENCH_OFF", "").split(",")))
    unknown = off - {"access_log", "access_logger", "metrics", "auth"}
    if unknown:
        raise SystemExit(f"CCROTATE_BENCH_OFF: unknown {sorted(unknown)}")
    # CCROTATE_BENCH_STATE_URL: the same server on a shared Redis state backend.
    # state_url only when set: a tree from before shared state (--ccrotate-path) has none.
    shared = os.environ.get("CCROTATE_BENCH_STATE_URL")
    settings = Settings(upstream_url=upstream, hot_reload=False,
                        auth_tokens=() if "auth" in off else (CLIENT_KEY,),
                        log_level="warning" if "access_logger" in off else "info",
                        **({"state_url": shared} if shared else {}))
    # As `ccrotate serve` configures logging (its default level, info): access-log lines
    # are written, to the harness's stderr file. A tree from before serve_logging
    # (--ccrotate-path) logged them through the logging module.
    try:
        from ccrotate._server.app import serve_logging
    except ImportError:
        logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(message)s")
        sinks = {}
    else:
        sinks = {"access_sinks": serve_logging(settings)}
    # The default upstream pool holds 512 connections; the memory figure opens 1,000
    # streams at once, so give it room (what a deployment expecting that would do too).
    timeouts = Timeouts(connect=settings.connect_timeout, read=settings.read_timeout,
                        pool_size=4096)
    # The default transport; CCROTATE_BENCH_UPSTREAM=aiohttp measures the earlier one
    # (which a tree from before HttptoolsUpstream, --ccrotate-path, always uses).
    try:
        from ccrotate import HttptoolsUpstream
    except ImportError:
        HttptoolsUpstream = None  # type: ignore[assignment,misc]
    upstream: Any
    if HttptoolsUpstream is None or os.environ.get("CCROTATE_BENCH_UPSTREAM") == "aiohttp":
        upstream = AiohttpUpstream(timeouts=timeouts)
    else:
        upstream = HttptoolsUpstream(timeouts=timeouts)
    rotator = Rotator(settings, pool=AccountPool(accounts()), upstream=upstream, **sinks)
    observers = rotator.proxy.observers  # the list the pipeline reads, shared
    if "access_log" in off:
        observers.remove(rotator.access_log)
    if "metrics" in off and rotator.metrics is not None:
        observers.remove(rotator.metrics)
    app = rotator.app
    # As `ccrotate serve` does once everything is built (see _cli/serve.py).
    gc.collect()
    gc.freeze()

    async def bench(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/bench/reset":
            rotator.proxy.pool = AccountPool(accounts())
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await app(scope, receive, send)

    return bench


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from _serve import main

    main(configure)
