"""The access log: rows match real traffic, cost from the pricing file, sinks, batching, DuckDB."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
import tracemalloc
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from ccrotate import AccountPool, ConfigError, RequestRecord, Rotator, Settings
from ccrotate._observe.accesslog import AccessLog, LoggingSink, StreamSink
from ccrotate._observe.entries import COLUMNS, LogFilter, entry_from_record
from ccrotate._observe.logstore import DuckDBLogStore, MemoryLogStore
from ccrotate._observe.pricing import PricingTable
from ccrotate._proxy.record import Failover, new_request_id
from ccrotate.testing import RateLimited, Reply
from conftest import HELLO, KEY_A, KEY_C, MODEL, TOKEN_B, Stack

PRICING = PricingTable.load()


def record(i: int = 0, **kw: Any) -> RequestRecord:
    fields: dict[str, Any] = {"request_id": f"req{i}", "started_at": 1_790_000_000.0 + i,
                              "route": "messages", "model": MODEL, "account": "a",
                              "status": 200, "attempts": 1, "latency": 0.5, "ttfb": 0.1,
                              "input_tokens": 10, "output_tokens": 5, **kw}
    return RequestRecord(**fields)


class Spy:
    """A sink that remembers every batch (optionally failing)."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = fail
        self.opened = self.closed = False

    async def open(self) -> None:
        self.opened = True

    async def write(self, entries: Sequence[dict[str, Any]]) -> None:
        if self.fail:
            raise OSError("disk full")
        self.batches.append(list(entries))

    async def aclose(self) -> None:
        self.closed = True


async def everything(store: Any) -> list[dict[str, Any]]:
    page = await store.entries(LogFilter(), limit=1000)
    return list(page.entries)


# -- rows from real traffic ------------------------------------------------------------------


async def post(client: httpx.AsyncClient, *, model: str = MODEL, stream: bool = False,
               pin: str | None = None, **body: Any) -> httpx.Response:
    headers = {"x-account-name": pin} if pin else {}
    payload = {"model": model, "max_tokens": 32, "messages": HELLO, "stream": stream, **body}
    return await client.post("/v1/messages", json=payload, headers=headers)


@pytest.fixture
def logged(serve_proxy: Any) -> tuple[Stack, AccessLog]:
    stack: Stack = serve_proxy()
    access = AccessLog(sinks=[])
    stack.proxy.observers.append(access)
    return stack, access


async def test_rows_match_the_traffic(logged: tuple[Stack, AccessLog]) -> None:
    """A failover, a stream and a client error each leave one row with the right fields."""
    stack, access = logged
    stack.fake.script(KEY_A, RateLimited(retry_after=30, reset_after=30))
    stack.fake.script(TOKEN_B, Reply(input_tokens=1200, output_tokens=300))
    stack.fake.script(KEY_C, Reply(input_tokens=40, output_tokens=7,
                                   cache_read_input_tokens=900,
                                   cache_creation_input_tokens=60))
    t0 = time.time()
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        first = await post(client, pin=None)
        assert first.headers["x-ccrotate-account"] == "b"
        assert (await post(client, stream=True, pin="c")).status_code == 200
        assert (await post(client, pin="c", max_tokens="many")).status_code == 400
    assert stack.wait_idle()
    with anyio.fail_after(5):
        while len(access.store) < 3:
            await access.flush()
            await anyio.sleep(0.01)
    rows = sorted(await everything(access.store), key=lambda e: e["ts"])
    assert [r["status"] for r in rows] == [200, 200, 400]
    failover, stream, bad = rows
    assert list(failover) == list(COLUMNS)
    assert failover["account"] == "b"
    assert failover["attempts"] == 2
    assert failover["failovers"] == [{"account": "a", "reason": "quota", "status": 429}]
    assert (failover["input_tokens"], failover["output_tokens"]) == (1200, 300)
    assert failover["cost_usd"] == pytest.approx((1200 * 3 + 300 * 15) / 1e6)
    assert failover["ttfb"] is not None
    assert stream["ttfb"] is not None
    assert failover["stream"] is False
    assert failover["error"] is False
    assert stream["stream"] is True
    assert stream["account"] == "c"
    assert (stream["cache_read_tokens"], stream["cache_write_tokens"]) == (900, 60)
    assert stream["cost_usd"] == pytest.approx((40 * 3 + 7 * 15 + 900 * 0.3 + 60 * 3.75) / 1e6)
    assert bad["error"] is True
    assert bad["error_type"] == "invalid_request_error"
    assert bad["cost_usd"] is None
    assert bad["input_tokens"] is None
    for row in rows:
        assert row["route"] == "messages"
        assert row["model"] == MODEL
        assert 0 <= (row["ttfb"] or 0) <= row["latency"] < 10
        assert datetime.fromisoformat(row["time"]).timestamp() == pytest.approx(row["ts"],
                                                                                abs=0.001)
        assert t0 - 1 <= row["ts"] <= time.time()
    assert len({r["request_id"] for r in rows}) == 3


