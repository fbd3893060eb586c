"""Serve an ASGI app the way ``ccrotate serve`` does (uvicorn, httptools, uvloop, no access
log) on a loopback socket bound before uvicorn starts, printing ``PORT <n>`` when ready."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any


def main(configure: Callable[[str], Any], argv: list[str] | None = None) -> None:
    """Parse ``--upstream URL [--port N]``, build the app with ``configure(url)``, serve it."""
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    app = configure(args.upstream)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(4096)
    config = uvicorn.Config(app, http="httptools", loop="uvloop", lifespan="on",
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
    # Skip interpreter teardown: the harness only needs the process gone.
    os._exit(0)
