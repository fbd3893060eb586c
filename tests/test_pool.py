"""AccountPool and the state machine: states, cooldowns, pinning, reloads, events, concurrency."""

from __future__ import annotations

import dataclasses
import itertools
import random
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    AccountState,
    MemoryStateStore,
    NoAccountAvailable,
    PoolEvent,
    Secret,
    UnknownAccount,
)
from ccrotate._pool import pool as _pool
from ccrotate._pool.state import AccountRuntime, Event, transition

T0 = 1_760_000_000.0
U = "anthropic-ratelimit-unified-"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def key(name: str, **kw: Any) -> Account:
    return Account(name=name, kind=AccountKind.API_KEY,
                   api_key=Secret(f"sk-ant-api03-{name}-K3y5ecretPart"), **kw)


def oauth(name: str, token: str = "one", **kw: Any) -> Account:
    return Account(name=name, kind=AccountKind.OAUTH,
                   access_token=Secret(f"sk-ant-oat01-{name}-{token}-Acc3ss"),
                   refresh_token=Secret(f"sk-ant-ort01-{name}-{token}-R3fresh"),
                   expires_at=T0 + 3600, **kw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, *names: str, **kw: Any) -> AccountPool:
    return AccountPool([key(n) for n in names], clock=clock, **kw)


def state(pool: AccountPool, name: str) -> AccountState:
    return pool.status(name).state


def take(pool: AccountPool, n: int) -> list[str]:
    out = []
    for _ in range(n):
        name = pool.acquire().name
        pool.release(name)
        out.append(name)
    return out


# -- the state machine -----------------------------------------------------------------------

def test_transition_table() -> None:
    """transition() moves through the documented states and returns the previous one."""
    rt = AccountRuntime(account=key("a"))
    assert transition(rt, Event.RATE_LIMITED, now=T0, until=T0 + 60) is AccountState.AVAILABLE
    assert rt.state is AccountState.RATE_LIMITED
    transition(rt, Event.COOLDOWN_EXPIRED, now=T0 + 59)
    assert rt.state is AccountState.RATE_LIMITED  # not yet
    transition(rt, Event.AUTH_FAILED, now=T0 + 1, reason="401")
    assert (rt.state, rt.last_error) == (AccountState.AUTH_ERROR, "401")
    transition(rt, Event.CREDENTIALS_RENEWED, now=T0 + 2)
    assert rt.state is AccountState.RATE_LIMITED  # renewing does not end the cooldown
    transition(rt, Event.DISABLED, now=T0 + 3)
    assert rt.state is AccountState.DISABLED
    transition(rt, Event.AUTH_FAILED, now=T0 + 4)
    assert rt.state is AccountState.DISABLED  # disabled wins, but remembers the login problem
    transition(rt, Event.ENABLED, now=T0 + 10)
    # An operator's enable clears everything: the login problem and the cooldown alike.
    assert (rt.state, rt.auth_broken, rt.cooldown_until) == (AccountState.AVAILABLE, False, 0.0)
    transition(rt, Event.CREDENTIALS_RENEWED, now=T0 + 100)
    assert rt.state is AccountState.AVAILABLE


def test_transition_reload_follows_file_disabled_unless_overridden() -> None:
    """RELOADED applies the file's disabled flag, but an operator's choice overrides it."""
    rt = AccountRuntime(account=key("a", disabled=True))
    transition(rt, Event.RELOADED, now=T0)
    assert rt.state is AccountState.DISABLED
    transition(rt, Event.ENABLED, now=T0)
    assert rt.state is AccountState.AVAILABLE
    transition(rt, Event.RELOADED, now=T0)
    assert rt.state is AccountState.AVAILABLE