async def test_cost_for_a_known_model_and_null_for_an_unknown_one(
        logged: tuple[Stack, AccessLog]) -> None:
    """claude-sonnet-4-6 is priced with cache reads and writes; an unknown model stays null."""
    stack, access = logged
    usage = Reply(input_tokens=1000, output_tokens=500, cache_read_input_tokens=2000,
                  cache_creation_input_tokens=100)
    stack.fake.script(KEY_A, usage, usage)
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        assert (await post(client, pin="a")).status_code == 200
        assert (await post(client, pin="a", model="claude-nonesuch-9")).status_code == 200
    assert stack.wait_idle()
    with anyio.fail_after(5):
        while len(access.store) < 2:
            await access.flush()
            await anyio.sleep(0.01)
    by_model = {e["model"]: e for e in await everything(access.store)}
    # $3 in, $15 out, $0.30 cache read, $3.75 cache write per million tokens.
    assert by_model[MODEL]["cost_usd"] == pytest.approx(0.011475)
    unknown = by_model["claude-nonesuch-9"]
    assert unknown["cost_usd"] is None
    assert unknown["output_tokens"] == 500


# -- pricing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "priced_as"), [
    ("claude-sonnet-4-20250514", "claude-sonnet-4"),
    ("claude-opus-4-0", "claude-opus-4"),
    ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
    ("claude-opus-4-1-20250805", "claude-opus-4-1"),
    ("claude-sonnet-4-5-latest", "claude-sonnet-4-5"),
    ("claude-opus-4-6[1m]", "claude-opus-4-6"),
])
def test_dated_and_alias_ids_find_their_model(model: str, priced_as: str) -> None:
    """Dated, -latest, [1m] and alias ids are priced as their base model."""
    assert PRICING.price_for(model) is PRICING.price_for(priced_as)
    assert PRICING.price_for(model) is not None


@pytest.mark.parametrize("model", ["claude-opus-4-9", "claude-sonnet", "gpt-4o", "claude-opus-4-",
                                   "claude-opus-4-1-extra", "", None])
def test_unknown_ids_are_not_guessed(model: str | None) -> None:
    """A near miss never borrows a neighbour's price."""
    assert PRICING.price_for(model) is None
    assert PRICING.cost(model, input_tokens=10) is None


def test_current_models_are_priced_and_no_usage_costs_nothing() -> None:
    """Every current model id is in the bundled file; a request without usage has no cost."""
    for model in ("claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-opus-4-8",
                  "claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-1",
                  "claude-sonnet-4-5", "claude-3-5-haiku"):
        assert model in PRICING, model
    assert PRICING.cost(MODEL) is None
    assert PRICING.updated


