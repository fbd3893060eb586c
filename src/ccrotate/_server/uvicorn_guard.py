"""Slow and half-open clients, at uvicorn's protocol layer: a request-head deadline and a
cap on open connections.

uvicorn reads a request head for as long as the client cares to send it, and accepts
every connection it can: a few hundred clients trickling bytes hold as many file
descriptors until the process hits its limit and stops accepting. Neither can be fixed
from inside an ASGI app, which only runs once a head is complete, so
:func:`guarded_protocol` subclasses uvicorn's httptools protocol (passed as ``http=``):

- a deadline set when a connection opens, and again when the first byte of each further
  request arrives, closes the connection if the head is not complete in time (with a
  408 when part of a head came, silently when nothing did). One periodic sweep per
  server checks the deadlines, so a request pays for no timer of its own. Idle
  keep-alive connections are uvicorn's ``timeout_keep_alive``'s; bytes that begin no
  request (blank lines) set the head deadline too, so they cannot keep a connection
  open for ever.
- over ``max_connections`` open connections, a new one gets a 503 with ``retry-after``
  at once and is closed: quickly enough to cost one descriptor for at most a second,
  where the kernel would otherwise fail ``accept`` for everyone.

The request *body* deadline is the proxy's (``ProxyConfig.body_timeout``): it works
under any server. See docs/deployment.md for why uvicorn plus this guard, not granian.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from typing import Any, ClassVar

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["LINGER_SECONDS", "MAX_LINGERING", "guarded_protocol"]

log = logging.getLogger("ccrotate")

LINGER_SECONDS = 1.0
"""Longest an over-limit connection stays open after its 503, for the client to read it."""

MAX_LINGERING = 64
"""Over-limit connections allowed to linger at once; beyond, the 503 is sent and the
socket closed at once (the client may then see a reset instead of the 503)."""


def _response(status: bytes, type_: str, message: str, *extra: bytes) -> bytes:
    # Anthropic's error shape: SDK clients parse it and honour retry-after.
    body = msgspec.json.encode({"type": "error", "error": {"type": type_, "message": message}})
    head = [b"HTTP/1.1 " + status, b"content-type: application/json",
            b"content-length: " + str(len(body)).encode(), b"connection: close", *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


_TIMEOUT_408 = _response(b"408 Request Timeout", "timeout_error",
                         "ccrotate: request head not received in time")
_OVERFLOW_503 = _response(b"503 Service Unavailable", "overloaded_error",
                          "ccrotate: too many open connections", b"retry-after: 1")


class _GuardedProtocol(HttpToolsProtocol):
    # Set on the subclass that guarded_protocol() builds: uvicorn instantiates the
    # protocol class itself, with only its own Config.
    header_timeout: float = 10.0
    max_connections: int | None = None
    # The connections being served and the refused ones still lingering, per server
    # (uvicorn's own set holds both, so it cannot tell a full server from a flood).
    served: ClassVar[set[_GuardedProtocol]]
    lingering: ClassVar[set[_GuardedProtocol]]
    # One sweep over the served connections every `sweep_every` seconds enforces the
    # deadlines: a timer per request (uvloop call_later + cancel) measured 3.6-7.6 µs on
    # the shared test machine, the deadline store and clock read used instead 0.3 µs.
    sweep_every: ClassVar[float]
    sweeper: ClassVar[asyncio.TimerHandle | None]

    _head_deadline: float | None = None
    _head_started = False
    _overflow = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_connections is not None and len(self.served) >= self.max_connections:
            self._refuse()
            return
        self.served.add(self)
        self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head()
        self.served.discard(self)
        self.lingering.discard(self)
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        # The websocket protocol takes the transport over; this one never hears of it again.
        self._disarm_head()
        self.served.discard(self)
        super().handle_websocket_upgrade()

    def data_received(self, data: bytes) -> None:
        if self._overflow:
            return  # the answer is already out; whatever the client sends is dropped
        super().data_received(data)
        # uvicorn cancels its keep-alive timer on any byte. If those bytes began no
        # request (blank lines are skipped by the parser), nothing else is watching.
        if (self._head_deadline is None and self.timeout_keep_alive_task is None
                and (self.cycle is None or self.cycle.response_complete)
                and not self.transport.is_closing()):
            self._arm_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        # The first request's deadline runs from the connection, not its first byte.
        if self._head_deadline is None:
            self._arm_head()

    def on_headers_complete(self) -> None:
        self._disarm_head()
        self._head_started = False
        super().on_headers_complete()

    def _arm_head(self) -> None:
        self._head_deadline = self.loop.time() + self.header_timeout
        cls = type(self)
        if cls.sweeper is None:
            cls.sweeper = self.loop.call_later(cls.sweep_every, cls._sweep, self.loop)

    def _disarm_head(self) -> None:
        self._head_deadline = None

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
        cls.sweeper = None
        now = loop.time()
        for connection in list(cls.served):
            deadline = connection._head_deadline
            if deadline is not None and now >= deadline:
                connection._head_timed_out()
        if cls.served:  # an idle server has nothing to sweep: the next connection restarts it
            cls.sweeper = loop.call_later(cls.sweep_every, cls._sweep, loop)

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head behind a response still in flight: that response may be a
            # long stream, and cutting it would punish the request that did arrive.
            self._arm_head()
            return
        if self._head_started:
            self.transport.write(_TIMEOUT_408)
        self.transport.close()

    def _refuse(self) -> None:
        self._overflow = True
        _note_refusal(self.max_connections or 0)
        self.transport.write(_OVERFLOW_503)
        if len(self.lingering) >= MAX_LINGERING or not self.transport.can_write_eof():
            self.transport.close()
            return
        # Half-close and keep reading for a moment: closing with the client's request
        # unread would send a reset, which can destroy the 503 before the client reads it.
        self.lingering.add(self)
        self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


_refusals = {"count": 0, "logged": 0.0}


def _note_refusal(limit: int) -> None:
    # One warning per 10 s at most: a flood must not turn into a flood of log lines.
    _refusals["count"] += 1
    now = time.monotonic()
    if now - _refusals["logged"] >= 10:
        log.warning("ccrotate: refused %d connection(s) over max_connections=%d with a 503",
                    _refusals["count"], limit)
        _refusals["count"], _refusals["logged"] = 0, now


def guarded_protocol(*, header_timeout: float,
                     max_connections: int | None) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a request-head deadline and a connection cap.

    Pass the result as uvicorn's ``http=``. ``header_timeout`` is in seconds;
    ``max_connections=None`` leaves the number of connections unbounded.
    """
    # A new class per call (its sets and sweeper are one server's), named by its
    # parameters and kept in this module, so `serve --workers N` can pickle uvicorn's
    # config, class and all: a worker process rebuilds it from the name (__getattr__).
    millis = max(1, round(header_timeout * 1000))
    name = f"GuardedHttpToolsProtocol_{millis}_{max_connections or 0}_{next(_SERIAL)}"
    attrs: dict[str, Any] = {
        "__module__": __name__, "__qualname__": name,
        "header_timeout": millis / 1000, "max_connections": max_connections,
        "served": set(), "lingering": set(), "sweeper": None,
        # A deadline acts up to one sweep late: at most a quarter of it, or a second.
        "sweep_every": max(0.05, min(1.0, header_timeout / 4)),
    }
    made: type[HttpToolsProtocol] = type(name, (_GuardedProtocol,), attrs)
    globals()[name] = made
    return made


_SERIAL = itertools.count()
_NAME = re.compile(r"GuardedHttpToolsProtocol_(\d+)_(\d+)_\d+")


def __getattr__(name: str) -> type[HttpToolsProtocol]:
    # A worker process unpickling uvicorn's config rebuilds the class from its name.
    match = _NAME.fullmatch(name)
    if match is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    made = guarded_protocol(header_timeout=int(match[1]) / 1000,
                            max_connections=int(match[2]) or None)
    globals()[name] = made  # the name the pickle asked for, not the new serial
    return made
