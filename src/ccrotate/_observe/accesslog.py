"""The access log: one structured record per request, written off the request path.

:class:`AccessLog` is an :class:`~ccrotate.Observer`. The proxy calls
``on_request`` synchronously as each request ends; that call only appends the
record to a bounded buffer. The log's background service (``run``, started by the
app's lifespan) turns the buffered records into entries (a plain dict per request,
cost included) and hands them in batches to its sinks: the standard ``logging``
module as JSON lines (logger ``ccrotate.access``), and a store the query API reads
(:class:`~ccrotate._observe.logstore.MemoryLogStore` by default, DuckDB or PostgreSQL when
configured).
"""

from __future__ import annotations

import collections
import logging
import sys
from collections.abc import Sequence
from typing import Protocol, TextIO, runtime_checkable

import anyio
import anyio.abc
import msgspec

from ccrotate._checks import at_least, positive
from ccrotate._exceptions import ConfigError
from ccrotate._observe.entries import Entry, entry_from_record, in_slices
from ccrotate._observe.logstore import LogStore, MemoryLogStore
from ccrotate._observe.pricing import PricingTable
from ccrotate._proxy.record import Failover, RequestRecord

__all__ = ["AccessLog", "LogSink", "LoggingSink", "StreamSink", "WriterSink"]

log = logging.getLogger("ccrotate")

# Records turned into entries (~3.5 µs each) between two yields to the event loop: a
# 500-record batch built in one go held the loop for ~5 ms, the p99 of every request in
# flight then; 32 at a time still added ~0.1 ms to the c=1 p99 (docs/benchmarks.md).
_SLICE = 16
_LOG_SLICE = 8  # log lines between yields: ~30 µs each through a stream handler
_encode = msgspec.json.Encoder().encode


async def _entries(batch: list[RequestRecord], pricing: PricingTable) -> list[Entry]:
    entries: list[Entry] = []
    await in_slices(batch, _SLICE, lambda part: entries.extend(
        [entry_from_record(r, pricing) for r in part]))
    return entries


class LogSink(Protocol):
    """Where batches of entries go. ``write`` may take its time: it runs off the request path."""

    async def open(self) -> None: ...

    async def write(self, entries: Sequence[Entry]) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class WriterSink(LogSink, Protocol):
    """A sink whose ``write`` only buffers, with a writer task that :class:`AccessLog` runs."""

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = ...) -> None:
        """Write buffered entries until cancelled or closed; ``task_status.started()`` first."""
        ...


class LoggingSink:
    """Writes each entry as one JSON line to a :mod:`logging` logger (``ccrotate.access``).

    The entry itself rides along as ``record.ccrotate_access`` for structured handlers.
    Lines are logged on the event loop, a few at a time between yields, as uvicorn logs
    its own access lines: a handler that may block (over a network) belongs behind a
    :class:`logging.handlers.QueueHandler`, as the logging cookbook advises.

    Parameters:
        logger: the logger, or its name.
        level: the level of each line.
    """

    def __init__(self, logger: logging.Logger | str = "ccrotate.access", *,
                 level: int = logging.INFO) -> None:
        if isinstance(level, bool) or not isinstance(level, int):
            raise ConfigError(f"LoggingSink.level: must be a logging level such as "
                              f"logging.INFO (got {level!r})")
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level
        self._caller: tuple[str, int, str] | None = None

    async def open(self) -> None:
        return None

    async def write(self, entries: Sequence[Entry]) -> None:
        if not entries or not self.logger.isEnabledFor(self.level):
            return
        # Not in a worker thread: a thread running Python takes the GIL each time the
        # event loop releases it for a syscall, and the loop then waits up to the switch
        # interval (5 ms) to get it back, so every request in flight stalled while a
        # batch was logged. On the loop, in slices of a few entries between yields, a
        # request waits at most one slice (~0.3 ms).
        await in_slices(entries, _LOG_SLICE, self._emit)

    def _emit(self, entries: Sequence[Entry]) -> None:
        logger, level = self.logger, self.level
        # What Logger.log does, less its stack walk per line: every line comes from here,
        # so the caller (file, line, function) that findCaller would find is found once.
        caller = self._caller
        if caller is None:
            caller = self._caller = (logger.findCaller(False, 1)[:3] if logging._srcfile
                                     else ("(unknown file)", 0, "(unknown function)"))
        path, line, func = caller
        for entry in entries:
            # msgspec: the same JSON as json.dumps(separators=(",", ":")) in a fifth of
            # the time, UTF-8 rather than \u escapes.
            logger.handle(logger.makeRecord(
                logger.name, level, path, line, "%s", (_encode(entry).decode(),), None,
                func, {"ccrotate_access": entry}))

    async def aclose(self) -> None:
        return None


class StreamSink:
    """Writes each entry as one JSON line to a text stream, a slice of lines per write.

    ``ccrotate serve`` writes its access lines with it: the lines a :class:`LoggingSink`
    gives through ``logging.basicConfig(format="%(levelname)s %(message)s")``, with
    ``prefix="INFO "``, for a fifth of the cost, as no ``LogRecord``, handler walk and
    flush is made per line (docs/benchmarks.md). Use :class:`LoggingSink` when logging's
    handlers, filters or formats should see the lines.

    Parameters:
        stream: where the lines go; ``None`` means ``sys.stderr`` as it is at each write.
        prefix: put before each line's JSON.
    """

    def __init__(self, stream: TextIO | None = None, *, prefix: str = "") -> None:
        self.stream = stream
        self.prefix = prefix

    async def open(self) -> None:
        return None

    async def write(self, entries: Sequence[Entry]) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        prefix = self.prefix
        # One write per slice: a line-buffered stderr flushes once per write, not per line.
        await in_slices(entries, _SLICE, lambda part: stream.write(
            "".join([f"{prefix}{_encode(entry).decode()}\n" for entry in part])))
        stream.flush()

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
        # Checked before anything is built: zero would spin the flusher or drop everything.
        flush_interval = positive("AccessLog", "flush_interval", flush_interval)
        batch_size = at_least("AccessLog", "batch_size", batch_size, 1)
        max_pending = at_least("AccessLog", "max_pending", max_pending, 1)
        if store is None:
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
        # A sink with a writer task of its own (PostgresLogStore) runs it here, so that
        # the task lives exactly as long as this service. Cancelling the service cancels
        # the writers too; each sink's aclose() then writes what is left, bounded.
        async with anyio.create_task_group() as writers:
            try:
                for sink in self.sinks:
                    await sink.open()
                    opened.append(sink)
                    if isinstance(sink, WriterSink):
                        await writers.start(sink.run)
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
                entries = await _entries(batch, self.pricing)
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
