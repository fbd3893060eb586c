"""ccrotate mounted inside a FastAPI app at /claude, everything running.

Run (from the repository root):

    CCROTATE_ACCOUNTS_PATH=./accounts.json uvicorn examples.fastapi_app:app --port 8000

Settings come from the usual ``CCROTATE_*`` environment (and the config file).
Anthropic clients then use ``base_url="http://127.0.0.1:8000/claude/api"``; the
OpenAI SDK ``http://127.0.0.1:8000/claude/api/v1``; the pool's status is at
``/claude/status`` and the dashboard at ``/claude/dashboard``. FastAPI does not
run a mounted app's lifespan, so the host passes ``lifespan=rotator.lifespan``:
the upstream pool, token refresher, accounts watcher and access log start
and stop with the host app.
"""

from __future__ import annotations

from fastapi import FastAPI

from ccrotate import Rotator, load_settings

rotator = Rotator(load_settings())
app = FastAPI(title="my app with ccrotate", lifespan=rotator.lifespan)
app.mount("/claude", rotator.app)


@app.get("/hello")
async def hello() -> dict[str, str]:
    """The host app's own routes keep working beside the proxy."""
    return {"hello": "world"}
