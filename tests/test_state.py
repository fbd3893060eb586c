"""Shared state: the backend contract (memory and a real Redis), the pool's hooks for
remote changes, StateSync between two pools on one Redis, and Redis going away."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from _redis import RedisServer
from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    AccountState,
    Event,
    MemoryStateBackend,
    RedisStateBackend,
    RoundRobin,
    SelectionContext,
    StateBackend,
)
from ccrotate._accounts.model import OAuthTokens, Secret
from ccrotate._pool.ratelimit import QuotaSnapshot, WindowQuota
from ccrotate._pool.strategy import Candidate
from ccrotate._state.backend import TOKENS, Batch, Change
from ccrotate._state.redis_backend import mask_url
from ccrotate._state.sync import StateSync

NAMES = ["a", "b", "c"]
KEYS = {"a": "sk-ant-api03-state-aaaa-0001", "b": "sk-ant-api03-state-bbbb-0002",
        "c": "sk-ant-api03-state-cccc-0003"}


def accounts(**caps: int) -> list[Account]:
    return [Account(name=n, kind=AccountKind.API_KEY, api_key=Secret(KEYS[n]),
                    max_concurrent=caps.get(n)) for n in NAMES]


async def eventually(check: Any, what: str, limit: float = 10.0) -> None:
    """Wait for a condition another task or process brings about (no timing asserted)."""
    with anyio.fail_after(limit, reason=f"never happened: {what}"):
        while True:
            if await check():
                return
            await anyio.sleep(0.02)


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[StateBackend]:
    """Each contract test runs on the in-memory backend and on a real Redis."""
    if request.param == "memory":
        yield MemoryStateBackend()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis = RedisStateBackend(server.url, namespace="contract")
    await redis.start()
    try:
        yield redis
    finally:
        await redis.aclose()


# --- the contract ----------------------------------------------------------------------


async def test_every_snapshot_draws_the_next_ticket(backend: StateBackend) -> None:
    """The rotation cursor is one counter: each request gets the next number."""
    tickets = [(await backend.snapshot(capped=[], sessions=[None], replica="r")) for _ in range(4)]
    numbers = [t.ticket for t in tickets if t is not None]
    assert len(numbers) == 4
    assert numbers == list(range(numbers[0], numbers[0] + 4))


async def test_a_cooldown_is_held_until_it_expires(backend: StateBackend) -> None:
    """A cooldown written with its end is read back, bumps the version, and expires."""
    before = await backend.snapshot(capped=[], sessions=[None], replica="r")
    now = time.time()
    long = Change(account="a", event="rate_limited", until=now + 600, cause="quota")
    short = Change(account="b", event="rate_limited", until=now + 0.3, cause="quota")
    assert await backend.write(Batch(changes=[long, short]), replica="r", binding_ttl=60)
    after = await backend.snapshot(capped=[], sessions=[None], replica="r")
    assert before is not None
    assert after is not None
    assert after.version != before.version
    holds = await backend.holds(NAMES)
    assert holds is not None
    assert {(h.account, h.event) for h in holds} >= {("a", "rate_limited")}

    async def b_expired() -> bool:
        return all(h.account != "b" for h in (await backend.holds(NAMES)) or [])

    await eventually(b_expired, "b's cooldown expires")
    assert [h.account for h in await backend.holds(NAMES) or []] == ["a"]


async def test_enable_clears_every_hold(backend: StateBackend) -> None:
    """An operator's enable drops the cooldown, backoff and auth error of the account."""
    now = time.time()
    batch = Batch(changes=[Change(account="a", event="rate_limited", until=now + 600),
                           Change(account="a", event="failed", until=now + 600),
                           Change(account="a", event="auth_failed", reason="401")])
    assert await backend.write(batch, replica="r", binding_ttl=60)
    assert {h.event for h in await backend.holds(["a"]) or []} == {
        "rate_limited", "failed", "auth_failed"}
    assert await backend.write(Batch(changes=[Change(account="a", event="enabled")]),
                               replica="r", binding_ttl=60)
    assert [h.event for h in await backend.holds(["a"]) or []] == ["enabled"]


async def test_refresh_lock_is_exclusive_and_released_only_by_its_holder(
        backend: StateBackend) -> None:
    """SET NX PX semantics: one holder; a wrong token cannot release it; released, it is free."""
    token = await backend.lock("refresh:a", 30)
    assert token
    assert await backend.lock("refresh:a", 30) is None
    assert not await backend.unlock("refresh:a", "not-the-token")
    assert await backend.lock("refresh:a", 30) is None
    assert await backend.unlock("refresh:a", token)
    again = await backend.lock("refresh:a", 30)
    assert again
    assert again != token


