"""Selection strategies: round-robin, weights, priorities, and custom strategies in the pool."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    Candidate,
    FirstAvailable,
    LeastRecentlyUsed,
    NoAccountAvailable,
    QuotaAware,
    QuotaSnapshot,
    RoundRobin,
    Secret,
    SelectionContext,
    SelectionStrategy,
    WindowQuota,
)
from ccrotate._pool.ratelimit import parse_quota
from ccrotate._pool.strategy import STRATEGIES, strategy_named

CTX = SelectionContext()


def cand(name: str, weight: int = 1, priority: int = 0, in_flight: int = 0) -> Candidate:
    return Candidate(name, weight, priority, in_flight, None)


def key(name: str, **kw: Any) -> Account:
    return Account(name=name, kind=AccountKind.API_KEY,
                   api_key=Secret(f"sk-ant-api03-{name}-0123456789abcdef"), **kw)


def run(strategy: SelectionStrategy, candidates: Sequence[Candidate], n: int) -> list[str]:
    return [strategy.select(candidates, CTX) for _ in range(n)]


def test_round_robin_cycles_in_order() -> None:
    """Equal weights rotate through the candidates in their given order."""
    cs = [cand("a"), cand("b"), cand("c")]
    assert run(RoundRobin(), cs, 7) == ["a", "b", "c", "a", "b", "c", "a"]


def test_round_robin_smooth_weights() -> None:
    """Weights 5:1:1 give nginx's smooth sequence, never a burst of the light ones."""
    cs = [cand("a", 5), cand("b", 1), cand("c", 1)]
    assert run(RoundRobin(), cs, 14) == ["a", "a", "b", "a", "c", "a", "a"] * 2


def test_round_robin_weights_proportional() -> None:
    """Over many picks each account's share equals its share of the total weight."""
    cs = [cand("a", 3), cand("b", 2), cand("c", 1)]
    assert Counter(run(RoundRobin(), cs, 600)) == {"a": 300, "b": 200, "c": 100}


def test_zero_weight_only_as_last_resort() -> None:
    """A weight-0 account is never picked while a weighted one of its tier can serve."""
    rr = RoundRobin()
    assert set(run(rr, [cand("a", 0), cand("b", 1)], 10)) == {"b"}
    assert run(rr, [cand("a", 0)], 2) == ["a", "a"]


def test_priority_tiers() -> None:
    """Only the lowest priority number serves; higher numbers only when it is empty."""
    rr = RoundRobin()
    cs = [cand("backup", priority=5), cand("main1"), cand("main2")]
    assert Counter(run(rr, cs, 10)) == {"main1": 5, "main2": 5}
    assert run(rr, [cand("backup", priority=5), cand("other", priority=9)], 3) == ["backup"] * 3


def test_peek_does_not_move_rotation() -> None:
    """peek() answers what select() would, and leaves the rotation where it was."""
    rr = RoundRobin()
    cs = [cand("a"), cand("b"), cand("c")]
    rr.select(cs, CTX)
    assert [rr.peek(cs, CTX) for _ in range(3)] == ["b", "b", "b"]
    assert rr.select(cs, CTX) == "b"


def test_rotation_survives_changing_candidate_sets() -> None:
    """A candidate dropping out (cooling) and returning keeps the rotation even."""
    rr = RoundRobin()
    full = [cand("a"), cand("b"), cand("c")]
    assert run(rr, full, 2) == ["a", "b"]
    # c was due next, so it goes first; after that b and c alternate (bounded skew, as nginx).
    without_a = run(rr, full[1:], 40)
    assert without_a[0] == "c"
    assert abs(without_a.count("b") - without_a.count("c")) <= 2
    assert all(without_a[i:i + 3] not in (["b"] * 3, ["c"] * 3) for i in range(38))
    assert Counter(run(rr, full, 30)) == {"a": 10, "b": 10, "c": 10}


def test_forget_resets_an_account() -> None:
    """forget() drops an account's rotation memory (it starts fresh if it returns)."""
    rr = RoundRobin()
    cs = [cand("a"), cand("b")]
    rr.select(cs, CTX)
    rr.forget(["a", "unknown"])
    assert rr.select(cs, CTX) == "b"  # b kept its credit; a starts from zero
    assert rr.select(cs, CTX) == "a"