def test_long_prompt_tier() -> None:
    """claude-haiku-5-5 bills every token at the higher rate once the prompt passes 100k."""
    assert PRICING.cost("claude-haiku-5-5", input_tokens=100_000,
                        output_tokens=1000) == pytest.approx((100_000 * 0.10 + 1000 * 0.50) / 1e6)
    assert PRICING.cost("claude-haiku-5-5", input_tokens=60_000, cache_read_tokens=50_000,
                        output_tokens=1000) == pytest.approx(
        (60_000 * 0.50 + 50_000 * 0.05 + 1000 * 2.50) / 1e6)


def test_a_users_pricing_file_overrides(tmp_path: Path) -> None:
    """A pricing file of one's own is read from a path; its errors name the file and field."""
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"claude-x-1": {
        "input": 1, "output": 2, "cache_read": 0.5, "cache_write": 1.5}}}))
    table = PricingTable.load(path)
    assert table.cost("claude-x-1-20990101", input_tokens=1_000_000, output_tokens=500_000,
                      cache_read_tokens=2_000_000, cache_write_tokens=1_000_000) == 4.5
    assert table.price_for(MODEL) is None
    path.write_text(json.dumps({"models": {"claude-x-1": {"input": 1, "output": "two"}}}))
    with pytest.raises(ConfigError, match=r"prices\.json: model 'claude-x-1': 'output'"):
        PricingTable.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        PricingTable.load(tmp_path / "missing.json")


# -- sinks, batching, the service ------------------------------------------------------------


async def test_json_lines_on_the_access_logger(caplog: pytest.LogCaptureFixture) -> None:
    """Each entry is one JSON line on ``ccrotate.access``, the dict attached for handlers."""
    access = AccessLog(sinks=[LoggingSink()])
    access.on_request(record(1, failovers=[Failover("b", "overloaded", 529)]))
    access.on_request(record(2, model="claude-nonesuch-9"))
    with caplog.at_level(logging.INFO, logger="ccrotate.access"):
        assert await access.flush() == 2
    lines = [r for r in caplog.records if r.name == "ccrotate.access"]
    assert len(lines) == 2
    first = json.loads(lines[0].getMessage())
    assert list(first) == list(COLUMNS)
    assert first["failovers"] == [{"account": "b", "reason": "overloaded", "status": 529}]
    assert first["time"] == "2026-09-21T14:13:21.000Z"
    assert json.loads(lines[1].getMessage())["cost_usd"] is None
    assert lines[0].ccrotate_access == first  # type: ignore[attr-defined]


class CountingStream(io.StringIO):
    """A text stream that counts its writes and flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = self.flushes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1


async def test_stream_sink_writes_the_lines_logging_would(
        caplog: pytest.LogCaptureFixture) -> None:
    """``StreamSink(prefix="INFO ")`` gives, line for line, what ``LoggingSink`` gives
    through ``ccrotate serve``'s log format, in one write per slice and one flush a batch."""
    records = [record(i, failovers=[Failover("b", "overloaded", 529)] if i % 7 else [])
               for i in range(70)]
    stream = CountingStream()
    direct = AccessLog(sinks=[StreamSink(stream, prefix="INFO ")])
    logged = AccessLog(sinks=[LoggingSink()])
    for r in records:
        direct.on_request(r)
        logged.on_request(r)
    formatter = logging.Formatter("%(levelname)s %(message)s")
    with caplog.at_level(logging.INFO, logger="ccrotate.access"):
        assert await direct.flush() == await logged.flush() == 70
    expected = [formatter.format(r) for r in caplog.records if r.name == "ccrotate.access"]
    assert stream.getvalue().splitlines() == expected
    assert stream.getvalue().endswith("\n")
    assert (stream.writes, stream.flushes) == (5, 1)  # 16 + 16 + 16 + 16 + 6 lines


async def test_stream_sink_defaults_to_stderr_as_it_is_at_write_time(
        capsys: pytest.CaptureFixture[str]) -> None:
    """With no stream, lines go to ``sys.stderr`` as it is when written (a redirect holds)."""
    access = AccessLog(sinks=[StreamSink()])
    access.on_request(record(3))
    await access.flush()
    out, err = capsys.readouterr()
    assert out == ""
    assert json.loads(err)["request_id"] == "req3"