async def test_a_lock_expires_by_itself(backend: StateBackend) -> None:
    """A replica that dies holding the refresh lock does not block the others for ever."""
    assert await backend.lock("refresh:b", 0.2)

    async def free() -> bool:
        token = await backend.lock("refresh:b", 30)
        return token is not None

    await eventually(free, "the lock expires")


async def test_shared_tokens_are_announced_and_read_back(backend: StateBackend) -> None:
    """New tokens are stored and every listener hears of them (without the secret)."""
    tokens = OAuthTokens(Secret("sk-ant-oat01-shared-access"), Secret("sk-ant-ort01-shared-r"),
                         time.time() + 3600)
    heard: list[Change] = []

    async def listen(task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                     ) -> None:
        async for change in backend.listen():
            heard.append(change)

    async with anyio.create_task_group() as tg:
        tg.start_soon(listen)

        async def published() -> bool:
            # A subscription takes a moment to be in place: announce until one is heard.
            await backend.share_tokens("a", tokens, replica="r1")
            return bool(heard)

        await eventually(published, "the announcement arrives")
        tg.cancel_scope.cancel()
    assert heard[0].account == "a"
    assert heard[0].event == TOKENS
    assert "sk-ant" not in repr(heard[0])
    stored = await backend.tokens("a")
    assert stored is not None
    assert stored.access_token == tokens.access_token
    assert stored.refresh_token == tokens.refresh_token
    assert stored.expires_at == tokens.expires_at


async def test_one_snapshot_serves_several_requests(backend: StateBackend) -> None:
    """Requests gathered into one round trip get consecutive tickets and their own bindings."""
    assert await backend.write(Batch(bindings={"s1": "c"}), replica="r", binding_ttl=60)
    one = await backend.snapshot(capped=[], sessions=[None], replica="r")
    many = await backend.snapshot(capped=[], sessions=[None, "s1", "s2", None], replica="r")
    after = await backend.snapshot(capped=[], sessions=[None], replica="r")
    assert one is not None
    assert many is not None
    assert after is not None
    assert many.ticket == one.ticket + 1
    assert after.ticket == many.ticket + 4
    assert many.bound == (None, "c", None, None)


async def test_in_flight_bindings_and_quotas_are_shared(backend: StateBackend) -> None:
    """Another replica's in-flight count, a session's binding and a quota come back."""
    quota = QuotaSnapshot(status="allowed", reset=None, representative_claim=None,
                          windows={"five_hour": WindowQuota(0.5, "allowed", None)},
                          seen_at=time.time())
    batch = Batch(in_flight={"a": 2}, bindings={"session-1": "b"}, quotas={"c": quota})
    assert await backend.write(batch, replica="r1", binding_ttl=60)
    theirs = await backend.snapshot(capped=["a"], sessions=["session-1"], replica="r2")
    mine = await backend.snapshot(capped=["a"], sessions=["other"], replica="r1")
    assert theirs is not None
    assert mine is not None
    assert dict(theirs.in_flight) == {"a": 2}
    assert dict(mine.in_flight) == {"a": 0}
    assert (theirs.bound, mine.bound) == (("b",), (None,))
    assert await backend.quotas(NAMES) == {"c": quota}


# --- Redis specifics ---------------------------------------------------------------------


async def test_cooldown_keys_carry_an_expiry(redis_server: RedisServer) -> None:
    """Cooldowns are Redis keys with PX: the store forgets them by itself."""
    backend = RedisStateBackend(redis_server.url, namespace="px")
    await backend.start()
    try:
        change = Change(account="a", event="rate_limited", until=time.time() + 120)
        assert await backend.write(Batch(changes=[change]), replica="r", binding_ttl=60)
    finally:
        await backend.aclose()
    client = redis_server.client()
    ttl = client.pttl("px:hold:a:cool")
    assert 0 < ttl <= 120_000
    assert client.get("px:cursor") is None  # nothing drew a ticket


async def test_two_namespaces_share_one_redis(redis_server: RedisServer) -> None:
    """Two pools on one Redis never see each other's cooldowns or rotation."""
    one = RedisStateBackend(redis_server.url, namespace="one")
    two = RedisStateBackend(redis_server.url, namespace="two")
    for b in (one, two):
        await b.start()
    try:
        change = Change(account="a", event="rate_limited", until=time.time() + 600)
        assert await one.write(Batch(changes=[change]), replica="r", binding_ttl=60)
        assert await two.holds(NAMES) == []
        first = await one.snapshot(capped=[], sessions=[None], replica="r")
        other = await two.snapshot(capped=[], sessions=[None], replica="r")
        assert first is not None
        assert other is not None
        assert first.ticket == other.ticket == 1
    finally:
        for b in (one, two):
            await b.aclose()