def test_first_available() -> None:
    """FirstAvailable always picks the first candidate of the best tier."""
    fa = FirstAvailable()
    cs = [cand("low", priority=1), cand("x"), cand("y")]
    assert run(fa, cs, 3) == ["x", "x", "x"]
    assert fa.peek(cs, CTX) == "x"
    fa.forget(["x"])
    assert fa.select(cs[:1], CTX) == "low"


# -- strategies inside the pool --------------------------------------------------------------

class LeastInFlight:
    """A custom strategy: the account with the fewest open requests (first on ties)."""

    def __init__(self) -> None:
        self.seen: list[tuple[list[str], SelectionContext]] = []
        self.forgotten: list[str] = []

    def select(self, candidates: Sequence[Candidate], context: SelectionContext) -> str:
        self.seen.append(([c.name for c in candidates], context))
        return min(candidates, key=lambda c: c.in_flight).name

    def peek(self, candidates: Sequence[Candidate], context: SelectionContext) -> str:
        return min(candidates, key=lambda c: c.in_flight).name

    def forget(self, names: Iterable[str]) -> None:
        self.forgotten.extend(names)


def test_custom_strategy_plugs_into_pool() -> None:
    """The pool hands a custom strategy only serving accounts, with in-flight counts and context."""
    strategy = LeastInFlight()
    pool = AccountPool([key("a"), key("b"), key("c")], strategy=strategy)
    pool.disable("c")
    ctx = SelectionContext(model="claude-sonnet-4-6", session_key="s1")
    first = pool.acquire(context=ctx)
    second = pool.acquire()
    assert (first.name, second.name) == ("a", "b")
    assert strategy.seen[0] == (["a", "b"], ctx)
    assert strategy.seen[1][1] == SelectionContext()
    pool.release("a")
    assert pool.peek() == "a"
    assert pool.acquire().name == "a"
    pool.replace_accounts([key("a"), key("c")])
    assert strategy.forgotten == ["b"]


def test_custom_strategy_never_sees_empty_candidates() -> None:
    """When nothing can serve, the pool raises instead of calling the strategy."""
    strategy = LeastInFlight()
    pool = AccountPool([key("a")], strategy=strategy)
    pool.disable("a")
    with pytest.raises(NoAccountAvailable):
        pool.acquire()
    assert strategy.seen == []
    assert pool.peek() is None


def test_pool_rotation_off_uses_first_available() -> None:
    """rotation=False sticks to the first account until it cannot serve."""
    pool = AccountPool([key("a"), key("b")], rotation=False)
    assert [pool.acquire().name for _ in range(3)] == ["a", "a", "a"]
    pool.report_rate_limited("a", {})
    assert pool.acquire().name == "b"


def test_pool_weights_and_priorities() -> None:
    """Pool acquisitions follow account weights within the best priority tier."""
    pool = AccountPool([key("spare", priority=1), key("big", weight=3), key("small")])
    assert Counter(pool.acquire().name for _ in range(40)) == {"big": 30, "small": 10}
    pool.disable("big")
    pool.disable("small")
    assert pool.acquire().name == "spare"


# -- least recently used and quota-aware -----------------------------------------------------

def used(name: str, last_used: float | None, **kw: Any) -> Candidate:
    return Candidate(name, kw.get("weight", 1), kw.get("priority", 0), kw.get("in_flight", 0),
                     kw.get("quota"), last_used)


def quota(utilization: float, reset: float | None = None) -> QuotaSnapshot:
    window = WindowQuota(utilization, "allowed", reset)
    return QuotaSnapshot("allowed", reset, "five_hour", {"5h": window}, 0.0, window)


def test_least_recently_used_prefers_never_used_then_oldest() -> None:
    lru = LeastRecentlyUsed()
    assert lru.select([used("a", 50.0), used("b", None), used("c", 10.0)], CTX) == "b"
    assert lru.select([used("a", 50.0), used("c", 10.0)], CTX) == "c"
    # Priorities and zero weights hold as for round-robin.
    assert lru.select([used("a", 50.0), used("c", 10.0, priority=1)], CTX) == "a"
    assert lru.select([used("a", 50.0), used("c", 10.0, weight=0)], CTX) == "a"


