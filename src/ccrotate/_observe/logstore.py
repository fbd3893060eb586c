"""Where access-log entries are kept for querying: a bounded memory ring, or DuckDB.

Both stores are sinks of :class:`~ccrotate._observe.accesslog.AccessLog` and answer the
same two questions for the query API: a page of entries (newest first, with a
cursor that stays stable while new entries arrive) and analytics over a window.
DuckDB is an optional extra; it is imported only when a DuckDB store is made,
and every call into it runs in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import math
import operator
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
import msgspec

from ccrotate._checks import at_least
from ccrotate._exceptions import ConfigError
from ccrotate._observe.entries import COLUMNS, Entry, LogFilter, in_slices, iso_time

__all__ = ["DuckDBLogStore", "LogPage", "LogStore", "MemoryLogStore", "decode_cursor",
           "open_store"]

TOKEN_KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


@dataclass(frozen=True, slots=True)
class LogPage:
    """One page of entries, newest first; ``next_cursor`` continues after the last one."""

    entries: list[Entry]
    next_cursor: str | None


class LogStore(Protocol):
    """A queryable access-log store (also an :class:`~ccrotate._observe.accesslog.LogSink`)."""

    async def open(self) -> None: ...
    async def write(self, entries: Sequence[Entry]) -> None: ...
    async def aclose(self) -> None: ...

    async def entries(self, where: LogFilter, *, limit: int, cursor: str | None = None,
                      offset: int = 0) -> LogPage: ...

    async def analytics(self, where: LogFilter, *, bucket: float) -> dict[str, Any]: ...


def encode_cursor(entry: Mapping[str, Any]) -> str:
    raw = json.dumps([entry["ts"], entry["request_id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (ts, request id) a cursor points after; ``ValueError`` when it is not a cursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, rid = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError("not a cursor from this API") from exc
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not isinstance(rid, str):
        raise ValueError("not a cursor from this API")
    return float(ts), rid


def quantile(sorted_values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated quantile (DuckDB's ``quantile_cont``) of sorted values."""
    if not sorted_values:
        return None
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _summary(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": 0, "errors": 0, "client_disconnects": 0, "failovers": 0,
                           **dict.fromkeys(TOKEN_KINDS, 0), "cost_usd": 0.0,
                           "unpriced_requests": 0}
    latencies: list[float] = []
    ttfbs: list[float] = []
    for e in rows:
        out["requests"] += 1
        out["errors"] += e["error"]
        out["client_disconnects"] += e["client_disconnected"]
        out["failovers"] += len(e["failovers"])
        used = False
        for kind in TOKEN_KINDS:
            if e[kind] is not None:
                out[kind] += e[kind]
                used = True
        if e["cost_usd"] is not None:
            out["cost_usd"] += e["cost_usd"]
        elif used:
            out["unpriced_requests"] += 1
        if e["latency"] is not None:
            latencies.append(e["latency"])
        if e["ttfb"] is not None:
            ttfbs.append(e["ttfb"])
    latencies.sort()
    ttfbs.sort()
    out["cost_usd"] = round(out["cost_usd"], 6)
    out["latency_p50"], out["latency_p95"] = quantile(latencies, 0.5), quantile(latencies, 0.95)
    out["ttfb_p50"], out["ttfb_p95"] = quantile(ttfbs, 0.5), quantile(ttfbs, 0.95)
    return out


def _window(where: LogFilter, bucket: float) -> dict[str, Any]:
    since, until = where.window()
    return {"since": iso_time(since), "until": iso_time(until),
            "bucket_seconds": bucket}


def _empty_series(where: LogFilter, bucket: float) -> list[dict[str, Any]]:
    since, until = where.window()
    count = max(1, math.ceil((until - since) / bucket))
    return [{"ts": since + i * bucket, "time": iso_time(since + i * bucket),
             "requests": 0, "errors": 0, "cost_usd": 0.0, "output_tokens": 0}
            for i in range(count)]


