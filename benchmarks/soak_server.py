"""ccrotate's reference server as the soak run drives it: a ``Rotator`` with three accounts
(two API keys and one OAuth subscription) in front of the soak's fake upstream, client
auth on, served like ``ccrotate serve`` (uvicorn, httptools, uvloop).

One addition for the harness, outside the proxy and only in this script:
``GET /soak/debug`` answers ``{"tasks": N, "pid": P}``, the number of asyncio tasks alive
in the server's event loop, which the soak compares at the start and at the end.
Run: ``python benchmarks/soak_server.py --upstream URL``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ccrotate import Account, AccountKind, AccountPool, Rotator, Secret, Settings

KEYS = ("sk-ant-api03-soak-key-aaaa", "sk-ant-oat01-soak-token-bbbb",
        "sk-ant-api03-soak-key-cccc")
CLIENT_KEY = "soak-client-key-0001"


def accounts() -> list[Account]:
    """``acct0`` (API key), ``acct1`` (OAuth, valid for a day), ``acct2`` (API key)."""
    return [
        Account(name="acct0", kind=AccountKind.API_KEY, api_key=Secret(KEYS[0])),
        Account(name="acct1", kind=AccountKind.OAUTH, access_token=Secret(KEYS[1]),
                refresh_token=Secret("sk-ant-ort01-soak-refresh-bbbb"),
                expires_at=time.time() + 86400),
        Account(name="acct2", kind=AccountKind.API_KEY, api_key=Secret(KEYS[2])),
    ]


def configure(upstream: str) -> object:
    settings = Settings(upstream_url=upstream, auth_tokens=(CLIENT_KEY,), hot_reload=False)
    app = Rotator(settings, pool=AccountPool(accounts())).app

    async def debug(request: Request) -> Response:
        return JSONResponse({"tasks": len(asyncio.all_tasks()), "pid": os.getpid()})

    debug_route = Route("/soak/debug", debug, methods=["GET"])

    async def soak(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # The debug route sits beside the reference app, outside the product.
        if scope["type"] == "http" and scope["path"] == "/soak/debug":
            await debug_route.handle(scope, receive, send)
            return
        await app(scope, receive, send)

    return soak


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from _serve import main

    main(configure)