def test_least_recently_used_in_a_pool_rotates_and_prefers_a_returning_account(
        clock: Any) -> None:
    pool = AccountPool([key("a"), key("b"), key("c")], strategy=LeastRecentlyUsed(),
                       clock=clock)
    order = []
    for _ in range(6):
        clock.advance(1)
        order.append(pool.acquire().name)
    assert order == ["a", "b", "c", "a", "b", "c"]


def test_quota_aware_prefers_the_emptiest_binding_window() -> None:
    qa = QuotaAware()
    cands = [used("a", None, quota=quota(0.7)), used("b", None, quota=quota(0.2)),
             used("c", None, quota=quota(0.5))]
    assert qa.select(cands, CTX) == "b"


def test_quota_aware_drains_the_window_that_resets_soonest_among_equals() -> None:
    qa = QuotaAware()
    cands = [used("a", None, quota=quota(0.31, reset=9000.0)),
             used("b", None, quota=quota(0.32, reset=3000.0)),
             used("c", None, quota=quota(0.30, reset=6000.0))]
    assert qa.select(cands, CTX) == "b"  # same 5 % step: the soonest reset wins


def test_quota_aware_ties_go_to_the_fewest_in_flight_and_respect_tiers() -> None:
    qa = QuotaAware()
    assert qa.select([used("a", None, in_flight=2), used("b", None, in_flight=1)], CTX) == "b"
    assert qa.select([used("a", None, quota=quota(0.9)),
                      used("b", None, quota=quota(0.0), priority=1)], CTX) == "a"


def test_quota_aware_reads_api_key_remaining_headers() -> None:
    """API keys: the fullest anthropic-ratelimit-*-remaining bucket is the binding one."""
    busy = parse_quota({"anthropic-ratelimit-requests-limit": "100",
                        "anthropic-ratelimit-requests-remaining": "10",
                        "anthropic-ratelimit-tokens-limit": "1000",
                        "anthropic-ratelimit-tokens-remaining": "900"}, 0.0)
    idle = parse_quota({"anthropic-ratelimit-requests-limit": "100",
                        "anthropic-ratelimit-requests-remaining": "80"}, 0.0)
    assert busy is not None
    assert busy.binding is not None
    assert busy.binding.utilization == pytest.approx(0.9)
    assert QuotaAware().select([used("a", None, quota=busy), used("b", None, quota=idle)],
                               CTX) == "b"


def test_binding_window_is_the_representative_claim() -> None:
    snap = parse_quota({"anthropic-ratelimit-unified-status": "allowed",
                        "anthropic-ratelimit-unified-representative-claim": "seven_day",
                        "anthropic-ratelimit-unified-5h-utilization": "0.9",
                        "anthropic-ratelimit-unified-7d-utilization": "0.4",
                        "anthropic-ratelimit-unified-7d-reset": "1900000000"}, 0.0)
    assert snap is not None
    assert snap.binding is not None
    assert (snap.binding.utilization, snap.binding.reset) == (0.4, 1900000000.0)


@pytest.mark.parametrize("name", ["round_robin", "least_recently_used", "quota_aware",
                                  "first_available"])
def test_every_setting_name_builds_its_strategy(name: str) -> None:
    assert name in STRATEGIES
    strategy = strategy_named(name)
    assert strategy.select([cand("a"), cand("b")], CTX) in {"a", "b"}


def test_candidates_and_contexts_stay_frozen_value_objects() -> None:
    """Built through their slots for speed, they are still frozen dataclasses: equal by
    value, hashable, ``replace()``-able, and closed to assignment."""
    import dataclasses

    c = Candidate("a", 2, 1, 0, None)
    assert c == Candidate(name="a", weight=2, priority=1, in_flight=0, quota=None)
    assert c.last_used is None
    assert hash(c) == hash(Candidate("a", 2, 1, 0, None, None))
    assert dataclasses.replace(c, in_flight=3) == Candidate("a", 2, 1, 3, None)
    ctx = SelectionContext(model="m", headers=[(b"x-a", b"1")])
    assert (ctx.model, ctx.session_key, ctx.ticket, ctx.header("X-A")) == ("m", None, None, "1")
    assert dataclasses.replace(ctx, ticket=7).ticket == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.weight = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.model = "other"  # type: ignore[misc]
