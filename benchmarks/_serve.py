"""Serve an ASGI app on loopback, printing ``PORT <n>`` when ready.

``--server``: ``uvicorn`` (httptools, uvloop, no access log) on a socket bound before it
starts; ``guarded``, the same with ``ccrotate serve``'s protocol guard (request-head
deadline and connection cap, at their defaults); ``granian``, granian's embedded server
on the same uvloop event loop (one process, so the harness's CPU and RSS figures cover
its Rust threads too)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

SERVERS = ("uvicorn", "guarded", "granian")


def main(configure: Callable[[str], Any], argv: list[str] | None = None) -> None:
    """Parse ``--upstream URL [--port N] [--server S]``, build the app with ``configure(url)``,
    serve it."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--server", choices=SERVERS, default="uvicorn")
    args = parser.parse_args(argv)
    app = configure(args.upstream)
    if args.server == "granian":
        _granian(app, args.host, args.port)
    else:
        _uvicorn(app, args.host, args.port, guarded=args.server == "guarded")
    # Skip interpreter teardown: the harness only needs the process gone.
    os._exit(0)


def _uvicorn(app: Any, host: str, port: int, *, guarded: bool) -> None:
    import uvicorn

    http: Any = "httptools"
    if guarded:
        from ccrotate._server.config import Settings
        from ccrotate._server.uvicorn_guard import guarded_protocol

        # The defaults, as `ccrotate serve` applies them; 4,096 connections, not 1,000,
        # so that the memory figure's 1,000 streams fit.
        defaults = Settings()
        http = guarded_protocol(header_timeout=defaults.header_timeout, max_connections=4096)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    config = uvicorn.Config(app, http=http, loop="uvloop", lifespan="on",
                            access_log=False, log_level="warning", backlog=4096,
                            timeout_keep_alive=60, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    original_startup = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original_startup(sockets=sockets)
        print(f"PORT {sock.getsockname()[1]}", flush=True)

    server.startup = startup  # type: ignore[method-assign]
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])


def _granian(app: Any, host: str, port: int) -> None:
    import signal

    import uvloop
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server.embed import Server

    if port == 0:  # granian binds its own socket: pick a free port first
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    server = Server(app, address=host, port=port, interface=Interfaces.ASGI, backlog=4096,
                    log_level=LogLevels.warning, log_access=False,
                    http1_settings=HTTP1Settings(header_read_timeout=10_000))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, server.stop)
        task = asyncio.create_task(server.serve())
        while not task.done():  # ready once it accepts (lifespan startup runs first)
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            print(f"PORT {port}", flush=True)
            break
        await task

    uvloop.run(run())