@pytest.mark.parametrize(("level", "lines"), [("debug", True), ("info", True),
                                              ("warning", False), ("error", False)])
def test_serve_logging_writes_access_lines_only_at_info_and_below(
        level: str, lines: bool) -> None:
    """``ccrotate serve``'s access lines: a StreamSink to stderr at ``info`` and below."""
    from ccrotate._server.app import serve_logging
    root = logging.getLogger()
    handlers, before = root.handlers[:], root.level
    try:
        sinks = serve_logging(Settings(log_level=level))
    finally:
        root.handlers[:] = handlers
        root.setLevel(before)
    if lines:
        [sink] = sinks
        assert isinstance(sink, StreamSink)
        assert sink.prefix == "INFO "
        assert sink.stream is None
    else:
        assert sinks == []


async def test_the_request_path_only_appends_to_a_bounded_buffer() -> None:
    """on_request writes nothing; past max_pending the oldest records are dropped and counted."""
    spy = Spy()
    access = AccessLog(store=MemoryLogStore(), sinks=[spy], max_pending=3)
    for i in range(5):
        access.on_request(record(i))
    assert spy.batches == []
    assert access.dropped == 2
    assert await access.flush() == 3
    assert [e["request_id"] for e in spy.batches[0]] == ["req2", "req3", "req4"]
    assert await access.flush() == 0


async def test_service_flushes_on_time_on_full_batches_and_on_exit() -> None:
    """The flusher writes every interval, early for a full batch, and what is left on shutdown."""
    spy = Spy()
    access = AccessLog(sinks=[spy], flush_interval=30, batch_size=2)
    async with anyio.create_task_group() as tg:
        await tg.start(access.run)
        assert spy.opened
        access.on_request(record(1))
        access.on_request(record(2))  # a full batch wakes the flusher now, not in 30 s
        with anyio.fail_after(2):
            while len(access.store) < 2:  # noqa: ASYNC110 - polls what the flusher wrote
                await anyio.sleep(0.005)
        access.on_request(record(3))
        tg.cancel_scope.cancel()
    assert [len(b) for b in spy.batches] == [2, 1]
    assert spy.closed


async def test_a_failing_sink_does_not_starve_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    """One sink raising is logged; the store still gets the entries."""
    access = AccessLog(sinks=[Spy(fail=True)])
    access.on_request(record(1))
    with caplog.at_level(logging.ERROR, logger="ccrotate"):
        assert await access.flush() == 1
    assert len(access.store) == 1
    assert "access log sink" in caplog.text


# -- DuckDB ----------------------------------------------------------------------------------


async def test_duckdb_rows_are_queryable_with_sql(tmp_path: Path) -> None:
    """Entries land in the access_log table with real timestamps; reopening appends."""
    duckdb = pytest.importorskip("duckdb")
    path = tmp_path / "logs" / "access.duckdb"
    for batch in ([record(1, failovers=[Failover("b", "rate_limited", 429)]),
                   record(2, model="claude-nonesuch-9", status=529, error_type="overloaded_error",
                          input_tokens=None, output_tokens=None)],
                  [record(3, client_disconnected=True, status=499)]):
        access = AccessLog(store=DuckDBLogStore(path), sinks=[])
        async with anyio.create_task_group() as tg:
            await tg.start(access.run)
            for r in batch:
                access.on_request(r)
            tg.cancel_scope.cancel()
    with duckdb.connect(str(path), read_only=True) as conn:
        rows = conn.execute(
            "SELECT request_id, strftime(time, '%Y-%m-%dT%H:%M:%S'), account, status, error, "
            "client_disconnected, failover_count, failovers, cost_usd FROM access_log "
            "ORDER BY ts").fetchall()
    assert [r[0] for r in rows] == ["req1", "req2", "req3"]
    assert rows[0][1] == "2026-09-21T14:13:21"
    assert rows[0][6] == 1
    assert json.loads(rows[0][7]) == [{"account": "b", "reason": "rate_limited", "status": 429}]
    assert rows[0][8] == pytest.approx((10 * 3 + 5 * 15) / 1e6)
    assert rows[1][3:5] == (529, True)
    assert rows[1][8] is None
    assert rows[2][3:6] == (499, False, True)