_AFTER_TIME = operator.itemgetter(*COLUMNS[1:])  # "time" is COLUMNS[0]: _packed keeps it apart
_INDEX = {name: i for i, name in enumerate(COLUMNS)}
_TS, _RID = _INDEX["ts"], _INDEX["request_id"]
Row = tuple[Any, ...]
_WRITE_SLICE = 64  # rows (~1 µs each) kept between two yields


_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder(Row).decode


def _packed(entry: Entry) -> bytes:
    # A kept entry is its row in MessagePack: ~150 bytes, where a tuple of Python objects
    # took ~540 (a float is 24 bytes, a short string ~60), so 10,000 entries hold 1.5 MB
    # rather than 5.4; and bytes are never tracked by the garbage collector.
    try:
        rest: Row = _AFTER_TIME(entry)
    except KeyError:  # an entry from elsewhere than the access log may lack a column
        rest = tuple(entry.get(c) for c in COLUMNS[1:])
    ts, time = rest[_TS - 1], entry.get("time")
    if isinstance(ts, float) and time == iso_time(ts):
        time = None  # "time" is ts formatted: formatted again when read
    return _pack((time, *rest))


def _entry(row: Row) -> Entry:
    entry = dict(zip(COLUMNS, row, strict=True))
    if entry["time"] is None and isinstance(entry["ts"], float):
        entry["time"] = iso_time(entry["ts"])
    entry["failovers"] = list(entry["failovers"] or ())
    return entry


class _RowView(Mapping[str, Any]):
    # A stored row read by column name, for LogFilter.matches: no dict per row scanned.
    __slots__ = ("row",)

    def __init__(self) -> None:
        self.row: Row = ()

    def __getitem__(self, key: str) -> Any:
        return self.row[_INDEX[key]]

    def __iter__(self) -> Iterator[str]:
        return iter(COLUMNS)

    def __len__(self) -> int:
        return len(COLUMNS)


