"""What the proxy tells observers (metrics, access log) about each request.

Observers are called synchronously at the end of a request and on each
failover, so they must only record (increment a counter, append to a buffer)
and never block or await: anything slow belongs in their own background task.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Failover", "Observer", "RequestRecord", "apply_usage", "new_request_id",
           "note_failover", "notify_request"]

log = logging.getLogger("ccrotate.proxy")

_bits = random.getrandbits


def new_request_id() -> str:
    """A request's id in the access log: 16 hex digits, 64 random bits.

    Not a secret, so ``random``'s (reseeded in a forked child) rather than the
    ``os.urandom`` system call per request that ``secrets.token_hex`` makes.
    """
    return f"{_bits(64):016x}"


@dataclass(slots=True)
class Failover:
    """One failed attempt that moved the request to another account."""

    account: str
    reason: str
    """``rate_limited``, ``overloaded``, ``server_error``, ``auth``, ``connection``."""
    status: int | None = None


@dataclass(slots=True)
class RequestRecord:
    """One client request as the proxy handled it (filled in as it goes)."""

    request_id: str
    started_at: float
    route: str
    """``messages``, ``count_tokens``, ``models``, ``chat_completions``."""
    method: str = "POST"
    model: str | None = None
    stream: bool = False
    account: str | None = None
    status: int = 0
    """The status the client saw; 499 when the client went away first."""
    attempts: int = 0
    failovers: list[Failover] = field(default_factory=list)
    latency: float | None = None
    ttfb: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    error_type: str | None = None
    client_disconnected: bool = False
    upstream_latency: float | None = None
    """Seconds from sending the winning attempt to its response head."""


class Observer(Protocol):
    """Receives request records; implementations must not block."""

    def on_failover(self, record: RequestRecord, failover: Failover) -> None: ...

    def on_request(self, record: RequestRecord) -> None: ...


class UsageLike(Protocol):
    """Token counts as the Messages API names them (``_wire.Usage``)."""

    input_tokens: int | None
    output_tokens: int | None
    cache_read_input_tokens: int | None
    cache_creation_input_tokens: int | None


def apply_usage(record: RequestRecord, usage: UsageLike | None) -> None:
    """Copy the upstream's token counts onto ``record``."""
    if usage is None:
        return
    record.input_tokens = usage.input_tokens
    record.output_tokens = usage.output_tokens
    record.cache_read_tokens = usage.cache_read_input_tokens
    record.cache_write_tokens = usage.cache_creation_input_tokens


def notify_request(observers: Sequence[Observer], record: RequestRecord) -> None:
    """Hand the finished ``record`` to every observer (the proxy's and SDK mode's)."""
    for observer in observers:
        # One broken observer must not silence the others nor fail the request.
        try:
            observer.on_request(record)
        except Exception:
            log.exception("observer %r failed on a request record", observer)


def note_failover(record: RequestRecord, observers: Sequence[Observer],
                  failover: Failover) -> None:
    """Add ``failover`` to ``record`` and tell every observer of it."""
    record.failovers.append(failover)
    for observer in observers:
        # A broken metrics hook must not stop the failover or leave the account uncooled.
        try:
            observer.on_failover(record, failover)
        except Exception:
            log.exception("observer %r failed on a failover", observer)