def test_duckdb_path_without_duckdb_is_a_config_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pool: AccountPool) -> None:
    """Asking for a DuckDB log without the extra fails at build time with the install hint."""
    monkeypatch.setitem(sys.modules, "duckdb", None)
    with pytest.raises(ConfigError, match=r"ccrotate\[duckdb\]"):
        Rotator(Settings(access_log_path=tmp_path / "a.duckdb"), pool=pool)


def test_reference_server_wires_the_log(tmp_path: Path, pool: AccountPool) -> None:
    """The rotator adds the access log as observer and service, DuckDB when configured."""
    plain = Rotator(Settings(), pool=pool)
    access = plain.access_log
    assert access in plain.proxy.observers
    assert access in plain.services
    assert isinstance(access.store, MemoryLogStore)
    pytest.importorskip("duckdb")
    configured = Rotator(Settings(access_log_path=tmp_path / "a.duckdb"), pool=AccountPool())
    assert isinstance(configured.access_log.store, DuckDBLogStore)


# -- the in-memory store's compact rows ------------------------------------------------------


async def test_memory_store_gives_back_exactly_what_it_was_given() -> None:
    """Kept as MessagePack, entries come back equal: failovers, nulls, costs, and a
    ``time`` that is not ``ts`` formatted (an entry from elsewhere) kept as it was."""
    entries = [entry_from_record(record(i, failovers=[Failover("b", "overloaded", 529)]
                                        if i == 1 else [], status=200 if i else 529,
                                        error_type=None if i else "overloaded_error",
                                        latency=0.25 + i / 3,
                                        model=MODEL if i < 2 else "claude-nonesuch-9"), PRICING)
               for i in range(3)]
    foreign = {**entries[2], "request_id": "x", "time": "yesterday", "ts": 1_790_000_009.5}
    partial = {"ts": 1_790_000_010.25, "request_id": "y", "status": 200}
    store = MemoryLogStore()
    await store.write([*entries, foreign, partial])
    page = await store.entries(LogFilter(), limit=10)
    got = {e["request_id"]: e for e in page.entries}
    for entry in entries:
        assert got[entry["request_id"]] == entry
    assert got["x"] == foreign
    assert got["y"] == {**dict.fromkeys(COLUMNS), "failovers": [], **partial,
                        "time": "2026-09-21T14:13:30.250Z"}


async def test_memory_store_keeps_an_entry_in_under_200_bytes() -> None:
    """10,000 entries (the default capacity) hold under 2 MB: the server's resident size."""
    entries = [entry_from_record(record(i, latency=0.1 + i / 7, ttfb=0.05 + i / 11,
                                        upstream_latency=0.04 + i / 13,
                                        request_id=f"{i:016x}"), PRICING)
               for i in range(5000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = MemoryLogStore()
        await store.write(entries)
        del entries
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(store) == 5000
    assert kept / 5000 < 200


def test_request_ids_are_unique_in_a_process_and_across_a_fork() -> None:
    """16 hex digits; no repeats among 100,000, nor between a forked worker and its parent
    (``random`` is reseeded in the child, as ``serve --workers`` may fork)."""
    ids = {new_request_id() for _ in range(100_000)}
    assert len(ids) == 100_000
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in list(ids)[:100])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, " ".join(new_request_id() for _ in range(1000)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_request_id() for _ in range(1000)}
    assert len(child) == 1000
    assert not child & parent
