"""Raw ASGI plumbing of the fake: body reading, lifespan, and paced, abortable responses."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from starlette.types import Receive, Send

from ccrotate.testing._sync import Gate


class ConnectionCut(Exception):
    """Raised out of the ASGI app so the server drops the connection mid-response."""


class _QuietCuts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionCut)


_quiet_installed = False


def quiet_uvicorn_cuts() -> None:
    """Keep uvicorn from logging a traceback for every deliberately cut stream."""
    global _quiet_installed
    if not _quiet_installed:
        logging.getLogger("uvicorn.error").addFilter(_QuietCuts())
        _quiet_installed = True


@dataclass
class Plan:
    """How to send one response: status, headers, body chunks and their pacing.

    ``hold_after=None`` holds before the response starts; ``cut_after=N`` drops the
    connection after N chunks.
    """

    status: int
    headers: list[tuple[bytes, bytes]]
    chunks: list[bytes]
    delay: float = 0.0
    gap: float = 0.0
    hold: Gate | None = None
    hold_after: int | None = None
    cut_after: int | None = None
    on_cancel: Callable[[], None] = field(default=lambda: None)
    on_sent: Callable[[int], None] = field(default=lambda size: None)
    """Called with the size of each body piece once the server has taken it."""


async def read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts)
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class _Progress:
    finished = False
    cut = False
    send_failed = False


async def _run(plan: Plan, send: Send, progress: _Progress) -> None:
    if plan.delay > 0:
        await anyio.sleep(plan.delay)
    if plan.hold is not None and plan.hold_after is None:
        await plan.hold.passage()
    headers = plan.headers
    if len(plan.chunks) == 1 and plan.cut_after is None \
            and not any(name == b"content-length" for name, _ in headers):
        headers = [*headers, (b"content-length", str(len(plan.chunks[0])).encode())]
    await send({"type": "http.response.start", "status": plan.status, "headers": headers})
    # With no pacing, consecutive chunks go out in one write: cheap for benchmarks.
    pending: list[bytes] = []

    async def flush() -> None:
        if pending:
            body = b"".join(pending)
            await send({"type": "http.response.body", "body": body, "more_body": True})
            plan.on_sent(len(body))
            pending.clear()

    for i, chunk in enumerate(plan.chunks):
        if i == plan.cut_after:
            break
        holding = plan.hold is not None and plan.hold_after == i
        if holding or (plan.gap > 0 and i > 0):
            await flush()
            if holding and plan.hold is not None:
                await plan.hold.passage()
            if plan.gap > 0 and i > 0:
                await anyio.sleep(plan.gap)
        pending.append(chunk)
    if plan.cut_after is not None and plan.cut_after < len(plan.chunks):
        await flush()
        progress.cut = True
        return
    if plan.hold is not None and plan.hold_after is not None \
            and plan.hold_after >= len(plan.chunks):
        await flush()
        await plan.hold.passage()
    progress.finished = True
    body = b"".join(pending)
    await send({"type": "http.response.body", "body": body, "more_body": False})
    plan.on_sent(len(body))


async def respond(plan: Plan, receive: Receive, send: Send) -> None:
    """Send ``plan``, watching for the client going away meanwhile.

    A disconnect before the response is complete stops the sending and calls
    ``plan.on_cancel``. A planned cut raises :class:`ConnectionCut` so the server
    aborts the connection instead of ending the body cleanly.
    """
    progress = _Progress()
    if plan.delay <= 0 and plan.gap <= 0 and plan.hold is None and plan.cut_after is None:
        # Nothing to wait for: no window for a disconnect to matter, so skip the watcher
        # (a task group per request halves the fake's throughput in benchmarks).
        try:
            await _run(plan, send, progress)
        except OSError:
            plan.on_cancel()
        return

    async def run(scope: anyio.CancelScope) -> None:
        try:
            await _run(plan, send, progress)
        except OSError:  # ASGI 2.4 servers raise here once the client is gone
            progress.send_failed = True
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, tg.cancel_scope)
        while (await receive())["type"] != "http.disconnect":
            pass
        tg.cancel_scope.cancel()
    if progress.cut:
        raise ConnectionCut("scripted connection cut")
    if progress.send_failed or not progress.finished:
        plan.on_cancel()
