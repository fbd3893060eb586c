"""Cross-thread primitives: the fake runs in a server thread, tests script it from theirs."""

from __future__ import annotations

import threading

import anyio

# Async waits poll: they must work from any event loop (the server's, the test's, or an
# in-process ASGI transport's) and a threading.Event cannot wake an event loop directly.
_POLL = 0.002


class Tally:
    """A thread-safe counter that can be waited on, from sync or async code."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value = 0

    @property
    def value(self) -> int:
        return self._value

    def add(self, n: int = 1) -> None:
        with self._cond:
            self._value += n
            self._cond.notify_all()

    def wait_for(self, count: int = 1, timeout: float | None = 5.0) -> bool:
        """Block until the value reaches ``count``; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._value >= count, timeout)

    async def wait_for_async(self, count: int = 1) -> None:
        """Like :meth:`wait_for`, without blocking the event loop (and with no timeout)."""
        while self._value < count:  # noqa: ASYNC110 - set from another thread: poll
            await anyio.sleep(_POLL)


class Gate:
    """A latch that holds scripted replies until :meth:`release` is called.

    Pass it as ``Reply(hold=gate)``: the reply stops at its hold point until released.
    ``arrivals`` counts replies that reached the gate, so a test can wait for a request
    to be in flight (``gate.wait_arrivals(1)``) before acting. Safe to use across threads.
    """

    def __init__(self) -> None:
        self._released = threading.Event()
        self._arrivals = Tally()

    def release(self) -> None:
        """Let every held reply (and any later one) continue."""
        self._released.set()

    @property
    def released(self) -> bool:
        return self._released.is_set()

    @property
    def arrivals(self) -> int:
        """How many replies have reached this gate so far."""
        return self._arrivals.value

    def wait_arrivals(self, count: int = 1, timeout: float | None = 5.0) -> bool:
        """Block until ``count`` replies reached the gate; ``False`` on timeout."""
        return self._arrivals.wait_for(count, timeout)

    async def wait_arrivals_async(self, count: int = 1) -> None:
        """Like :meth:`wait_arrivals`; bound it with ``anyio.fail_after``."""
        await self._arrivals.wait_for_async(count)

    async def passage(self) -> None:
        """Wait (async) until released; used by the fake at a reply's hold point."""
        self._arrivals.add()
        while not self._released.is_set():  # noqa: ASYNC110 - released from another thread
            await anyio.sleep(_POLL)

