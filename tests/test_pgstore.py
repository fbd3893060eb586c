"""The PostgreSQL access log: replicas share it, and a database that goes away loses no request.

The query API itself (filters, cursors, analytics) runs on PostgreSQL in test_logs_api.py;
here: the table, two servers writing one log, an outage (the server stopped, then started
again on the same data dir and port), settings and secrecy. Every test runs a real server.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from ccrotate import (
    AccountPool,
    ConfigError,
    PostgresLogStore,
    Rotator,
    Settings,
    load_settings,
)
from ccrotate._observe.accesslog import AccessLog, WriterSink
from ccrotate._observe.entries import COLUMNS, LogFilter
from ccrotate._observe.logs_api import logs_app
from ccrotate.testing import FakeUpstream, ServerHandle
from conftest import HELLO, MODEL, Stack, serve_replicas
from test_accesslog import Spy, record

pytest.importorskip("psycopg")


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


async def wait_until(condition: Any, what: str) -> None:
    """Poll ``condition`` (work done by background tasks); fail with ``what`` after 20 s."""
    with anyio.fail_after(20):
        while not condition():  # noqa: ASYNC110 - polls what the writer task does
            await anyio.sleep(0.02)
    assert condition(), what


async def test_table_rows_and_sql(postgres_url: str) -> None:
    """Entries land in access_log with a real timestamp and JSON failovers; reopening appends
    and a retried batch is not written twice."""
    from ccrotate._proxy.record import Failover

    store = PostgresLogStore(postgres_url)
    assert isinstance(store, WriterSink)
    access = AccessLog(store=store, sinks=[])
    async with anyio.create_task_group() as tg:
        await tg.start(access.run)
        access.on_request(record(1, failovers=[Failover("b", "rate_limited", 429)]))
        access.on_request(record(2, status=529, error_type="overloaded_error"))
        tg.cancel_scope.cancel()  # the final flush and aclose() write what is left
    assert store.written == 2
    again = PostgresLogStore(postgres_url)
    await again.open()
    repeats = (await again.entries(LogFilter(), limit=100)).entries
    await again.write([*repeats, _entry(3)])  # as a retried batch would: 2 repeats, 1 new
    await again.flush()
    await again.aclose()
    got = rows(postgres_url, "SELECT request_id, to_char(time AT TIME ZONE 'UTC', "
               "'YYYY-MM-DD\"T\"HH24:MI:SS'), status, error, failover_count, failovers "
               "FROM access_log ORDER BY ts")
    assert [r[0] for r in got] == ["req1", "req2", "req3"]
    assert got[0][1] == "2026-09-21T14:13:21"
    assert got[0][4:] == (1, [{"account": "b", "reason": "rate_limited", "status": 429}])
    assert got[1][2:4] == (529, True)
    indexes = {r[0] for r in rows(postgres_url, "SELECT indexname FROM pg_indexes "
                                                "WHERE tablename = 'access_log'")}
    assert {"access_log_pkey", "access_log_account_ts", "access_log_model_ts",
            "access_log_status_ts"} <= indexes


def _entry(i: int) -> dict[str, Any]:
    from ccrotate._observe.entries import entry_from_record

    return entry_from_record(record(i), None)


async def test_replicas_starting_together_create_the_table_once(postgres_url: str) -> None:
    """Several stores opening at once on an empty database all start (the DDL is serialised)."""
    stores = [PostgresLogStore(postgres_url) for _ in range(4)]
    async with anyio.create_task_group() as tg:
        for store in stores:
            tg.start_soon(store.open)
    assert all(store.connected for store in stores)
    for i, store in enumerate(stores):
        await store.write([_entry(i)])
        await store.aclose()
    assert rows(postgres_url, "SELECT count(*) FROM access_log") == [(4,)]


# -- two replicas, one log -------------------------------------------------------------------


@pytest.fixture
def replicas(upstream_server: ServerHandle[FakeUpstream],
             postgres_url: str) -> Iterator[list[tuple[Rotator, str]]]:
    """Two reference servers (own pools, own processes' worth of state) sharing one log."""
    with serve_replicas(upstream_server, access_log_url=postgres_url) as served:
        yield served


async def test_two_replicas_read_each_others_traffic(
        replicas: list[tuple[Rotator, str]]) -> None:
    """Requests served by either replica show up in /logs and /logs/analytics of both."""
    body = {"model": MODEL, "max_tokens": 8, "messages": HELLO}
    async with httpx.AsyncClient(timeout=10) as client:
        for (_, url), count in zip(replicas, (2, 3), strict=True):
            for _ in range(count):
                answer = await client.post(url + "/api/v1/messages", json=body)
                assert answer.status_code == 200, answer.text
        for rotator, url in replicas:
            assert isinstance(rotator.access_log.store, PostgresLogStore)

            accounts: list[str] = []
            with anyio.fail_after(20):  # the other replica's writer may still be at it
                while len(accounts) < 5:
                    page = (await client.get(url + "/logs/entries")).json()["entries"]
                    accounts = [e["account"] for e in page]
                    await anyio.sleep(0.05)
            assert sorted(accounts) == ["one", "one", "two", "two", "two"]
            totals = (await client.get(url + "/logs/analytics?since=1h")).json()
            assert {g["account"]: g["requests"] for g in totals["by_account"]} == {
                "one": 2, "two": 3}


# -- the database goes away and comes back -------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[Any]:
    """A PostgreSQL server of this test's own, to stop and start."""
    from pgserver import running_server

    with running_server() as server:
        yield server


async def test_an_outage_buffers_bounded_counts_drops_and_flushes_on_return(
        own_server: Any, proxy_server: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """With the database stopped, requests still succeed; entries wait in a bounded buffer
    (the oldest dropped and counted), /logs answers 503, and once the server is back the
    writer reconnects and writes the rest."""
    store = PostgresLogStore(own_server.url, max_buffer=4, retry_base=0.02, retry_cap=0.2,
                             connect_timeout=2)
    spy = Spy()
    access = AccessLog(store=store, sinks=[spy], flush_interval=0.02)
    proxy_server.proxy.observers.append(access)
    logs = httpx.AsyncClient(transport=httpx.ASGITransport(app=logs_app(store)),
                             base_url="http://t")
    body = {"model": MODEL, "max_tokens": 8, "messages": HELLO}
    async with (anyio.create_task_group() as tg, logs,
                httpx.AsyncClient(base_url=proxy_server.url, timeout=10) as client):
        await tg.start(access.run)

        async def send(n: int) -> None:
            for _ in range(n):
                answer = await client.post("/v1/messages", json=body)
                assert answer.status_code == 200, answer.text  # no request fails

        await send(2)
        await wait_until(lambda: store.written == 2, "written while the database is up")
        own_server.stop()
        with caplog.at_level(logging.WARNING, logger="ccrotate"):
            await send(6)
            await wait_until(lambda: sum(map(len, spy.batches)) == 8, "all 8 logged")
            await wait_until(lambda: store.buffered + store.dropped == 6, "6 in the store")
            assert (store.buffered, store.dropped, store.connected) == (4, 2, False)
            assert (await logs.get("/entries")).status_code == 503
            # Drops are reported by the writer's next retry.
            await wait_until(lambda: "entries dropped so far" in caplog.text, "drops logged")
        assert "unavailable" in caplog.text
        assert "s3cret-pw" not in caplog.text
        own_server.start()
        await wait_until(lambda: store.written == 6, "flushed after the database came back")
        assert (store.buffered, store.dropped, store.connected) == (0, 2, True)
        page = (await logs.get("/entries?limit=100")).json()["entries"]
        tg.cancel_scope.cancel()
    sent = sorted((e for batch in spy.batches for e in batch), key=lambda e: e["ts"])
    kept = sent[:2] + sent[4:]  # the outage's two oldest were pushed out of the buffer
    assert sorted(e["request_id"] for e in page) == sorted(e["request_id"] for e in kept)
    assert [list(e) for e in page] == [list(COLUMNS)] * 6


async def test_a_stalled_database_holds_up_no_request(postgres_url: str,
                                                     proxy_server: Stack) -> None:
    """With the table locked by another session, inserts hang: requests still answer, their
    entries wait in the store, and are written once the lock goes."""
    import psycopg

    store = PostgresLogStore(postgres_url)
    access = AccessLog(store=store, sinks=[], flush_interval=0.02)
    proxy_server.proxy.observers.append(access)
    body = {"model": MODEL, "max_tokens": 8, "messages": HELLO}
    async with (anyio.create_task_group() as tg,
                httpx.AsyncClient(base_url=proxy_server.url, timeout=10) as client):
        await tg.start(access.run)
        with psycopg.connect(postgres_url) as locker:
            locker.execute("LOCK TABLE access_log IN ACCESS EXCLUSIVE MODE")  # until commit
            for _ in range(5):
                assert (await client.post("/v1/messages", json=body)).status_code == 200
            await wait_until(lambda: store.buffered == 5, "5 entries waiting")
            assert store.written == 0
        # Leaving the block commits, which releases the lock.
        await wait_until(lambda: store.written == 5, "written once the lock went")
        assert (store.buffered, store.dropped) == (0, 0)
        tg.cancel_scope.cancel()


async def test_a_database_away_at_start_is_retried_and_counted_at_close(
        caplog: pytest.LogCaptureFixture) -> None:
    """open() does not fail while the database is unreachable; aclose() counts what never
    got written as dropped, and says so without the password."""
    from pgserver import free_port

    store = PostgresLogStore(f"postgresql://u:s3cret-pw@127.0.0.1:{free_port()}/x",
                             drain_timeout=0.5, connect_timeout=2)
    with caplog.at_level(logging.WARNING, logger="ccrotate"):
        await store.open()
        await store.write([_entry(1), _entry(2)])
        assert store.buffered == 2
        with pytest.raises(ConnectionError):
            await store.entries(LogFilter(), limit=10)
        await store.aclose()
    assert (store.buffered, store.dropped) == (0, 2)
    assert "s3cret-pw" not in caplog.text
    assert "***" in caplog.text


async def test_metrics_report_lost_and_waiting_entries(postgres_url: str) -> None:
    """The dropped counter and the buffered gauge are read from the log and its store."""
    pytest.importorskip("prometheus_client")
    from prometheus_client import generate_latest

    from ccrotate import PrometheusMetrics

    store = PostgresLogStore(postgres_url, max_buffer=1)
    access = AccessLog(store=store, sinks=[], max_pending=1)
    metrics = PrometheusMetrics()
    metrics.attach_access_log(access)
    access.on_request(record(1))
    access.on_request(record(2))  # the access log's own buffer drops one
    await access.flush()
    await store.write([_entry(3)])  # and the store's (max_buffer=1) another
    text = generate_latest(metrics.registry).decode()
    assert 'ccrotate_access_log_dropped_total{stage="buffer"} 1.0' in text
    assert 'ccrotate_access_log_dropped_total{stage="store"} 1.0' in text
    assert "ccrotate_access_log_store_buffered 1.0" in text


# -- settings and secrecy --------------------------------------------------------------------


def test_setting_chooses_postgres_and_hides_the_password(postgres_url: str) -> None:
    """access_log_url picks PostgresLogStore; reprs and errors never show the password."""
    settings = load_settings(env={"CCROTATE_ACCESS_LOG_URL": postgres_url}, config_path="")
    assert settings.access_log_url == postgres_url
    rotator = Rotator(settings, pool=AccountPool())
    store = rotator.access_log.store
    assert isinstance(store, PostgresLogStore)
    for text in (repr(settings), repr(store), store.url):
        assert "s3cret-pw" not in text
        assert "ccrotate:***@127.0.0.1" in text
    with pytest.raises(ConfigError) as bad:
        Settings(access_log_url="mysql://u:s3cret-pw@db/x")
    assert "s3cret-pw" not in str(bad.value)
    with pytest.raises(ConfigError, match="postgresql://"):
        PostgresLogStore("http://u:s3cret-pw@db/x")


def test_duckdb_and_postgres_are_exclusive(tmp_path: Any) -> None:
    """Both stores set is a ConfigError naming both settings and where they came from."""
    toml = tmp_path / "c.toml"
    toml.write_text('[logging]\npostgres_url = "postgresql://db/ccrotate"\n')
    with pytest.raises(ConfigError, match=r"access_log_path \(environment\) and "
                                          r"access_log_url \(config.toml\)"):
        load_settings(env={"CCROTATE_ACCESS_LOG_DB": str(tmp_path / "a.duckdb")},
                      config_path=toml)
    # An empty value switches the config file's store off, as for DuckDB.
    assert load_settings(env={"CCROTATE_ACCESS_LOG_URL": ""},
                         config_path=toml).access_log_url is None


def test_without_psycopg_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking for the PostgreSQL log without the extra fails at build time, with the hint."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError, match=r"ccrotate\[postgres\]"):
        Rotator(Settings(access_log_url="postgresql://db/x"), pool=AccountPool())


def test_the_documented_queries_run(postgres_url: str) -> None:
    """The SQL examples of docs/observability.md's PostgreSQL section run on the real table."""
    import re
    from pathlib import Path

    import psycopg

    anyio.run(_filled, postgres_url)
    doc = (Path(__file__).parents[1] / "docs/observability.md").read_text(encoding="utf-8")
    section = doc.split("### PostgreSQL: several servers, one log", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
    statements = [q.strip() for block in blocks for q in block.split(";") if q.strip()]
    statements.append(re.findall(r"`(DELETE FROM access_log[^`]*)`", section)[0])
    assert len(statements) == 3
    with psycopg.connect(postgres_url) as conn:
        results = [conn.execute(q).fetchall() if q.startswith(("SELECT", "--"))
                   else conn.execute(q).rowcount for q in statements]
    assert results[0][0][2] == 2  # two requests by account a that day
    assert ("b", "rate_limited", 1) in results[1]


async def _filled(url: str) -> None:
    from ccrotate._observe.entries import entry_from_record
    from ccrotate._proxy.record import Failover

    store = PostgresLogStore(url)
    await store.open()
    await store.write([entry_from_record(record(1, failovers=[
        Failover("b", "rate_limited", 429)]), None), _entry(2)])
    await store.aclose()
