"""uvicorn's server, made quick to stop (imported lazily: uvicorn is an optional extra)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn


class QuickServer(uvicorn.Server):
    """Stock uvicorn polls for exit every 0.1 s and sleeps 0.1 s while shutting down: 0.2 s
    per test that starts a server. Here an event wakes the main loop and shutdown polls
    the open connections briefly instead.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        ticks = 0
        while not await self.on_tick(ticks):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            ticks += 10  # on_tick refreshes the Date header every 10 ticks: once a second

    def stop(self) -> None:
        """Ask the server to exit; callable from any thread."""
        self.should_exit = True
        loop, wake = self.loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                loop.call_soon_threadsafe(wake.set)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                while state.connections or state.tasks:  # noqa: ASYNC110 - uvicorn's sets
                    await asyncio.sleep(0.005)
        except TimeoutError:
            for task in list(state.tasks):
                task.cancel(msg="server stopping: graceful shutdown timed out")
            for connection in list(state.connections):
                connection.transport.close()
        if not self.force_exit:
            await self.lifespan.shutdown()
