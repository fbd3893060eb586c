"""Deadlines and disconnect watching for requests in flight, swept by one timer per loop.

A loop timer per deadline and a task per request parked in ``receive()`` cost about a
tenth of ccrotate's own work per request (~50k instructions, docs/benchmarks.md), while
nearly every request ends long before a deadline or a disconnect could matter. So a
request only registers a :class:`Watch` (a set insert); one timer per event loop ticks
while requests are in flight, cancels each request whose deadline has passed, and starts
a disconnect watcher for each request still waiting on the upstream or relaying it. A
deadline is met, and a client leaving is noticed, within one tick: 0.1 s, or a quarter
of the shortest timeout when that is shorter.

Cancellation is asyncio's own (``Task.cancel`` and ``Task.uncancel``, as
``asyncio.timeout`` does), so a request that is also cancelled from outside, by its
server, still sees that cancellation.
"""

from __future__ import annotations

import asyncio
import math

from ccrotate._asgi import Receive
from ccrotate._proxy.record import RequestRecord

__all__ = ["DEADLINE", "DISCONNECT", "ERROR", "Watch", "Watches"]

TICK = 0.1
DEADLINE, DISCONNECT, ERROR = "deadline", "disconnect", "error"


class Watch:
    """One request's deadline and, once it waits on the upstream, its disconnect watch."""

    __slots__ = ("_absorbed", "_base", "deadline", "error", "reason", "receive", "record",
                 "relayed", "task", "watcher")

    def __init__(self, task: asyncio.Task[object] | None, deadline: float) -> None:
        self.task = task
        self._base = task.cancelling() if task is not None else 0
        self._absorbed = False
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
        """Cancel the request's task, once, unless its answer has already gone out."""
        if self.reason is None and not self.relayed and self.task is not None:
            self.reason = reason
            self.task.cancel()

    def absorb(self) -> bool:
        """Whether a ``CancelledError`` was this watch's own; if so it is taken back.

        ``False`` means somebody else cancelled the task too: the error must propagate.
        """
        if self.reason is None or self.task is None or self._absorbed:
            return False
        self._absorbed = True
        return self.task.uncancel() <= self._base

    def _settle(self) -> None:
        # A fired cancellation that inner code swallowed (or turned into another error)
        # must still be taken back, or the task would count it for ever.
        if self.reason is not None and self.task is not None and not self._absorbed:
            self._absorbed = True
            self.task.uncancel()


class Watches:
    """The requests in flight on one event loop, and the timer that sweeps them."""

    __slots__ = ("_handle", "_live", "loop", "tick")

    def __init__(self, loop: asyncio.AbstractEventLoop, *timeouts: float | None) -> None:
        self.loop = loop
        shortest = min((t for t in timeouts if t is not None), default=math.inf)
        self.tick = min(TICK, shortest / 4)
        self._live: set[Watch] = set()
        self._handle: asyncio.TimerHandle | None = None

    def enter(self, timeout: float | None) -> Watch:
        """Register the current task, to be cancelled ``timeout`` seconds from now."""
        deadline = math.inf if timeout is None else self.loop.time() + timeout
        watch = Watch(asyncio.current_task(), deadline)
        self._live.add(watch)
        if self._handle is None:
            self._handle = self.loop.call_later(self.tick, self._sweep)
        return watch

    def leave(self, watch: Watch) -> None:
        """The request is done with its watch: no more cancelling, no more watching."""
        self._live.discard(watch)
        watch.relayed = True  # fire() is a no-op from here on
        if watch.watcher is not None:
            watch.watcher.cancel()
        watch._settle()

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
