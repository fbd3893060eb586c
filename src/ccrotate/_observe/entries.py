"""Access-log entries: the columns, how a request record becomes one, and query filters.

Shared by the access log (which writes entries) and the log stores (which keep and query them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio.lowlevel

from ccrotate._observe.pricing import PricingTable
from ccrotate._proxy.record import Failover, RequestRecord

__all__ = ["COLUMNS", "Entry", "LogFilter", "entry_from_record", "in_slices", "is_error",
           "iso_time"]

_T = TypeVar("_T")

Entry = dict[str, Any]

COLUMNS: tuple[str, ...] = (
    "time", "ts", "request_id", "route", "method", "model", "account", "stream", "status",
    "error", "error_type", "client_disconnected", "attempts", "failovers", "latency", "ttfb",
    "upstream_latency", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "cost_usd",
)
"""The fields of an access-log entry, in order (see ``docs/observability.md``)."""


def is_error(status: int, error_type: str | None, client_disconnected: bool) -> bool:
    """Whether a request counts as an error: a client that left (499) is not one.

    A 200 stream that carried an error event, or ended early, is one.
    """
    if client_disconnected or status == 499:
        return False
    return status == 0 or status >= 400 or error_type is not None


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def iso_time(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds (``2026-11-20T10:00:00.123Z``)."""
    # The date and time of day are formatted once per second (strftime took over half of
    # an access-log entry's cost); the milliseconds are cut from the microseconds exactly
    # as datetime rounds them (modf, then round half even).
    frac, whole = math.modf(ts)
    micros = round(frac * 1e6)
    if micros < 0 or micros >= 1_000_000 or ts >= 1e11:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    cached = _second
    if cached[0] != whole:
        text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        cached[0], cached[1] = whole, text  # one list: a reader never sees half an update
    else:
        text = cached[1]
    return f"{text}{micros // 1000:03d}Z"


async def in_slices(items: Sequence[_T], size: int,
                    handle: Callable[[Sequence[_T]], object]) -> None:
    """Call ``handle`` on ``items`` ``size`` at a time, yielding to the event loop between.

    The access log's batches (hundreds of entries) are built, logged and kept this way, so
    a request in flight waits for one slice at most, never for a whole batch.
    """
    for start in range(0, len(items), size):
        if start:
            await anyio.lowlevel.checkpoint()
        handle(items[start:start + size])


def _failover(f: Failover) -> dict[str, Any]:
    return {"account": f.account, "reason": f.reason, "status": f.status}


def entry_from_record(record: RequestRecord, pricing: PricingTable | None) -> Entry:
    """The access-log entry of one request (a JSON-ready dict with the :data:`COLUMNS`)."""
    disconnected = record.client_disconnected or record.status == 499
    cost = None
    if pricing is not None:
        cost = pricing.cost(record.model, input_tokens=record.input_tokens,
                            output_tokens=record.output_tokens,
                            cache_read_tokens=record.cache_read_tokens,
                            cache_write_tokens=record.cache_write_tokens)
    return {
        "time": iso_time(record.started_at),
        "ts": record.started_at,
        "request_id": record.request_id,
        "route": record.route,
        "method": record.method,
        "model": record.model,
        "account": record.account,
        "stream": record.stream,
        "status": record.status,
        "error": is_error(record.status, record.error_type, disconnected),
        "error_type": record.error_type,
        "client_disconnected": disconnected,
        "attempts": record.attempts,
        "failovers": [_failover(f) for f in record.failovers],
        "latency": record.latency,
        "ttfb": record.ttfb,
        "upstream_latency": record.upstream_latency,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cache_read_tokens": record.cache_read_tokens,
        "cache_write_tokens": record.cache_write_tokens,
        "cost_usd": None if cost is None else round(cost, 8),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class LogFilter:
    """Which entries a query selects; every given criterion must hold.

    Parameters:
        since: epoch seconds, inclusive.
        until: epoch seconds, exclusive.
        accounts: any of these account names.
        models: any of these model ids.
        statuses: any of these inclusive status ranges (``(429, 429)``, ``(500, 599)``).
    """

    since: float | None = None
    until: float | None = None
    accounts: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    statuses: tuple[tuple[int, int], ...] = ()

    def window(self) -> tuple[float, float]:
        """``(since, until)``; ``ValueError`` when either is open (analytics needs both)."""
        if self.since is None or self.until is None:
            raise ValueError("LogFilter: analytics needs a bounded window, since and until "
                             f"(got since={self.since!r}, until={self.until!r})")
        return self.since, self.until

    def matches(self, entry: Mapping[str, Any]) -> bool:
        """Whether ``entry`` is selected."""
        ts = entry["ts"]
        if self.since is not None and ts < self.since:
            return False
        if self.until is not None and ts >= self.until:
            return False
        if self.accounts and entry["account"] not in self.accounts:
            return False
        if self.models and entry["model"] not in self.models:
            return False
        status = entry["status"]
        return not self.statuses or any(lo <= status <= hi for lo, hi in self.statuses)
