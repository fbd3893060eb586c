"""RotationMiddleware inside real apps: plain Starlette, FastAPI and Litestar, served by uvicorn.

In each app the proxied prefix (``/api``) reaches the fake upstream through the
rotation, while the app's own routes, websockets and lifespan work as if the
middleware were not there, and the proxy's connection pool lives exactly as
long as the app.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import anthropic
import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.sync.client import connect

from ccrotate import HttptoolsUpstream, RotatingProxy, RotationMiddleware
from conftest import HELLO, MODEL, Stack

pytest.importorskip("fastapi")
pytest.importorskip("litestar")

import fastapi
import litestar
from fastapi.responses import PlainTextResponse as FastAPIText

AppFactory = Callable[[RotatingProxy, dict[str, bool]], Any]


def starlette_app(proxy: RotatingProxy, life: dict[str, bool]) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        life["started"] = True
        yield
        life["stopped"] = True

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("home")

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("echo:" + await websocket.receive_text())
        await websocket.close()

    return Starlette(routes=[Route("/", home), Route("/apiary", home),
                             WebSocketRoute("/ws", echo)],
                     middleware=[Middleware(RotationMiddleware, proxy=proxy, prefix="/api")],
                     lifespan=lifespan)


def fastapi_app(proxy: RotatingProxy, life: dict[str, bool]) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        life["started"] = True
        yield
        life["stopped"] = True

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.get("/", response_class=FastAPIText)
    async def home() -> str:
        return "home"

    @app.get("/apiary", response_class=FastAPIText)
    async def apiary() -> str:
        return "home"

    @app.websocket("/ws")
    async def echo(websocket: fastapi.WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("echo:" + await websocket.receive_text())
        await websocket.close()

    app.add_middleware(RotationMiddleware, proxy=proxy, prefix="/api")
    return app


def litestar_app(proxy: RotatingProxy, life: dict[str, bool]) -> Any:
    # Litestar runs its middleware only after routing, so the proxy wraps the app itself.
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        life["started"] = True
        yield
        life["stopped"] = True

    @litestar.get(["/", "/apiary"], media_type="text/plain")
    async def home() -> str:
        return "home"

    @litestar.websocket("/ws")
    async def echo(socket: litestar.WebSocket[Any, Any, Any]) -> None:
        await socket.accept()
        await socket.send_text("echo:" + await socket.receive_text())
        await socket.close()

    app = litestar.Litestar(route_handlers=[home, echo], lifespan=[lifespan])
    # Litestar types its ASGI callables with TypedDict events, not Starlette's mappings.
    return RotationMiddleware(cast(Any, app), proxy=proxy, prefix="/api")


FRAMEWORKS = [pytest.param(starlette_app, id="starlette"), pytest.param(fastapi_app, id="fastapi"),
              pytest.param(litestar_app, id="litestar")]


@pytest.mark.parametrize("factory", FRAMEWORKS)
def test_prefix_is_proxied_and_everything_else_is_the_apps(serve_proxy: Any,
                                                          factory: AppFactory) -> None:
    """``/api`` goes through the rotation; the app keeps its routes, websockets and lifespan."""
    life: dict[str, bool] = {}
    stack: Stack = serve_proxy(app=lambda proxy: factory(proxy, life))
    assert life == {"started": True}

    client = anthropic.Anthropic(base_url=stack.url + "/api", api_key="k", max_retries=0)
    seen = []
    for _ in range(3):
        raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=64,
                                                       messages=HELLO)
        seen.append(raw.headers["x-ccrotate-account"])
    with client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as s:
        assert s.get_final_text() == "Hello from the fake Anthropic upstream."
    assert seen == ["a", "b", "c"]
    assert [r.path for r in stack.fake.requests] == ["/v1/messages"] * 4
    assert isinstance(stack.proxy.upstream, HttptoolsUpstream)  # the default transport
    assert stack.proxy.upstream.idle_connections == 1  # four requests in turn, one connection

    assert httpx.get(stack.url + "/").text == "home"
    assert httpx.get(stack.url + "/apiary").text == "home"  # a prefix of the name is not /api
    missing = httpx.get(stack.url + "/api/v1/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    with connect(stack.url.replace("http", "ws") + "/ws") as ws:
        ws.send("ping")
        assert ws.recv(timeout=5) == "echo:ping"
    assert len(stack.fake.requests) == 4


@pytest.mark.parametrize("factory", FRAMEWORKS)
def test_lifespan_closes_the_proxy_pool_with_the_app(
        upstream_server: Any, pool: Any, factory: AppFactory) -> None:
    """Shutting the app down runs its own shutdown and closes the upstream connection pool."""
    from ccrotate.testing import serve_app
    from conftest import fast_config

    life: dict[str, bool] = {}
    proxy = RotatingProxy(pool, config=fast_config(upstream_server.url))
    with serve_app(factory(proxy, life)) as server:
        assert httpx.post(server.url + "/api/v1/messages/count_tokens",
                          json={"model": MODEL, "messages": HELLO}).status_code == 200
        assert isinstance(proxy.upstream, HttptoolsUpstream)
        assert proxy.upstream.open_connections == 1  # kept alive for the next request
    assert life == {"started": True, "stopped": True}
    assert proxy.upstream.open_connections == 0


def test_a_starlette_mount_serves_the_proxy_too(upstream_server: Any, pool: Any) -> None:
    """``Mount("/api", app=proxy)`` works, with the proxy as the app's lifespan context."""
    from ccrotate.testing import serve_app
    from conftest import fast_config

    proxy = RotatingProxy(pool, config=fast_config(upstream_server.url))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with proxy:  # Starlette does not pass lifespan events to mounts
            yield

    app = Starlette(routes=[Mount("/api", app=proxy)], lifespan=lifespan)
    with serve_app(app) as server:
        client = anthropic.Anthropic(base_url=server.url + "/api", api_key="k", max_retries=0)
        assert client.models.list().data[0].id == upstream_server.app.models[0]
        assert upstream_server.app.last_request.path == "/v1/models"
        assert isinstance(proxy.upstream, HttptoolsUpstream)
        assert proxy.upstream.open_connections == 1
    assert proxy.upstream.open_connections == 0


def test_the_middleware_needs_a_pool_or_a_proxy() -> None:
    """Building it without ``pool=`` or ``proxy=`` is a clear TypeError."""
    with pytest.raises(TypeError, match="pool= or proxy="):
        RotationMiddleware(Starlette())
