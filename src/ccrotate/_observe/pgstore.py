"""The access log in PostgreSQL: one table that every replica writes to and reads from.

:class:`PostgresLogStore` answers the same queries as the DuckDB store (same filters,
cursors and analytics), so ``/logs`` and the dashboard of any replica show the whole
team's traffic. psycopg 3 is the optional extra ``ccrotate[postgres]``, imported only
when a store is made.

Writes never wait for the database. :meth:`PostgresLogStore.write` appends to a bounded
buffer and wakes the writer task (:meth:`PostgresLogStore.run`, which the access log
runs beside its own flusher); the writer inserts batches. While the database is away
the buffer holds up to ``max_buffer`` entries: beyond, the oldest are dropped and
counted in :attr:`~PostgresLogStore.dropped`. The writer reconnects with capped
exponential backoff and flushes what was kept. Retried inserts are idempotent: the
table's key is ``(ts, request_id)``, the cursor key, and duplicates are ignored.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc

from ccrotate._checks import at_least, masked_url, positive
from ccrotate._exceptions import ConfigError
from ccrotate._observe.entries import COLUMNS, Entry, LogFilter
from ccrotate._observe.logstore import (
    TOKEN_KINDS,
    LogPage,
    _where_sql,
    page_of,
    page_sql,
    sql_analytics,
)

__all__ = ["PostgresLogStore"]

log = logging.getLogger("ccrotate")

_TYPES = {
    "ts": "double precision NOT NULL", "request_id": 'text COLLATE "C" NOT NULL',
    "route": "text", "method": "text", "model": "text", "account": "text",
    "stream": "boolean", "status": "integer", "error": "boolean", "error_type": "text",
    "client_disconnected": "boolean", "attempts": "integer", "failovers": "jsonb",
    "latency": "double precision", "ttfb": "double precision",
    "upstream_latency": "double precision", "input_tokens": "bigint",
    "output_tokens": "bigint", "cache_read_tokens": "bigint", "cache_write_tokens": "bigint",
    "cost_usd": "double precision", "failover_count": "integer",
}
# Written columns: everything but `time`, which the database derives from `ts`.
_WRITTEN = tuple(_TYPES)
_READ = tuple(c for c in COLUMNS if c != "time")
# The array type each column is sent as (one INSERT ... unnest() per batch: one round trip).
_ARRAY = {c: t.split(" COLLATE")[0].removesuffix(" NOT NULL") + "[]" for c, t in _TYPES.items()}
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SCHEMA_LOCK = 0x63_63_72_6F_74_61_74_65  # "ccrotate": the advisory lock around the DDL
_SUMMARY = f"""
    count(*), count(*) FILTER (WHERE error), count(*) FILTER (WHERE client_disconnected),
    coalesce(sum(failover_count), 0)::bigint,
    {", ".join(f"coalesce(sum({k}), 0)::bigint" for k in TOKEN_KINDS)},
    coalesce(sum(cost_usd), 0.0),
    count(*) FILTER (WHERE cost_usd IS NULL AND NOT ({" AND ".join(
        f"{k} IS NULL" for k in TOKEN_KINDS)})),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY latency),
    percentile_cont(0.95) WITHIN GROUP (ORDER BY latency),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY ttfb),
    percentile_cont(0.95) WITHIN GROUP (ORDER BY ttfb)"""


def _schema(table: str) -> list[str]:
    columns = ", ".join(f"{c} {t}" for c, t in _TYPES.items())
    return [
        f"CREATE TABLE IF NOT EXISTS {table} ("
        f"time timestamptz GENERATED ALWAYS AS (to_timestamp(ts)) STORED, {columns}, "
        "PRIMARY KEY (ts, request_id))",
        *(f"CREATE INDEX IF NOT EXISTS {table}_{c}_ts ON {table} ({c}, ts)"
          for c in ("account", "model", "status")),
    ]


def _row_arrays(entries: Sequence[Entry]) -> list[list[Any]]:
    from psycopg.types.json import Jsonb

    arrays: list[list[Any]] = []
    for column in _WRITTEN:
        if column == "failover_count":
            arrays.append([len(e["failovers"]) for e in entries])
        elif column == "failovers":
            arrays.append([Jsonb(e["failovers"]) for e in entries])
        else:
            arrays.append([e[column] for e in entries])
    return arrays


def _is_outage(exc: BaseException) -> bool:
    # The database (or the way to it) is away: keep the batch and retry. Anything
    # else psycopg raises (bad data, a broken schema) would fail again on retry.
    import psycopg

    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError
                      | TimeoutError)


class PostgresLogStore:
    """The access log in a PostgreSQL table that several servers share.

    Needs the ``postgres`` extra (psycopg 3). The table (``access_log`` by default) and its
    indexes are created on :meth:`open`; :meth:`run` is the writer task (the access log runs
    it). Reads answer from the database after writing this server's buffered entries.

    Parameters:
        url: a ``postgresql://`` URL (libpq's format: ``?sslmode=require`` and other
            parameters pass through); its password is never shown.
        table: the table name.
        max_buffer: entries kept while the database is slow or away; beyond, the oldest
            are dropped and counted in :attr:`dropped`.
        batch_size: entries per INSERT.
        connect_timeout: seconds to connect (and, while away, per reconnect attempt).
        retry_base: first pause in seconds after a failed write; it doubles per failure.
        retry_cap: longest pause between reconnect attempts.
        drain_timeout: seconds :meth:`aclose` spends writing what is still buffered.
        query_timeout: seconds an INSERT or a query may take before the connection is
            given up as hung (a write is then retried).
    """

    def __init__(self, url: str, *, table: str = "access_log", max_buffer: int = 50_000,
                 batch_size: int = 1000, connect_timeout: float = 5.0,
                 retry_base: float = 0.5, retry_cap: float = 30.0,
                 drain_timeout: float = 5.0, query_timeout: float = 30.0) -> None:
        if not isinstance(url, str) or not _is_pg_url(url):
            # The value is not quoted: it may hold a password.
            raise ConfigError("PostgresLogStore.url: must be a postgresql:// URL")
        if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
            raise ConfigError(f"PostgresLogStore.table: must be a lower-case SQL name "
                              f"(got {table!r})")
        self.max_buffer = at_least("PostgresLogStore", "max_buffer", max_buffer, 1)
        self.batch_size = at_least("PostgresLogStore", "batch_size", batch_size, 1)
        self.connect_timeout = positive("PostgresLogStore", "connect_timeout", connect_timeout)
        self.retry_base = positive("PostgresLogStore", "retry_base", retry_base)
        self.retry_cap = max(positive("PostgresLogStore", "retry_cap", retry_cap),
                             self.retry_base)
        self.drain_timeout = positive("PostgresLogStore", "drain_timeout", drain_timeout)
        self.query_timeout = positive("PostgresLogStore", "query_timeout", query_timeout)
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise ConfigError("the PostgreSQL access log needs psycopg: "
                              "pip install 'ccrotate[postgres]'") from exc
        self._url = url
        self.table = table
        self.dropped = 0
        """Entries lost: pushed out of a full buffer, refused by the database, or still
        buffered when the store closed with the database away."""
        self.written = 0
        """Entries this store has inserted."""
        self._buffer: collections.deque[Entry] = collections.deque()
        self._in_flight = 0
        self._conn: Any = None
        self._connect_lock = anyio.Lock()
        self._write_lock = anyio.Lock()
        self._wake: anyio.Event | None = None
        self._closed = False
        self._outage = False
        self._reported_drops = 0

    def __repr__(self) -> str:
        return (f"<PostgresLogStore {self.url!r} table={self.table} "
                f"buffered={self.buffered} dropped={self.dropped}>")

    @property
    def url(self) -> str:
        """The database URL with its password masked."""
        return masked_url(self._url)

    @property
    def buffered(self) -> int:
        """Entries waiting to be written (the batch being inserted included)."""
        return len(self._buffer) + self._in_flight

    @property
    def connected(self) -> bool:
        """Whether the store holds a live connection (False while the database is away)."""
        return self._conn is not None and not self._conn.closed and not self._outage

    # -- connection ------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        password = urlsplit(self._url).password if "://" in self._url else None
        return text.replace(password, "***") if password else text

    async def _connection(self) -> Any:
        async with self._connect_lock:
            if self._conn is not None and not self._conn.closed:
                return self._conn
            import psycopg

            with anyio.fail_after(self.connect_timeout + 1):
                conn = await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=max(2, round(
                        self.connect_timeout)), application_name="ccrotate")
            try:
                # Replicas starting together would race on CREATE TABLE IF NOT EXISTS
                # (PostgreSQL can then fail one with a duplicate pg_type row): one at a time.
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
                    for statement in _schema(self.table):
                        await conn.execute(statement)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await conn.close()
                raise
            self._conn = conn
            if self._outage:
                self._outage = False
                log.info("ccrotate: access log database %s is back; writing %d buffered "
                     "entries", self.url, len(self._buffer))
            return conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.connect_timeout):
                try:
                    await conn.close()
                except Exception:  # already broken: nothing to release
                    log.debug("ccrotate: closing a broken access log connection failed")

    async def _lost(self, exc: BaseException) -> None:
        await self._disconnect()
        if not self._outage:
            self._outage = True
            log.warning("ccrotate: access log database %s unavailable (%s: %s); buffering up "
                        "to %d entries and retrying", self.url, type(exc).__name__,
                        self._scrub(str(exc)).strip(), self.max_buffer)

    # -- LogSink ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and create the table; a database that is away is retried by the writer."""
        self._closed = False
        try:
            await self._connection()
        except Exception as exc:
            if not _is_outage(exc):
                raise
            await self._lost(exc)

    async def write(self, entries: Sequence[Entry]) -> None:
        """Buffer ``entries`` for the writer; never waits for the database."""
        buffer = self._buffer
        buffer.extend(entries)
        if (excess := len(buffer) - self.max_buffer) > 0:
            for _ in range(excess):
                buffer.popleft()
            self.dropped += excess
        if self._wake is not None:
            self._wake.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                  ) -> None:
        """The writer: insert buffered entries; while the database is away, retry with
        capped exponential backoff (with jitter). Runs until cancelled or closed."""
        task_status.started()
        failures = 0
        while not self._closed:
            if not self._buffer:
                self._wake = anyio.Event()
                await self._wake.wait()
                continue
            if await self._write_batch():
                failures = 0
                continue
            failures += 1
            self._report_drops()
            pause = min(self.retry_cap, self.retry_base * 2 ** min(failures - 1, 30))
            await anyio.sleep(pause * random.uniform(0.5, 1.0))

    async def flush(self) -> None:
        """Write every buffered entry now; ``ConnectionError`` if the database is away."""
        while self._buffer:
            if not await self._write_batch():
                raise ConnectionError(f"the access log database {self.url} is unavailable")

    async def aclose(self) -> None:
        """Write what is buffered (for up to ``drain_timeout`` seconds), then disconnect.

        Entries still buffered after that are dropped and counted."""
        self._closed = True
        if self._wake is not None:
            self._wake.set()
        with anyio.CancelScope(shield=True):
            # The database being away is already logged; what is left is counted below.
            with anyio.move_on_after(self.drain_timeout), contextlib.suppress(ConnectionError):
                await self.flush()
            if self._buffer:
                self.dropped += len(self._buffer)
                self._buffer.clear()
            self._report_drops()
            await self._disconnect()

    # -- writing ---------------------------------------------------------------------------

    @property
    def _insert_sql(self) -> str:
        casts = ", ".join(f"%s::{_ARRAY[c]}" for c in _WRITTEN)
        return (f"INSERT INTO {self.table} ({', '.join(_WRITTEN)}) "  # noqa: S608
                f"SELECT * FROM unnest({casts}) ON CONFLICT DO NOTHING")

    async def _write_batch(self) -> bool:
        """Insert one batch; False when the database is away (the batch is kept)."""
        async with self._write_lock:
            buffer = self._buffer
            batch = [buffer.popleft() for _ in range(min(self.batch_size, len(buffer)))]
            if not batch:
                return True
            self._in_flight = len(batch)
            try:
                conn = await self._connection()
                with anyio.fail_after(self.query_timeout):
                    await conn.execute(self._insert_sql, _row_arrays(batch))
            except Exception as exc:
                if not _is_outage(exc):
                    self.dropped += len(batch)
                    log.error("ccrotate: access log database %s refused %d entries (%s: %s); "
                              "dropped", self.url, len(batch), type(exc).__name__,
                              self._scrub(str(exc)).strip())
                    return True
                self._requeue(batch)
                await self._lost(exc)
                return False
            except BaseException:
                # Cancelled mid-insert: keep the batch (a retry of rows that did land is
                # ignored by the key) and drop the connection, whose state is unknown.
                self._requeue(batch)
                await self._disconnect()
                raise
            finally:
                self._in_flight = 0
            self.written += len(batch)
            return True

    def _requeue(self, batch: list[Entry]) -> None:
        # Back to the front, oldest first; if new entries filled the buffer meanwhile,
        # the oldest of the batch are the ones dropped, as write() would have.
        self._in_flight = 0
        lost = max(0, len(batch) - (self.max_buffer - len(self._buffer)))
        self.dropped += lost
        self._buffer.extendleft(reversed(batch[lost:]))

    def _report_drops(self) -> None:
        if self.dropped != self._reported_drops:
            log.warning("ccrotate: access log database %s: %d entries dropped so far "
                        "(buffer of %d full or database away)", self.url, self.dropped,
                        self.max_buffer)
            self._reported_drops = self.dropped

    # -- LogStore queries --------------------------------------------------------------------

    async def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        # This server's own recent entries first, so a page never misses them.
        await self.flush()
        try:
            conn = await self._connection()
            with anyio.fail_after(self.query_timeout):
                cursor = await conn.execute(sql, params)
                rows: list[tuple[Any, ...]] = await cursor.fetchall()
        except Exception as exc:
            if not _is_outage(exc):
                raise
            await self._lost(exc)
            raise ConnectionError(f"the access log database {self.url} is unavailable") \
                from exc
        return rows

    async def entries(self, where: LogFilter, *, limit: int, cursor: str | None = None,
                      offset: int = 0) -> LogPage:
        """A page of entries, newest first (``ConnectionError`` while the database is away)."""
        query, params = page_sql(where, cursor, limit, offset, select=", ".join(_READ),
                                 table=self.table, mark="%s")
        rows = await self._query(query, params)
        return page_of([dict(zip(_READ, row, strict=True)) for row in rows], limit)

    async def analytics(self, where: LogFilter, *, bucket: float) -> dict[str, Any]:
        """Totals, per-account and per-model summaries and a time series over the window."""
        since, _ = where.window()
        sql, params = _where_sql(where, "%s")
        groups = (
            "SELECT GROUPING(account), GROUPING(model), account, model, "  # noqa: S608
            f"{_SUMMARY} FROM {self.table} WHERE {sql} "
            "GROUP BY GROUPING SETS ((), (account), (model))")
        series = (
            "SELECT floor((ts - %s) / %s)::bigint AS b, count(*), "  # noqa: S608
            "count(*) FILTER (WHERE error), coalesce(sum(cost_usd), 0.0), "
            f"coalesce(sum(output_tokens), 0)::bigint FROM {self.table} WHERE {sql} "
            "GROUP BY b")
        group_rows = await self._query(groups, params)
        series_rows = await self._query(series, [since, bucket, *params])
        return sql_analytics(where, bucket, group_rows, series_rows)


def _is_pg_url(url: str) -> bool:
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in ("postgresql", "postgres")
