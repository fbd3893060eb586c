"""Run any ASGI app under uvicorn on a loopback port, in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

AppT = TypeVar("AppT")


@dataclass(frozen=True)
class ServerHandle(Generic[AppT]):
    """A running server: ``app`` is what it serves, ``url`` where (``http://127.0.0.1:PORT``).

    ``loop`` is the server thread's event loop, for the rare test that must run a
    coroutine beside the app (``asyncio.run_coroutine_threadsafe(coro, handle.loop)``).
    """

    app: AppT
    host: str
    port: int
    loop: asyncio.AbstractEventLoop

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@contextlib.contextmanager
def serve_app(app: AppT, *, host: str = "127.0.0.1",
              lifespan: Literal["auto", "on", "off"] = "auto",
              startup_timeout: float = 10.0, shutdown_timeout: float = 2.0,
              **config: Any) -> Iterator[ServerHandle[AppT]]:
    """Serve ``app`` with uvicorn on ``host`` and an OS-chosen port until the block exits.

    Returns once the server accepts connections, after the app's lifespan startup when
    ``lifespan`` is ``"on"`` (or ``"auto"`` and the app supports it). On exit it stops
    accepting, gives open responses ``shutdown_timeout`` seconds to finish (then cancels
    them), runs the lifespan shutdown and joins the thread. Extra keyword arguments go
    to ``uvicorn.Config``. Raises ``RuntimeError`` when the server fails to start.
    """
    import uvicorn

    from ccrotate.testing._quick_uvicorn import QuickServer

    # Binding here, not in uvicorn, makes the port known at once and race-free.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(2048)
    port: int = sock.getsockname()[1]
    settings: dict[str, Any] = {"log_config": None, "access_log": False,
                                "timeout_graceful_shutdown": shutdown_timeout, **config}
    asgi_app: Any = app
    server = QuickServer(uvicorn.Config(asgi_app, lifespan=lifespan, **settings))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # handed over to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"ccrotate-serve-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not (server.started and server.loop is not None):
            if not thread.is_alive() or time.monotonic() > deadline:
                cause = failure[0] if failure else None
                raise RuntimeError(f"the server for {type(app).__name__} failed to start "
                                   f"on {host}:{port}") from cause
            time.sleep(0.001)
        yield ServerHandle(app, host, port, server.loop)
    finally:
        server.stop()
        thread.join(shutdown_timeout + 5.0)
        sock.close()