class MemoryLogStore:
    """The last ``capacity`` entries in memory: enough for the dashboard and a demo.

    Entries are kept as their :data:`COLUMNS` in MessagePack (~150 bytes each: 1.5 MB
    for 10,000, where dicts took ~10 MB) and become dicts again only when read.

    Parameters:
        capacity: entries kept; the oldest go first.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = at_least("MemoryLogStore", "capacity", capacity, 1)
        self._ring: collections.deque[bytes] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<MemoryLogStore entries={len(self._ring)} capacity={self.capacity}>"

    def __len__(self) -> int:
        return len(self._ring)

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def write(self, entries: Sequence[Entry]) -> None:
        # A slice of rows between yields: a 500-entry batch turned into rows in one go
        # held the event loop for ~0.45 ms, a request's whole latency at c=1.
        await in_slices(entries, _WRITE_SLICE, self._keep)

    def _keep(self, entries: Sequence[Entry]) -> None:
        rows = [_packed(e) for e in entries]
        with self._lock:
            self._ring.extend(rows)

    def _select(self, where: LogFilter) -> list[Row]:
        with self._lock:
            snapshot = list(self._ring)
        view = _RowView()
        out = []
        for packed in snapshot:
            view.row = row = _unpack(packed)
            if where.matches(view):
                out.append(row)
        return out

    async def entries(self, where: LogFilter, *, limit: int, cursor: str | None = None,
                      offset: int = 0) -> LogPage:
        rows = self._select(where)
        rows.sort(key=lambda r: (r[_TS], r[_RID]), reverse=True)
        if cursor is not None:
            after = decode_cursor(cursor)
            rows = [r for r in rows if (r[_TS], r[_RID]) < after]
        page = [_entry(r) for r in rows[offset:offset + limit + 1]]
        more = len(page) > limit
        page = page[:limit]
        return LogPage(page, encode_cursor(page[-1]) if more and page else None)

    async def analytics(self, where: LogFilter, *, bucket: float) -> dict[str, Any]:
        rows = [_entry(r) for r in self._select(where)]
        by_account: dict[Any, list[Entry]] = collections.defaultdict(list)
        by_model: dict[Any, list[Entry]] = collections.defaultdict(list)
        since, _ = where.window()
        series = _empty_series(where, bucket)
        for e in rows:
            by_account[e["account"]].append(e)
            by_model[e["model"]].append(e)
            point = series[min(int((e["ts"] - since) // bucket), len(series) - 1)]
            point["requests"] += 1
            point["errors"] += e["error"]
            point["cost_usd"] += e["cost_usd"] or 0.0
            point["output_tokens"] += e["output_tokens"] or 0
        for point in series:
            point["cost_usd"] = round(point["cost_usd"], 6)
        return {"window": _window(where, bucket), "totals": _summary(rows),
                "by_account": _groups("account", by_account),
                "by_model": _groups("model", by_model), "series": series}


def _groups(key: str, groups: Mapping[Any, list[Entry]]) -> list[dict[str, Any]]:
    out = [{key: name, **_summary(rows)} for name, rows in groups.items()]
    out.sort(key=lambda g: (-g["requests"], str(g[key])))
    return out


# -- DuckDB ---------------------------------------------------------------------------------

_SQL_TYPES = {
    "time": "TIMESTAMP", "ts": "DOUBLE", "request_id": "VARCHAR", "route": "VARCHAR",
    "method": "VARCHAR", "model": "VARCHAR", "account": "VARCHAR", "stream": "BOOLEAN",
    "status": "INTEGER", "error": "BOOLEAN", "error_type": "VARCHAR",
    "client_disconnected": "BOOLEAN", "attempts": "INTEGER", "failovers": "VARCHAR",
    "latency": "DOUBLE", "ttfb": "DOUBLE", "upstream_latency": "DOUBLE",
    "input_tokens": "BIGINT", "output_tokens": "BIGINT", "cache_read_tokens": "BIGINT",
    "cache_write_tokens": "BIGINT", "cost_usd": "DOUBLE", "failover_count": "INTEGER",
}
_TABLE = "access_log"
_STORED = (*COLUMNS, "failover_count")
_SUMMARY_SQL = f"""
    count(*) AS requests, count(*) FILTER (WHERE error) AS errors,
    count(*) FILTER (WHERE client_disconnected) AS client_disconnects,
    coalesce(sum(failover_count), 0) AS failovers,
    {", ".join(f"coalesce(sum({k}), 0) AS {k}" for k in TOKEN_KINDS)},
    coalesce(sum(cost_usd), 0.0) AS cost_usd,
    count(*) FILTER (WHERE cost_usd IS NULL AND NOT ({" AND ".join(
        f"{k} IS NULL" for k in TOKEN_KINDS)})) AS unpriced_requests,
    quantile_cont(latency, 0.5) AS latency_p50, quantile_cont(latency, 0.95) AS latency_p95,
    quantile_cont(ttfb, 0.5) AS ttfb_p50, quantile_cont(ttfb, 0.95) AS ttfb_p95"""
# SQL is only ever assembled from the constants here; values travel as parameters.
# One INSERT of column lists: row-by-row executemany is ~50x slower.
_INSERT = (
    f"INSERT INTO {_TABLE} ({', '.join(_STORED)}) SELECT "  # noqa: S608
    + ", ".join("make_timestamp(CAST(round(ts * 1000000) AS BIGINT))" if c == "time" else c
                for c in _STORED)
    + " FROM (SELECT "
    + ", ".join(f"unnest(CAST(${c} AS {_SQL_TYPES[c]}[])) AS {c}" for c in _STORED if c != "time")
    + ")")
_SELECT = ", ".join(c for c in COLUMNS if c != "time")
_SUMMARY_KEYS = ("requests", "errors", "client_disconnects", "failovers", *TOKEN_KINDS,
                 "cost_usd", "unpriced_requests", "latency_p50", "latency_p95", "ttfb_p50",
                 "ttfb_p95")


def _where_sql(where: LogFilter, mark: str = "?") -> tuple[str, list[Any]]:
    # `mark` is the driver's placeholder: DuckDB's "?", psycopg's "%s".
    clauses: list[str] = []
    params: list[Any] = []
    if where.since is not None:
        clauses.append(f"ts >= {mark}")
        params.append(where.since)
    if where.until is not None:
        clauses.append(f"ts < {mark}")
        params.append(where.until)
    for column, values in (("account", where.accounts), ("model", where.models)):
        if values:
            clauses.append(f"{column} IN ({', '.join([mark] * len(values))})")
            params.extend(values)
    if where.statuses:
        clauses.append("(" + " OR ".join(f"status BETWEEN {mark} AND {mark}"
                                         for _ in where.statuses) + ")")
        for lo, hi in where.statuses:
            params += [lo, hi]
    return (" AND ".join(clauses) or "TRUE"), params


def page_sql(where: LogFilter, cursor: str | None, limit: int, offset: int, *, select: str,
             table: str, mark: str = "?") -> tuple[str, list[Any]]:
    """The query for a page of entries newest first, one more than ``limit`` (to tell
    whether a next page exists), continuing after ``cursor``; ``mark`` as in _where_sql."""
    sql, params = _where_sql(where, mark)
    if cursor is not None:
        ts, rid = decode_cursor(cursor)
        sql += f" AND (ts < {mark} OR (ts = {mark} AND request_id < {mark}))"
        params += [ts, ts, rid]
    query = (f"SELECT {select} FROM {table} WHERE {sql} "  # noqa: S608
             f"ORDER BY ts DESC, request_id DESC LIMIT {mark} OFFSET {mark}")
    return query, [*params, limit + 1, offset]


def page_of(found: Sequence[Mapping[str, Any]], limit: int) -> LogPage:
    """A :class:`LogPage` from the rows :func:`page_sql` found (column name -> value)."""
    page: list[Entry] = [{c: iso_time(e["ts"]) if c == "time" else e[c] for c in COLUMNS}
                         for e in found[:limit]]
    return LogPage(page, encode_cursor(page[-1]) if len(found) > limit and page else None)


class DuckDBLogStore:
    """The access log in a DuckDB file (table ``access_log``), queryable with SQL.

    Needs the ``duckdb`` extra. DuckDB lets one process write a file at a time, so
    give each server its own file. Every call runs in a worker thread.

    Parameters:
        path: the database file (created with its table when missing), or ``":memory:"``.
    """

    def __init__(self, path: str | Path) -> None:
        if not isinstance(path, str | Path) or not str(path).strip():
            raise ConfigError(f"DuckDBLogStore.path: must be a file path or ':memory:' "
                              f"(got {path!r})")
        try:
            import duckdb  # noqa: F401
        except ImportError as exc:
            raise ConfigError("the DuckDB access log needs duckdb: "
                              "pip install 'ccrotate[duckdb]'") from exc
        self.path = path if path == ":memory:" else Path(path).expanduser()
        self._conn: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<DuckDBLogStore {str(self.path)!r}>"

    async def _run(self, fn: Callable[[Any], Any]) -> Any:
        def call() -> Any:
            with self._lock:
                if self._conn is None:
                    raise RuntimeError("the DuckDB access log is not open")
                return fn(self._conn)
        return await anyio.to_thread.run_sync(call)

    async def open(self) -> None:
        def connect() -> None:
            import duckdb
            if isinstance(self.path, Path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = duckdb.connect(str(self.path))
            columns = ", ".join(f"{c} {_SQL_TYPES[c]}" for c in _STORED)
            conn.execute(f"CREATE TABLE IF NOT EXISTS {_TABLE} ({columns})")
            with self._lock:
                self._conn = conn
        await anyio.to_thread.run_sync(connect)

    async def aclose(self) -> None:
        def close(conn: Any) -> None:
            conn.close()
        if self._conn is not None:
            await self._run(close)
            self._conn = None

    async def write(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        params: dict[str, list[Any]] = {c: [e[c] for e in entries]
                                         for c in _STORED if c not in ("time", "failover_count")}
        params["failover_count"] = [len(e["failovers"]) for e in entries]
        params["failovers"] = [json.dumps(e["failovers"]) for e in entries]
        await self._run(lambda conn: conn.execute(_INSERT, params))

    async def entries(self, where: LogFilter, *, limit: int, cursor: str | None = None,
                      offset: int = 0) -> LogPage:
        query, params = page_sql(where, cursor, limit, offset, select=_SELECT, table=_TABLE)
        rows = await self._run(lambda c: c.execute(query, params).fetchall())
        names = [c for c in COLUMNS if c != "time"]
        found = []
        for row in rows:
            e = dict(zip(names, row, strict=True))
            e["failovers"] = json.loads(e["failovers"] or "[]")
            found.append(e)
        return page_of(found, limit)

    async def analytics(self, where: LogFilter, *, bucket: float) -> dict[str, Any]:
        since, _ = where.window()
        sql, params = _where_sql(where)
        groups = (
            "SELECT GROUPING(account) AS ga, GROUPING(model) AS gm, account, model, "  # noqa: S608
            f"{_SUMMARY_SQL} FROM {_TABLE} WHERE {sql} "
            "GROUP BY GROUPING SETS ((), (account), (model))")
        series_sql = (
            "SELECT CAST(floor((ts - ?) / ?) AS BIGINT) AS b, count(*), "  # noqa: S608
            "count(*) FILTER (WHERE error), coalesce(sum(cost_usd), 0.0), "
            f"coalesce(sum(output_tokens), 0) FROM {_TABLE} WHERE {sql} GROUP BY b")

        def query(conn: Any) -> tuple[list[Any], list[Any]]:
            return (conn.execute(groups, params).fetchall(),
                    conn.execute(series_sql, [since, bucket, *params]).fetchall())

        group_rows, series_rows = await self._run(query)
        return sql_analytics(where, bucket, group_rows, series_rows)


def sql_analytics(where: LogFilter, bucket: float, group_rows: Iterable[Sequence[Any]],
                  series_rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """The analytics answer from SQL rows (shared by the SQL stores).

    ``group_rows``: ``(grouping(account), grouping(model), account, model, *summary)`` over
    the grouping sets ``(), (account), (model)``; ``series_rows``: ``(bucket index,
    requests, errors, cost, output tokens)``.
    """
    totals = dict(zip(_SUMMARY_KEYS, [0] * len(_SUMMARY_KEYS), strict=True))
    by_account: list[dict[str, Any]] = []
    by_model: list[dict[str, Any]] = []
    for ga, gm, account, model, *values in group_rows:
        summary = _clean(dict(zip(_SUMMARY_KEYS, values, strict=True)))
        if ga and gm:
            totals = summary
        elif not ga:
            by_account.append({"account": account, **summary})
        else:
            by_model.append({"model": model, **summary})
    by_account.sort(key=lambda g: (-g["requests"], str(g["account"])))
    by_model.sort(key=lambda g: (-g["requests"], str(g["model"])))
    series = _empty_series(where, bucket)
    for b, requests, errors, cost, output in series_rows:
        point = series[min(max(int(b), 0), len(series) - 1)]
        # int()/float(): drivers may hand back Decimal for sums.
        point["requests"] += int(requests)
        point["errors"] += int(errors)
        point["cost_usd"] = round(point["cost_usd"] + float(cost), 6)
        point["output_tokens"] += int(output)
    return {"window": _window(where, bucket), "totals": _clean(totals),
            "by_account": by_account, "by_model": by_model, "series": series}


def _clean(summary: dict[str, Any]) -> dict[str, Any]:
    for key, value in summary.items():
        if key == "cost_usd":
            summary[key] = round(float(value or 0.0), 6)
        elif key.endswith(("_p50", "_p95")):
            summary[key] = None if value is None else float(value)
        else:
            summary[key] = int(value or 0)
    return summary


def open_store(path: str | Path | None, *, capacity: int = 10_000) -> LogStore:
    """The store for ``path``: DuckDB when a path is given, else a memory ring."""
    if path is None:
        return MemoryLogStore(capacity)
    return DuckDBLogStore(path)
