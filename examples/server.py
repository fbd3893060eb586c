"""The reference server composed by hand from ccrotate's public parts.

Run:  python examples/server.py            (uses ~/.claude/accounts.json)
      CCROTATE_ACCOUNTS_PATH=./accounts.json python examples/server.py

It is what ``ccrotate serve`` does, minus the settings loading: one pool, one
proxy mounted at /api, a health route, and the proxy's connection pool opened
and closed by the app's lifespan.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from ccrotate import AccountPool, AccountsFile, ProxyConfig, RotatingProxy


def build_app(accounts_path: str, upstream_url: str = "https://api.anthropic.com") -> Starlette:
    """A Starlette app: the rotating proxy at /api and a /health route."""
    pool = AccountPool(AccountsFile(accounts_path).load())
    proxy = RotatingProxy(pool, config=ProxyConfig(upstream_url=upstream_url))

    async def health(request: Request) -> JSONResponse:
        available = [s.name for s in pool.statuses() if s.state.value == "available"]
        return JSONResponse({"available": len(available)}, status_code=200 if available else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with proxy:  # opens and closes the upstream connection pool
            yield

    return Starlette(routes=[Mount("/api", app=proxy), Route("/health", health)],
                     lifespan=lifespan)


if __name__ == "__main__":
    import uvicorn

    app = build_app(os.environ.get("CCROTATE_ACCOUNTS_PATH", "~/.claude/accounts.json"),
                    os.environ.get("CCROTATE_UPSTREAM_URL", "https://api.anthropic.com"))
    uvicorn.run(app, host="127.0.0.1", port=8080)
