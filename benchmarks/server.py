"""ccrotate's reference server as the benchmark runs it: ``create_app`` with three API-key
accounts in front of the bench upstream, client auth on, served like ``ccrotate serve``.

One addition for the harness, outside the proxy: ``POST /bench/reset`` swaps in a fresh
pool, so every failover sample starts from three available accounts (a 429 cools an
account for at least a second, which would otherwise serialise the samples).
Run: ``python benchmarks/server.py --upstream URL``.
"""

from __future__ import annotations

import sys

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ccrotate import Account, AccountKind, AccountPool, AiohttpUpstream, Secret, Timeouts
from ccrotate._server.app import build_components, create_app
from ccrotate._server.config import Settings

KEYS = ("sk-ant-api03-bench-key-aaaa", "sk-ant-api03-bench-key-bbbb",
        "sk-ant-api03-bench-key-cccc")
CLIENT_KEY = "bench-client-key"


def accounts() -> list[Account]:
    """The three accounts, in rotation order."""
    return [Account(name=f"acct{i}", kind=AccountKind.API_KEY, api_key=Secret(key))
            for i, key in enumerate(KEYS)]


def configure(upstream: str) -> object:
    settings = Settings(upstream_url=upstream, auth_tokens=(CLIENT_KEY,), hot_reload=False)
    components = build_components(settings, pool=AccountPool(accounts()))
    # The default upstream pool holds 512 connections; the memory figure opens 1,000
    # streams at once, so give it room (what a deployment expecting that would do too).
    proxy = components.proxy
    proxy.upstream = AiohttpUpstream(timeouts=Timeouts(
        connect=settings.connect_timeout, read=settings.read_timeout, pool_size=4096))

    async def reset(request: Request) -> Response:
        components.proxy.pool = AccountPool(accounts())
        return Response(status_code=204)

    components.routes.append(Route("/bench/reset", reset, methods=["POST"]))
    return create_app(components=components)


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from _serve import main

    main(configure)