def test_pool_changes_state_only_through_transition(
        clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every state change the pool makes coincides with a transition() call for that account."""
    calls: list[str] = []

    def spy(rt: AccountRuntime, event: Event, **kw: Any) -> AccountState:
        calls.append(rt.account.name)
        return transition(rt, event, **kw)

    monkeypatch.setattr(_pool, "transition", spy)
    pool = make(clock, "a", "b", "c")
    ops: list[Callable[[], object]] = [
        lambda: pool.report_rate_limited("a", {"retry-after": "10"}),
        lambda: pool.report_auth_error("b", "401"),
        lambda: pool.disable("c"),
        lambda: clock.advance(11),
        lambda: pool.acquire(),
        lambda: pool.update_credentials(key("b")),
        lambda: pool.enable("c"),
        lambda: pool.replace_accounts([key("a"), key("b", disabled=True), key("c")]),
    ]
    for op in ops:
        before = {s.name: s.state for s in pool.statuses()}
        calls.clear()
        op()
        after = {s.name: s.state for s in pool.statuses()}
        changed = {n for n in before if before[n] is not after[n]}
        assert changed <= set(calls)
    assert state(pool, "b") is AccountState.DISABLED


# -- selection -------------------------------------------------------------------------------

def test_new_pool_is_available_and_safe_to_show(clock: FakeClock) -> None:
    """A fresh pool shows every account available, with only a masked credential."""
    pool = make(clock, "a", "b")
    statuses = pool.statuses()
    assert [s.name for s in statuses] == ["a", "b"] == pool.names
    assert all(s.state is AccountState.AVAILABLE for s in statuses)
    assert statuses[0].credential_hint == "…Part"
    assert "K3y5ecret" not in repr(statuses) + repr(pool) + repr(pool.accounts())
    assert len(pool) == 2
    assert "a" in pool
    assert "z" not in pool
    assert list(pool) == ["a", "b"]


def test_round_robin_is_even(clock: FakeClock) -> None:
    """Unpinned requests rotate evenly in file order over the available accounts."""
    pool = make(clock, "a", "b", "c")
    assert take(pool, 6) == ["a", "b", "c", "a", "b", "c"]
    pool.report_rate_limited("b", {})
    assert Counter(take(pool, 20)) == {"a": 10, "c": 10}


def test_rotation_survives_reload_with_same_accounts(clock: FakeClock) -> None:
    """Reloading the same accounts does not restart the rotation."""
    pool = make(clock, "a", "b", "c")
    assert take(pool, 1) == ["a"]
    result = pool.replace_accounts([key("a"), key("b"), key("c")])
    assert result.added == result.removed == result.changed == ()
    assert take(pool, 2) == ["b", "c"]


def test_rotation_survives_reload_with_added_account(clock: FakeClock) -> None:
    """Adding an account continues the rotation and the newcomer gets its even share."""
    pool = make(clock, "a", "b", "c")
    assert take(pool, 2) == ["a", "b"]
    result = pool.replace_accounts([key("a"), key("b"), key("c"), key("d")])
    assert result.added == ("d",)
    picks = take(pool, 40)
    assert picks[0] == "c"  # not back to "a"
    assert set(picks[:4]) == {"a", "b", "c", "d"}
    assert Counter(picks) == {"a": 10, "b": 10, "c": 10, "d": 10}


def test_acquire_counts_and_release(clock: FakeClock) -> None:
    """acquire counts a request and an in-flight attempt; release ends it and never goes below 0."""
    pool = make(clock, "a")
    pool.acquire()
    pool.acquire()
    s = pool.status("a")
    assert (s.requests, s.in_flight, s.last_used) == (2, 2, T0)
    for _ in range(3):
        pool.release("a")
    pool.release("gone")
    assert pool.status("a").in_flight == 0


def test_exclude_skips_tried_accounts(clock: FakeClock) -> None:
    """exclude keeps a request off accounts it already tried."""
    pool = make(clock, "a", "b")
    assert pool.acquire(exclude={"a"}).name == "b"
    with pytest.raises(NoAccountAvailable, match="tried") as info:
        pool.acquire(exclude={"a", "b"})
    assert info.value.retry_after is None


def test_pin_named_account(clock: FakeClock) -> None:
    """acquire(name) returns that account without moving the rotation."""
    pool = make(clock, "a", "b", "c")
    assert pool.acquire("c").name == "c"
    assert pool.status("c").requests == 1
    assert take(pool, 1) == ["a"]


def test_pin_unknown_account(clock: FakeClock) -> None:
    """Pinning a name the pool does not hold raises UnknownAccount."""
    pool = make(clock, "a")
    with pytest.raises(UnknownAccount) as info:
        pool.acquire("nope")
    assert info.value.name == "nope"
    with pytest.raises(UnknownAccount):
        pool.status("nope")
    with pytest.raises(UnknownAccount):
        pool.disable("nope")


def test_pin_cooling_account(clock: FakeClock) -> None:
    """Pinning a cooling account raises NoAccountAvailable with the time left."""
    pool = make(clock, "a", "b")
    pool.report_rate_limited("a", {"retry-after": "30"})
    clock.advance(10)
    with pytest.raises(NoAccountAvailable) as info:
        pool.acquire("a")
    assert info.value.retry_after == pytest.approx(20)
    assert pool.acquire().name == "b"


@pytest.mark.parametrize("how", ["auth", "disabled"])
def test_pin_unusable_account_has_no_retry_after(clock: FakeClock, how: str) -> None:
    """A pinned account that will not come back by itself gives retry_after None."""
    pool = make(clock, "a")
    if how == "auth":
        pool.report_auth_error("a", "401 invalid x-api-key")
    else:
        pool.disable("a")
    with pytest.raises(NoAccountAvailable) as info:
        pool.acquire("a")
    assert info.value.retry_after is None


# -- cooldowns -------------------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after": "120"}, T0 + 120),
    ({"retry-after": "Tue, 14 Oct 2025 09:00:00 GMT"}, 1_760_432_400.0),
    ({f"{U}status": "rejected", f"{U}reset": str(int(T0) + 3000)}, T0 + 3000),
    ({f"{U}status": "allowed_warning", f"{U}5h-status": "rejected",
      f"{U}5h-reset": str(int(T0) + 4000)}, T0 + 4000),
    ({"anthropic-ratelimit-requests-remaining": "0",
      "anthropic-ratelimit-requests-reset": "2025-10-09T09:06:40Z"}, T0 + 400),
    ({}, T0 + 45),
], ids=["seconds", "http-date", "unified", "window", "api-key", "default"])
def test_cooldown_follows_headers(
        clock: FakeClock, headers: dict[str, str], expected: float) -> None:
    """A 429 cools the account until the time its headers give (default when none)."""
    pool = make(clock, "a", default_cooldown=45)
    until = pool.report_rate_limited("a", headers)
    assert until == pytest.approx(expected)
    s = pool.status("a")
    assert s.state is AccountState.RATE_LIMITED
    assert s.cooldown_until == pytest.approx(expected)
    assert (s.rate_limits, s.failures) == (1, 1)
    assert pool.soonest_recovery() == pytest.approx(expected)


def test_longer_cooldown_extends_shorter_does_not_shorten(clock: FakeClock) -> None:
    """A later 429 may push the cooldown out, never pull it in."""
    pool = make(clock, "a")
    pool.report_rate_limited("a", {"retry-after": "100"})
    assert pool.report_rate_limited("a", {"retry-after": "10"}) == T0 + 100
    assert pool.status("a").cooldown_until == T0 + 100
    assert pool.report_rate_limited("a", {"retry-after": "500"}) == T0 + 500
    pool.cool_down("a", T0 + 50, reason="elsewhere")
    assert pool.status("a").cooldown_until == T0 + 500


def test_cooldown_expires_with_clock(clock: FakeClock) -> None:
    """An account comes back exactly when its cooldown ends."""
    pool = make(clock, "a")
    pool.report_rate_limited("a", {"retry-after": "60"})
    clock.advance(59.9)
    with pytest.raises(NoAccountAvailable):
        pool.acquire()
    clock.advance(0.1)
    assert pool.acquire().name == "a"
    s = pool.status("a")
    assert (s.state, s.cooldown_until) == (AccountState.AVAILABLE, None)
    assert pool.soonest_recovery() is None


def test_all_cooling_retry_after_is_soonest(clock: FakeClock) -> None:
    """When every account cools, retry_after is the wait for the soonest one."""
    pool = make(clock, "a", "b", "c")
    pool.report_rate_limited("a", {"retry-after": "300"})
    pool.report_rate_limited("b", {"retry-after": "40"})
    pool.report_auth_error("c", "401")
    clock.advance(15)
    with pytest.raises(NoAccountAvailable) as info:
        pool.acquire()
    assert info.value.retry_after == pytest.approx(25)
    assert "'b'" in str(info.value)
    assert pool.soonest_recovery() == T0 + 40
    assert pool.peek() is None


def test_nothing_recoverable_has_no_retry_after(clock: FakeClock) -> None:
    """Disabled and broken accounts do not come back by themselves: retry_after is None."""
    pool = make(clock, "a", "b")
    pool.disable("a")
    pool.report_auth_error("b", "401")
    with pytest.raises(NoAccountAvailable) as info:
        pool.acquire()
    assert info.value.retry_after is None
    with pytest.raises(NoAccountAvailable, match="no accounts") as empty:
        AccountPool(clock=clock).acquire()
    assert empty.value.retry_after is None


def test_quota_snapshot_recorded(clock: FakeClock) -> None:
    """Successes and 429s store the unified utilisation picture on the account."""
    pool = make(clock, "a")
    pool.report_success("a", {f"{U}status": "allowed", f"{U}5h-utilization": "0.42"})
    quota = pool.status("a").quota
    assert quota is not None
    assert quota.windows["5h"].utilization == pytest.approx(0.42)
    pool.report_success("a", {})  # no headers: keep what we knew
    assert pool.status("a").quota == quota
    pool.report_rate_limited("a", {f"{U}status": "rejected", f"{U}5h-utilization": "1.0"})
    assert pool.status("a").quota.max_utilization() == 1.0  # type: ignore[union-attr]


def test_report_failure_only_counts(clock: FakeClock) -> None:
    """A 5xx or network failure is counted but leaves the account available."""
    pool = make(clock, "a")
    pool.report_failure("a", "529 overloaded")
    s = pool.status("a")
    assert (s.state, s.failures, s.last_error) == (AccountState.AVAILABLE, 1, "529 overloaded")


# -- administration and reloads --------------------------------------------------------------

def test_disable_enable_survive_reload(clock: FakeClock) -> None:
    """An operator's disable or enable outlives reloads of the file."""
    pool = AccountPool([key("a"), key("b", disabled=True)], clock=clock)
    assert state(pool, "b") is AccountState.DISABLED
    pool.disable("a")
    pool.enable("b")
    pool.replace_accounts([key("a"), key("b", disabled=True, weight=2)])
    assert state(pool, "a") is AccountState.DISABLED
    assert state(pool, "b") is AccountState.AVAILABLE
    assert take(pool, 2) == ["b", "b"]


def test_reload_keeps_cooldown_and_counters(clock: FakeClock) -> None:
    """Unchanged accounts keep their cooldown and counters across a reload."""
    pool = make(clock, "a", "b")
    pool.acquire("a")
    pool.report_rate_limited("a", {"retry-after": "90"})
    pool.replace_accounts([key("b"), key("a")])
    s = pool.status("a")
    assert (s.state, s.cooldown_until, s.requests) == (AccountState.RATE_LIMITED, T0 + 90, 1)
    assert pool.names == ["b", "a"]


def test_reload_removes_and_changes(clock: FakeClock) -> None:
    """A reload reports added, removed and changed accounts; removed ones are unknown."""
    pool = make(clock, "a", "b")
    result = pool.replace_accounts([key("a", weight=5), key("c")])
    assert (result.added, result.removed, result.changed) == (("c",), ("b",), ("a",))
    assert pool.status("a").weight == 5
    with pytest.raises(UnknownAccount):
        pool.acquire("b")
    pool.release("b")  # a late release of a removed account is harmless
    with pytest.raises(ValueError, match="unique"):
        pool.replace_accounts([key("a"), key("a")])


def test_update_credentials_clears_auth_error(clock: FakeClock) -> None:
    """New credentials bring an auth_error account back, and are what acquire returns."""
    pool = AccountPool([oauth("a")], clock=clock)
    pool.report_auth_error("a", "401 token revoked")
    assert state(pool, "a") is AccountState.AUTH_ERROR
    renewed = oauth("a", token="two")
    pool.update_credentials(renewed)
    assert state(pool, "a") is AccountState.AVAILABLE
    assert pool.acquire().credential == renewed.credential
    with pytest.raises(UnknownAccount):
        pool.update_credentials(oauth("zz"))


def test_reload_with_new_credentials_clears_auth_error(clock: FakeClock) -> None:
    """A re-login written to the file (new tokens) clears auth_error on reload."""
    pool = AccountPool([oauth("a")], clock=clock)
    pool.report_auth_error("a", "invalid_grant")
    pool.replace_accounts([oauth("a")])  # same tokens: still broken
    assert state(pool, "a") is AccountState.AUTH_ERROR
    pool.replace_accounts([oauth("a", token="fresh")])
    assert state(pool, "a") is AccountState.AVAILABLE


def test_listeners_receive_events(clock: FakeClock) -> None:
    """Listeners get a PoolEvent for each state change, with the cooldown end for 429s."""
    pool = make(clock, "a")
    events: list[PoolEvent] = []
    pool.add_listener(events.append)
    pool.report_rate_limited("a", {"retry-after": "30"})
    pool.report_rate_limited("a", {"retry-after": "60"})
    pool.disable("a")
    pool.disable("a")  # no change, no event
    pool.enable("a")
    clock.advance(61)
    pool.report_auth_error("a", "401")
    pool.update_credentials(key("a"))
    A, RL, AE, D = (AccountState.AVAILABLE, AccountState.RATE_LIMITED,
                    AccountState.AUTH_ERROR, AccountState.DISABLED)
    assert [(e.event, e.before, e.after, e.until) for e in events] == [
        (Event.RATE_LIMITED, A, RL, T0 + 30),
        (Event.RATE_LIMITED, RL, RL, T0 + 60),
        (Event.DISABLED, RL, D, None),
        (Event.ENABLED, D, A, None),  # an operator's enable also ends the cooldown
        (Event.AUTH_FAILED, A, AE, None),
        (Event.CREDENTIALS_RENEWED, AE, A, None),
    ]
    assert {e.account for e in events} == {"a"}
    assert events[4].reason == "401"


def test_failing_listener_does_not_break_reporting(
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """A listener that raises is logged; the report still applies and later listeners run."""
    pool = make(clock, "a", "b")
    seen: list[PoolEvent] = []

    def broken(event: PoolEvent) -> None:
        raise RuntimeError("metrics backend down")

    pool.add_listener(broken)
    pool.add_listener(seen.append)
    assert pool.report_rate_limited("a", {"retry-after": "5"}) == T0 + 5
    assert state(pool, "a") is AccountState.RATE_LIMITED
    assert [e.account for e in seen] == ["a"]
    assert "metrics backend down" in caplog.text


def test_custom_state_store_is_used_and_shared(clock: FakeClock) -> None:
    """Runtime records live in the given StateStore; two pools on one store share state."""
    store = MemoryStateStore()
    one = AccountPool([key("a"), key("b")], clock=clock, store=store)
    two = AccountPool([key("a"), key("b")], clock=clock, store=store)
    one.report_rate_limited("a", {"retry-after": "30"})
    assert state(two, "a") is AccountState.RATE_LIMITED
    assert two.acquire().name == "b"
    record = store.get("b")
    assert record is not None
    assert record.requests == 1


# -- concurrency -----------------------------------------------------------------------------

async def test_many_tasks_no_lost_updates_no_cooled_handout(clock: FakeClock) -> None:
    """1,000 interleaved tasks: counters add up exactly and no cooled account is handed out."""
    pool = make(clock, *"abcdef", default_cooldown=0.05)
    rng = random.Random(7)
    log: list[tuple[str, str, float, float]] = []  # (kind, account, time, cooldown end)
    acquired: Counter[str] = Counter()
    limited: Counter[str] = Counter()

    async def worker() -> None:
        for _ in range(3):
            try:
                acc = pool.acquire()
            except NoAccountAvailable as exc:
                log.append(("none", "", clock(), exc.retry_after or -1.0))
                clock.advance(exc.retry_after or 0.0)  # a client waiting as told
                await anyio.lowlevel.checkpoint()
                continue
            log.append(("acquire", acc.name, clock(), 0.0))
            acquired[acc.name] += 1
            for _ in range(rng.randrange(3)):
                await anyio.lowlevel.checkpoint()
            if rng.random() < 0.3:
                headers = {"retry-after": "0"} if rng.random() < 0.02 else {}
                until = pool.report_rate_limited(acc.name, headers)
                log.append(("cool", acc.name, clock(), until))
                limited[acc.name] += 1
            else:
                pool.report_success(acc.name, {f"{U}status": "allowed"})
            pool.release(acc.name)
            clock.advance(0.001)

    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(worker)

    cooled_until: dict[str, float] = {}
    kinds: Counter[str] = Counter()
    for kind, name, t, until in log:
        kinds[kind] += 1
        if kind == "cool":
            cooled_until[name] = max(cooled_until.get(name, 0.0), until)
        elif kind == "acquire":
            assert cooled_until.get(name, 0.0) <= t, f"{name} handed out while cooling"
        else:  # everything was cooling: retry_after must be the soonest end
            ends = [cooled_until.get(n, 0.0) for n in "abcdef"]
            assert min(ends) > t
            assert until == pytest.approx(min(ends) - t)
    assert kinds["cool"] > 100
    assert kinds["none"] > 0
    statuses = {s.name: s for s in pool.statuses()}
    assert sum(acquired.values()) == kinds["acquire"]
    for name, s in statuses.items():
        assert s.requests == acquired[name]
        assert s.rate_limits == s.failures == limited[name]
        assert s.in_flight == 0


@pytest.fixture
def fast_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.mark.usefixtures("fast_switching")
def test_threads_hammering_lose_nothing(clock: FakeClock) -> None:
    """Threads acquiring and reporting at once lose no update and never get a cooled account."""
    names = [f"acc{i}" for i in range(8)]
    pool = make(clock, *names)  # the clock never moves: a cooldown lasts the whole test
    seq = itertools.count()
    per_thread: list[dict[str, Any]] = []

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        mine: dict[str, Any] = {"acquired": Counter(), "limited": Counter(),
                                "acquires": [], "cools": []}
        per_thread.append(mine)
        for _ in range(3000):
            start = next(seq)
            try:
                acc = pool.acquire()
            except NoAccountAvailable:
                continue
            mine["acquires"].append((start, acc.name))
            mine["acquired"][acc.name] += 1
            # Cool some accounts for good, but never the last two, so work continues.
            if acc.name not in names[-2:] and rng.random() < 0.002:
                pool.report_rate_limited(acc.name, {"retry-after": "100000"})
                mine["cools"].append((next(seq), acc.name))
                mine["limited"][acc.name] += 1
            else:
                pool.report_failure(acc.name, "529")
            pool.release(acc.name)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    first_cooled: dict[str, int] = {}
    for mine in per_thread:
        for done, name in mine["cools"]:
            first_cooled[name] = min(first_cooled.get(name, done), done)
    for mine in per_thread:
        for start, name in mine["acquires"]:
            assert start < first_cooled.get(name, sys.maxsize), f"{name} handed out cooled"
    acquired: Counter[str] = sum((m["acquired"] for m in per_thread), Counter())
    limited: Counter[str] = sum((m["limited"] for m in per_thread), Counter())
    assert first_cooled  # some accounts really were cooled mid-run
    for s in pool.statuses():
        assert s.requests == acquired[s.name]
        assert s.rate_limits == limited[s.name]
        assert s.failures == acquired[s.name]  # each attempt reported exactly one failure
        assert s.in_flight == 0


@pytest.mark.usefixtures("fast_switching")
def test_threads_keep_rotation_exact(clock: FakeClock) -> None:
    """Under threads the rotation state is never corrupted: shares stay exactly even."""
    names = [f"acc{i}" for i in range(8)]
    pool = make(clock, *names)
    per_thread = 10_000

    def hammer() -> None:
        for _ in range(per_thread):
            pool.release(pool.acquire().name)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = [s.requests for s in pool.statuses()]
    assert sum(counts) == 4 * per_thread
    assert max(counts) - min(counts) <= 1
    assert all(s.in_flight == 0 for s in pool.statuses())


def test_account_dataclass_replace_keeps_extra() -> None:
    """Pool-facing Account copies keep the file's unknown keys (they survive write-back)."""
    acc = dataclasses.replace(key("a", extra={"email": "x@example.com"}), weight=3)
    assert acc.extra == {"email": "x@example.com"}
    assert acc.weight == 3
