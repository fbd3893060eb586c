"""Mount ccrotate into an existing FastAPI app with RotationMiddleware.

Your app keeps its own routes; everything under /api is proxied over the pool.
Run:  uvicorn examples.middleware_fastapi:app
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from ccrotate import AccountPool, AccountsFile, ProxyConfig, RotationMiddleware

pool = AccountPool(AccountsFile(os.environ.get("CCROTATE_ACCOUNTS_PATH",
                                               "~/.claude/accounts.json")).load())
app = FastAPI()
app.add_middleware(RotationMiddleware, pool=pool, prefix="/api",
                   config=ProxyConfig(upstream_url=os.environ.get(
                       "CCROTATE_UPSTREAM_URL", "https://api.anthropic.com")))


@app.get("/hello")
async def hello() -> dict[str, str]:
    """One of your own routes, untouched by the proxy."""
    return {"hello": "world"}
