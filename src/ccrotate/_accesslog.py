"""The access log: one structured record per request, written off the request path.

:class:`AccessLog` is an :class:`~ccrotate.Observer`. The proxy calls
``on_request`` synchronously as each request ends; that call only appends the
record to a bounded buffer. The log's background service (``run``, started by the
app's lifespan) turns the buffered records into entries (a plain dict per request,
cost included) and hands them in batches to its sinks: the standard ``logging``
module as JSON lines (logger ``ccrotate.access``), and a store the query API reads
(:class:`~ccrotate._logstore.MemoryLogStore` by default, DuckDB when configured).
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc

from ccrotate._observe import Failover, RequestRecord
from ccrotate._pricing import PricingTable

if TYPE_CHECKING:
    from ccrotate._logstore import LogStore

__all__ = ["COLUMNS", "AccessLog", "LogFilter", "LogSink", "LoggingSink", "entry_from_record",
           "is_error"]

log = logging.getLogger("ccrotate")

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


def iso_time(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds (``2026-11-20T10:00:00.123Z``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


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


class LogSink(Protocol):
    """Where batches of entries go. ``write`` may take its time: it runs off the request path."""

    async def open(self) -> None: ...

    async def write(self, entries: Sequence[Entry]) -> None: ...

    async def aclose(self) -> None: ...


class LoggingSink:
    """Writes each entry as one JSON line to a :mod:`logging` logger (``ccrotate.access``).

    The entry itself rides along as ``record.ccrotate_access`` for structured handlers.
    Handlers may block on I/O, so batches are logged from a worker thread.

    Parameters:
        logger: the logger, or its name.
        level: the level of each line.
    """

    def __init__(self, logger: logging.Logger | str = "ccrotate.access", *,
                 level: int = logging.INFO) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level

    async def open(self) -> None:
        return None

    async def write(self, entries: Sequence[Entry]) -> None:
        if entries and self.logger.isEnabledFor(self.level):
            await anyio.to_thread.run_sync(self._emit, entries)

    def _emit(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            self.logger.log(self.level, "%s", json.dumps(entry, separators=(",", ":")),
                            extra={"ccrotate_access": entry})

    async def aclose(self) -> None:
        return None


class AccessLog:
    """The access log: an observer that buffers records and a service that writes them.

    Add it to the proxy's observers and run it as a service (the reference server
    does both); or call :meth:`flush` yourself.

    Parameters:
        store: the queryable store (a :class:`MemoryLogStore` holding the last 10,000
            entries when ``None``); it receives every batch too.
        sinks: further sinks; ``None`` means one :class:`LoggingSink`.
        pricing: the :class:`PricingTable` for ``cost_usd`` (the bundled one when ``None``).
        flush_interval: seconds between flushes.
        batch_size: entries per write; a full batch wakes the flusher early.
        max_pending: records kept waiting at most; beyond, the oldest are dropped
            (and counted in :attr:`dropped`) rather than growing without bound.
    """

    def __init__(self, *, store: LogStore | None = None, sinks: Sequence[LogSink] | None = None,
                 pricing: PricingTable | None = None, flush_interval: float = 0.5,
                 batch_size: int = 500, max_pending: int = 50_000) -> None:
        if store is None:
            from ccrotate._logstore import MemoryLogStore
            store = MemoryLogStore()
        self.store: LogStore = store
        self.sinks: list[LogSink] = [*(sinks if sinks is not None else [LoggingSink()]), store]
        self.pricing = pricing if pricing is not None else PricingTable.load()
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.dropped = 0
        self._pending: collections.deque[RequestRecord] = collections.deque(maxlen=max_pending)
        self._wake: anyio.Event | None = None
        self._flush_lock: anyio.Lock | None = None
        self._reported_drops = 0

    def __repr__(self) -> str:
        return f"<AccessLog sinks={len(self.sinks)} pending={len(self._pending)}>"

    # -- Observer: called on the request path, so only appends ---------------------------

    def on_failover(self, record: RequestRecord, failover: Failover) -> None:
        """Failovers are logged with their request, when it ends."""

    def on_request(self, record: RequestRecord) -> None:
        """Queue ``record`` for the next flush."""
        pending = self._pending
        if len(pending) == pending.maxlen:
            self.dropped += 1
        pending.append(record)
        if len(pending) >= self.batch_size and self._wake is not None:
            self._wake.set()

    # -- Service ---------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Open the sinks, then flush every ``flush_interval`` until cancelled (flushing once
        more on the way out)."""
        opened: list[LogSink] = []
        try:
            for sink in self.sinks:
                await sink.open()
                opened.append(sink)
            task_status.started()
            while True:
                self._wake = anyio.Event()
                with anyio.move_on_after(self.flush_interval):
                    await self._wake.wait()
                await self.flush()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    if opened:
                        await self.flush()
                finally:
                    for sink in opened:
                        await sink.aclose()

    async def flush(self) -> int:
        """Write every buffered record now; returns how many were written."""
        if self._flush_lock is None:
            self._flush_lock = anyio.Lock()
        written = 0
        async with self._flush_lock:
            while self._pending:
                batch: list[RequestRecord] = []
                while self._pending and len(batch) < self.batch_size:
                    batch.append(self._pending.popleft())
                entries = [entry_from_record(r, self.pricing) for r in batch]
                for sink in self.sinks:
                    try:
                        await sink.write(entries)
                    except Exception:  # one broken sink must not starve the others
                        log.exception("ccrotate: access log sink %r failed; %d entries lost "
                                      "for it", sink, len(entries))
                written += len(entries)
        if self.dropped != self._reported_drops:
            log.warning("ccrotate: access log buffer full: %d records dropped so far",
                        self.dropped)
            self._reported_drops = self.dropped
        return written
