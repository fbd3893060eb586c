"""Deadlines and disconnect watching for requests in flight, swept by one timer per loop.

A loop timer per deadline and a task per request parked in ``receive()`` cost about a
tenth of ccrotate's own work per request (~50k instructions, docs/benchmarks.md), while
nearly every request ends long before a deadline or a disconnect could matter. So a
request only registers a :class:`Watch` (a set insert); one timer per event loop ticks
while requests are in flight, cancels each request whose deadline has passed, and starts
a disconnect watcher for each request still waiting on the upstream or relaying it. A
deadline is met, and a client leaving is noticed, within one tick: 0.1 s, or a quarter
of the shortest timeout when that is shorter.

What gets cancelled is the request's anyio cancel scope, never its task: a shielded scope
inside (a token refresh whose answer must be saved, a Redis command that must be read
back) still runs to its end, which asyncio's ``Task.cancel`` would not respect.
"""

from __future__ import annotations

import asyncio
import math

import anyio

from ccrotate._asgi import Receive
from ccrotate._proxy.record import RequestRecord

__all__ = ["DEADLINE", "DISCONNECT", "ERROR", "Watch", "Watches"]

TICK = 0.1
DEADLINE, DISCONNECT, ERROR = "deadline", "disconnect", "error"


class Watch:
    """One request's deadline and, once it waits on the upstream, its disconnect watch."""

    __slots__ = ("deadline", "error", "reason", "receive", "record", "relayed", "scope",
                 "watcher")

    def __init__(self, scope: anyio.CancelScope, deadline: float) -> None:
        self.scope = scope
        self.deadline = deadline
        self.reason: str | None = None  # DEADLINE, DISCONNECT or ERROR once fired
        self.error: Exception | None = None  # what receive() raised, for ERROR
        self.receive: Receive | None = None  # set once the body is read: watch from then
        self.record: RequestRecord | None = None
        self.relayed = False  # the answer went out: a disconnect now is the server's doing
        self.watcher: asyncio.Task[None] | None = None

    def watch(self, receive: Receive, record: RequestRecord, deadline: float) -> None:
        """From now on, watch ``receive`` for a disconnect, under a new ``deadline``."""
        self.receive, self.record, self.deadline = receive, record, deadline

    def fire(self, reason: str) -> None:
        """Cancel the request's scope, once, unless its answer has already gone out."""
        if self.reason is None and not self.relayed:
            self.reason = reason
            self.scope.cancel()


class Watches:
    """The requests in flight on one event loop, and the timer that sweeps them."""

    __slots__ = ("_handle", "_live", "loop", "scope_type", "tick")

    def __init__(self, loop: asyncio.AbstractEventLoop, *timeouts: float | None) -> None:
        self.loop = loop
        shortest = min((t for t in timeouts if t is not None), default=math.inf)
        self.tick = min(TICK, shortest / 4)
        self._live: set[Watch] = set()
        self._handle: asyncio.TimerHandle | None = None
        # The class anyio.CancelScope() hands out on this loop, taken once: calling
        # anyio.CancelScope() looks the running library up (sniffio) every time, 2.5 of
        # its 5.8 µs per request. Call it from the loop this serves.
        self.scope_type: type[anyio.CancelScope] = type(anyio.CancelScope())

    def enter(self, scope: anyio.CancelScope, timeout: float | None) -> Watch:
        """Register a request's ``scope``, to be cancelled ``timeout`` seconds from now."""
        deadline = math.inf if timeout is None else self.loop.time() + timeout
        watch = Watch(scope, deadline)
        self._live.add(watch)
        if self._handle is None:
            self._handle = self.loop.call_later(self.tick, self._sweep)
        return watch

    def leave(self, watch: Watch) -> None:
        """The request is done with its watch: no more cancelling, no more watching."""
        # Out of the sweep, and its watcher cancelled (even one already woken gets the
        # cancellation, not its message): nothing fires it from here on.
        self._live.discard(watch)
        if watch.watcher is not None:
            watch.watcher.cancel()

    def _sweep(self) -> None:
        self._handle = None
        if not self._live:
            return  # idle: no timer until the next request
        now = self.loop.time()
        for watch in self._live:
            if watch.deadline <= now:
                watch.fire(DEADLINE)
            elif watch.watcher is None and watch.receive is not None:
                watch.watcher = self.loop.create_task(_watch(watch))
        self._handle = self.loop.call_later(self.tick, self._sweep)

    def in_flight(self) -> int:
        """How many requests are registered (for tests and the curious)."""
        return len(self._live)


async def _watch(watch: Watch) -> None:
    receive = watch.receive
    if receive is None:  # pragma: no cover - only started once set
        return
    # The body has been read in full, so this task is the only consumer of receive().
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not watch.relayed and watch.record is not None:
                    watch.record.client_disconnected = True
                watch.fire(DISCONNECT)
                return
    except Exception as exc:
        watch.error = exc  # the pipeline raises it once the request has stopped
        watch.fire(ERROR)
