"""The query API: filters, pagination, analytics and 400s, on every store: the memory ring,
DuckDB and PostgreSQL (the same answers from each)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from ccrotate import RequestRecord
from ccrotate._observe.entries import entry_from_record
from ccrotate._observe.logs_api import ReadGuard, logs_app
from ccrotate._observe.logstore import DuckDBLogStore, MemoryLogStore
from ccrotate._observe.pgstore import PostgresLogStore
from ccrotate._observe.pricing import PricingTable
from ccrotate._proxy.auth import ClientAuth
from ccrotate._proxy.record import Failover

NOW = 1_790_003_600.0
SONNET, HAIKU = "claude-sonnet-4-6", "claude-haiku-4-5"
STATUSES = {3: 429, 7: 529, 8: 499}


def make_entries() -> list[dict[str, Any]]:
    """Ten requests, one every 5 minutes over the last 50 minutes; ids r0 (oldest)..r9."""
    pricing = PricingTable.load()
    out = []
    for i in range(10):
        status = STATUSES.get(i, 200)
        rec = RequestRecord(
            request_id=f"r{i}", started_at=NOW - 3000 + i * 300, route="messages",
            model=HAIKU if i % 4 == 0 else SONNET, account="abc"[i % 3], status=status,
            attempts=2 if i == 5 else 1, latency=0.1 * (i + 1), ttfb=0.05 * (i + 1),
            input_tokens=None if status != 200 else 100 * (i + 1),
            output_tokens=None if status != 200 else 10 * (i + 1),
            client_disconnected=status == 499,
            error_type="overloaded_error" if status == 529 else None)
        if i == 5:
            rec.failovers.append(Failover("a", "rate_limited", 429))
        out.append(entry_from_record(rec, pricing))
    return out


ENTRIES = make_entries()


@pytest.fixture(params=["memory", "duckdb", "postgres"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    if request.param == "duckdb":
        pytest.importorskip("duckdb")
        store: Any = DuckDBLogStore(":memory:")
    elif request.param == "postgres":
        store = PostgresLogStore(request.getfixturevalue("postgres_url"))
    else:
        store = MemoryLogStore()
    await store.open()
    await store.write(ENTRIES[:4])
    await store.write(ENTRIES[4:])
    transport = httpx.ASGITransport(app=logs_app(store, clock=lambda: NOW))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c
    await store.aclose()


async def ids(client: httpx.AsyncClient, query: str) -> list[str]:
    r = await client.get("/entries?" + query)
    assert r.status_code == 200, r.text
    return [e["request_id"] for e in r.json()["entries"]]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


async def test_entries_newest_first_with_every_field(client: httpx.AsyncClient) -> None:
    """Without filters every entry comes back, newest first, as the log wrote it."""
    r = await client.get("/entries")
    body = r.json()
    assert [e["request_id"] for e in body["entries"]] == [f"r{i}" for i in range(9, -1, -1)]
    assert body["next_cursor"] is None
    assert body["entries"][4] == ENTRIES[5]
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(("query", "expected"), [
    ("account=a", ["r9", "r6", "r3", "r0"]),
    ("account=b&account=c", ["r8", "r7", "r5", "r4", "r2", "r1"]),
    (f"model={HAIKU}", ["r8", "r4", "r0"]),
    ("status=429", ["r3"]),
    ("status=5xx", ["r7"]),
    ("status=4xx", ["r8", "r3"]),
    ("status=429&status=529", ["r7", "r3"]),
    (f"since={NOW - 900:.0f}", ["r9", "r8", "r7"]),
    ("since=15m", ["r9", "r8", "r7"]),
    (f"since={iso(NOW - 900)}", ["r9", "r8", "r7"]),
    ("since=2026-09-21T14:58:20", ["r9", "r8", "r7"]),  # no zone: UTC
    (f"until={NOW - 2400:.0f}", ["r1", "r0"]),  # exclusive
    (f"since=40m&until={iso(NOW - 1800)}&account=a", ["r3"]),
    ("account=nobody", []),
])
async def test_filters(client: httpx.AsyncClient, query: str, expected: list[str]) -> None:
    """since/until (ISO, epoch, age), account, model and status select the right entries."""
    assert await ids(client, query) == expected


async def test_cursor_pages_cover_everything_once(client: httpx.AsyncClient) -> None:
    """Following next_cursor visits each entry once, in order, and ends with null."""
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = (await client.get("/entries?" + query)).json()
        seen += [e["request_id"] for e in body["entries"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"r{i}" for i in range(9, -1, -1)]
    assert await ids(client, "limit=3&offset=3") == ["r6", "r5", "r4"]
    assert await ids(client, "account=a&limit=2&offset=2") == ["r3", "r0"]


@pytest.mark.parametrize(("query", "parameter"), [
    ("since=yesterday", "since"),
    ("until=12:00-ish", "until"),
    ("since=1790000000000", "since"),
    ("since=10m&until=20m", "until"),
    ("status=600", "status"),
    ("status=ok", "status"),
    ("limit=0", "limit"),
    ("limit=1001", "limit"),
    ("limit=ten", "limit"),
    ("offset=-1", "offset"),
    ("cursor=not-a-cursor", "cursor"),
    ("cursor=WzEsIDJd&offset=1", "offset"),
    ("account=", "account"),
    ("acount=a", "acount"),
])
async def test_bad_values_get_400_naming_the_parameter(client: httpx.AsyncClient, query: str,
                                                       parameter: str) -> None:
    """Each unusable value is refused with a 400 whose body names the parameter."""
    r = await client.get("/entries?" + query)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["parameter"] == parameter
    assert error["message"].startswith(f"ccrotate logs: {parameter}:")


async def test_analytics_totals_and_breakdowns(client: httpx.AsyncClient) -> None:
    """Totals, per-account and per-model figures and the time series add up over the window."""
    r = await client.get("/analytics?bucket=600")
    assert r.status_code == 200
    body = r.json()
    totals = body["totals"]
    assert totals["requests"] == 10
    assert totals["errors"] == 2  # the 429 and the 529; the 499 is a disconnect
    assert totals["client_disconnects"] == 1
    assert totals["failovers"] == 1
    ok = [e for e in ENTRIES if e["status"] == 200]
    assert totals["input_tokens"] == sum(e["input_tokens"] for e in ok)
    assert totals["output_tokens"] == sum(e["output_tokens"] for e in ok)
    assert totals["cost_usd"] == pytest.approx(sum(e["cost_usd"] for e in ok), abs=1e-6)
    assert totals["unpriced_requests"] == 0
    assert totals["latency_p50"] == pytest.approx(0.55)
    assert totals["latency_p95"] == pytest.approx(0.955)
    assert totals["ttfb_p95"] == pytest.approx(0.4775)
    accounts = {g["account"]: g for g in body["by_account"]}
    assert [g["account"] for g in body["by_account"]] == ["a", "b", "c"]  # most requests first
    assert (accounts["a"]["requests"], accounts["b"]["requests"], accounts["c"]["requests"]) == (
        4, 3, 3)
    assert accounts["a"]["errors"] == 1
    models = {g["model"]: g for g in body["by_model"]}
    assert models[HAIKU]["requests"] == 3
    assert models[HAIKU]["cost_usd"] == pytest.approx(
        sum(e["cost_usd"] for e in ok if e["model"] == HAIKU), abs=1e-6)
    series = body["series"]
    assert len(series) == 6
    assert body["window"]["bucket_seconds"] == 600
    assert [p["requests"] for p in series] == [0, 2, 2, 2, 2, 2]
    assert sum(p["errors"] for p in series) == 2
    assert sum(p["cost_usd"] for p in series) == pytest.approx(totals["cost_usd"], abs=1e-6)


async def test_analytics_window_and_filters(client: httpx.AsyncClient) -> None:
    """The default window is the last hour; filters narrow it; an empty window is all zeros."""
    body = (await client.get("/analytics")).json()
    assert body["window"] == {"since": "2026-09-21T14:13:20.000Z",
                              "until": "2026-09-21T15:13:20.000Z", "bucket_seconds": 30}
    assert body["totals"]["requests"] == 10
    assert len(body["series"]) == 120  # 3600 s in automatic 30 s buckets
    narrow = (await client.get("/analytics?account=a&since=30m")).json()
    assert narrow["totals"]["requests"] == 2
    assert [g["account"] for g in narrow["by_account"]] == ["a"]
    empty = (await client.get(f"/analytics?until={NOW - 4000:.0f}")).json()
    assert empty["totals"]["requests"] == 0
    assert empty["totals"]["latency_p50"] is None
    assert empty["by_account"] == []
    bad = await client.get("/analytics?since=1d&bucket=1")
    assert bad.status_code == 400
    assert bad.json()["error"]["parameter"] == "bucket"


async def test_read_guard_loopback_or_key() -> None:
    """Without a key configured only loopback peers read; with one, the key decides."""
    app = logs_app(MemoryLogStore())
    remote = ("203.0.113.9", 40000)

    async def get(guarded: Any, client: tuple[str, int], **headers: str) -> int:
        transport = httpx.ASGITransport(app=guarded, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return (await c.get("/entries", headers=headers)).status_code

    open_local = ReadGuard(app, authorize=None)
    assert await get(open_local, ("127.0.0.1", 5000)) == 200
    assert await get(open_local, remote) == 403
    keyed = ReadGuard(app, authorize=ClientAuth(["reader-key-0123456789"]))
    assert await get(keyed, ("127.0.0.1", 5000)) == 401
    assert await get(keyed, remote, authorization="Bearer reader-key-0123456789") == 200
    assert await get(keyed, remote, **{"x-api-key": "wrong"}) == 401