async def test_an_unreachable_redis_degrades_once_and_recovers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Down: calls answer None at once, one warning, errors counted; back: ping clears it."""
    redis_server = RedisServer(tmp_path, password="s3cret-pw")
    backend = RedisStateBackend(redis_server.url, namespace="down")
    caplog.set_level(logging.WARNING, "ccrotate.state")
    await backend.start()  # never raises
    try:
        for _ in range(5):
            assert await backend.snapshot(capped=[], sessions=[None], replica="r") is None
            assert not await backend.write(Batch(changes=[Change(account="a", event="x")]),
                                           replica="r", binding_ttl=1)
            assert await backend.lock("refresh:a", 1) is None
        health = backend.health()
        assert health.degraded
        assert health.errors >= 1
        warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(warnings) == 1
        redis_server.start()
        assert await backend.ping()
        assert not backend.health().degraded
        assert await backend.snapshot(capped=[], sessions=[None], replica="r") is not None
        shown = repr(backend) + repr(backend.health()) + caplog.text
        assert "s3cret-pw" not in shown
        assert ":***@127.0.0.1" in (backend.health().target or "")
    finally:
        await backend.aclose()
        redis_server.stop()


def test_mask_url_hides_only_the_password() -> None:
    """The URL stays recognisable; the password never appears."""
    assert mask_url("redis://:pw@db:6379/1") == "redis://:***@db:6379/1"
    assert mask_url("rediss://me:pw@[::1]:6380") == "rediss://me:***@[::1]:6380"
    assert mask_url("redis://db:6379/0") == "redis://db:6379/0"


# --- the pool's hooks ---------------------------------------------------------------------


def test_remote_changes_apply_once_and_do_not_count_as_local() -> None:
    """A remote cooldown cools the account, is told with remote=True, and repeats are no-ops."""
    pool = AccountPool(accounts())
    events: list[Any] = []
    pool.add_listener(events.append)
    until = time.time() + 600
    assert pool.apply_remote("a", Event.RATE_LIMITED, until=until, cause="quota")
    assert not pool.apply_remote("a", Event.RATE_LIMITED, until=until, cause="quota")
    assert not pool.apply_remote("a", Event.RATE_LIMITED, until=until - 10, cause="quota")
    status = pool.status("a")
    assert status.state is AccountState.RATE_LIMITED
    assert status.rate_limits == 0  # counted by the replica that saw the 429
    assert [(e.account, e.remote) for e in events] == [("a", True)]
    assert pool.apply_remote("a", Event.ENABLED)
    assert pool.status("a").state is AccountState.AVAILABLE


def test_remote_in_flight_counts_toward_a_cap() -> None:
    """Requests other replicas hold on a capped account keep this replica off it."""
    pool = AccountPool(accounts(a=1))
    pool.set_remote_in_flight("a", 1)
    chosen = {pool.acquire().name for _ in range(4)}
    assert "a" not in chosen
    pool.set_remote_in_flight("a", 0)
    seen: list[tuple[str, int]] = []
    pool.watch_in_flight(lambda name, count: seen.append((name, count)))
    for _ in range(3):
        acc = pool.acquire()
        pool.release(acc.name)
    assert ("a", 1) in seen
    assert ("a", 0) in seen
    assert {name for name, _ in seen} == {"a"}  # only capped accounts are watched


def test_round_robin_follows_a_shared_ticket() -> None:
    """Two strategies (two replicas) given consecutive tickets rotate as one."""
    one, two = RoundRobin(), RoundRobin()
    candidates = [Candidate(n, 1, 0, 0, None) for n in NAMES]
    picks = [(one if t % 2 else two).select(candidates, SelectionContext(ticket=t))
             for t in range(30)]
    assert {n: picks.count(n) for n in NAMES} == {"a": 10, "b": 10, "c": 10}
    weighted = [Candidate("a", 2, 0, 0, None), Candidate("b", 1, 0, 0, None)]
    picks = [one.select(weighted, SelectionContext(ticket=t)) for t in range(30)]
    assert picks.count("a") == 2 * picks.count("b")


# --- two pools on one Redis ------------------------------------------------------------------


@pytest.fixture
async def two_syncs(redis_server: RedisServer) -> AsyncIterator[tuple[StateSync, StateSync]]:
    syncs = []
    for _ in range(2):
        backend = RedisStateBackend(redis_server.url, namespace="pair")
        syncs.append(StateSync(AccountPool(accounts()), backend, probe_interval=0.05,
                               probe_cap=0.2))
    async with anyio.create_task_group() as tg:
        for sync in syncs:
            await tg.start(sync.run)
        yield syncs[0], syncs[1]
        tg.cancel_scope.cancel()


async def test_a_cooldown_on_one_pool_reaches_the_other(
        two_syncs: tuple[StateSync, StateSync]) -> None:
    """Pool A's 429 cools the account in pool B: announced at once, and on B's next request."""
    a, b = two_syncs
    a.pool.cool_down("b", time.time() + 600, reason="429")

    async def cooled() -> bool:
        return b.pool.status("b").state is AccountState.RATE_LIMITED

    await eventually(cooled, "B hears of the cooldown")
    chosen = set()
    for _ in range(6):
        context = await b.before_acquire(SelectionContext())
        assert context.ticket is not None
        chosen.add(b.pool.acquire(context=context).name)
    assert chosen == {"a", "c"}


async def test_the_shared_ticket_alternates_between_pools(
        two_syncs: tuple[StateSync, StateSync]) -> None:
    """Requests alternating between two pools still rotate evenly over the accounts."""
    counts = dict.fromkeys(NAMES, 0)
    for i in range(30):
        sync = two_syncs[i % 2]
        context = await sync.before_acquire(SelectionContext())
        account = sync.pool.acquire(context=context)
        sync.pool.release(account.name)
        counts[account.name] += 1
    assert max(counts.values()) - min(counts.values()) <= 1


async def test_a_session_binding_is_shared(two_syncs: tuple[StateSync, StateSync]) -> None:
    """A conversation bound on pool A stays on that account when it reaches pool B."""
    a, b = two_syncs
    context = await a.before_acquire(SelectionContext(session_key="conv-1"))
    first = a.pool.acquire(context=context)
    a.after_acquire(first, context)
    assert await a.flush()
    for _ in range(3):
        context = await b.before_acquire(SelectionContext(session_key="conv-1"))
        assert b.pool.acquire(context=context).name == first.name


async def test_concurrent_requests_share_round_trips(
        two_syncs: tuple[StateSync, StateSync]) -> None:
    """Fifty requests at once each get their own ticket, from far fewer round trips."""
    sync = two_syncs[0]
    before = sync.backend.health().calls
    tickets: list[int] = []

    async def request() -> None:
        context = await sync.before_acquire(SelectionContext())
        assert context.ticket is not None
        tickets.append(context.ticket)

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(request)
    assert sorted(tickets) == list(range(min(tickets), min(tickets) + 50))
    assert sync.backend.health().calls - before < 50


# --- settings, metrics --------------------------------------------------------------------


def test_state_settings_keep_the_url_secret() -> None:
    """state_url is checked, never shown (it may hold a password); workers must be >= 1."""
    from ccrotate import ConfigError, Settings
    settings = Settings(state_url="redis://:hunter2-pw@db.internal:6379/0", workers=4)
    assert "hunter2" not in repr(settings)
    assert (settings.workers, settings.state_namespace) == (4, "ccrotate")
    with pytest.raises(ConfigError) as info:
        Settings(state_url="http://:hunter2-pw@db.internal:6379/0")
    assert "hunter2" not in str(info.value)
    assert "redis://" in str(info.value)
    with pytest.raises(ConfigError):
        Settings(workers=0)


async def test_metrics_count_backend_errors_and_degradation(tmp_path: Path) -> None:
    """/metrics shows a degraded store (1) and its failed calls."""
    pytest.importorskip("prometheus_client")
    from ccrotate import PrometheusMetrics
    server = RedisServer(tmp_path)  # never started: nothing listens on its port
    backend = RedisStateBackend(server.url, namespace="m")
    await backend.start()
    try:
        metrics = PrometheusMetrics(AccountPool(accounts()))
        metrics.attach_state(backend)
        from prometheus_client import generate_latest
        text = generate_latest(metrics.registry).decode()
        assert 'ccrotate_state_backend_degraded{backend="redis"} 1.0' in text
        assert 'ccrotate_state_backend_errors_total{backend="redis"} 1.0' in text
    finally:
        await backend.aclose()


def test_the_memory_backend_stays_off_the_request_path() -> None:
    """Without state_url nothing is shared: the proxy's loop has no sync to await."""
    from ccrotate import Rotator, Settings
    plain = Rotator(Settings(hot_reload=False), pool=AccountPool(accounts()))
    assert isinstance(plain.state, MemoryStateBackend)
    assert plain.sync is None
    assert plain.proxy.pipeline.loop.sync is None
    shared = Rotator(Settings(hot_reload=False, state_url="redis://127.0.0.1:1/0"),
                     pool=AccountPool(accounts()))
    assert isinstance(shared.state, RedisStateBackend)
    assert shared.proxy.pipeline.loop.sync is shared.sync
    assert shared.services[0] is shared.sync
