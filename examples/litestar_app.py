"""ccrotate mounted inside a Litestar app at /claude, everything running.

Run (from the repository root):

    CCROTATE_ACCOUNTS_PATH=./accounts.json uvicorn examples.litestar_app:app --port 8000

Settings come from the usual ``CCROTATE_*`` environment (and the config file).
Anthropic clients then use ``base_url="http://127.0.0.1:8000/claude/api"``.
Litestar runs each context manager in ``lifespan=[...]`` around the app's life,
which starts and stops the rotator (upstream pool, refresher, watcher, access log).
"""

from __future__ import annotations

from urllib.parse import unquote

from litestar import Litestar, asgi, get
from litestar.types import Receive, Scope, Send

from ccrotate import Rotator, load_settings

rotator = Rotator(load_settings())


@asgi("/claude", is_mount=True, copy_scope=True)
async def claude(scope: Scope, receive: Receive, send: Send) -> None:
    """Everything under /claude is ccrotate."""
    # Litestar hands a mounted app the path below the mount with a slash appended and no
    # root_path; ccrotate (like Starlette) wants the full path and the mount as root_path.
    raw = scope.get("raw_path") or scope["path"].encode()
    scope["root_path"] = "/claude"
    scope["path"] = unquote(raw.decode("latin-1"))
    await rotator.app(scope, receive, send)  # type: ignore[arg-type]


@get("/hello")
async def hello() -> dict[str, str]:
    """The host app's own routes keep working beside the proxy."""
    return {"hello": "world"}


app = Litestar(route_handlers=[claude, hello], lifespan=[rotator.lifespan])
