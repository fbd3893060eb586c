"""Strategies end to end: the anthropic SDK through the proxy, the fake upstream's
rate-limit headers (unified utilization for OAuth, remaining counts for API keys)
steering a quota-aware pool."""

from __future__ import annotations

import anthropic
import pytest

from ccrotate import AccountPool, QuotaAware
from ccrotate._pool.pool import QUOTA_REFRESH
from ccrotate.testing import Limits
from conftest import HELLO, KEY_A, KEY_C, MODEL, TOKEN_B, FakeClock, Stack, make_accounts


@pytest.fixture
def pool(clock: FakeClock) -> AccountPool:
    return AccountPool(make_accounts(), clock=clock, strategy=QuotaAware())


def ask(stack: Stack) -> str:
    client = anthropic.Anthropic(base_url=stack.url, api_key="client", max_retries=0)
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=16,
                                                   messages=HELLO)
    # The pool reads a success's headers at most once a second of its clock.
    stack.clock.advance(QUOTA_REFRESH + 0.1)
    return raw.headers["x-ccrotate-account"]


def test_quota_aware_steers_away_from_the_fullest_window(proxy_server: Stack) -> None:
    stack = proxy_server
    stack.fake.set_limits(KEY_A, Limits(requests_limit=10))
    stack.fake.set_limits(TOKEN_B, Limits(five_hour=0.6, seven_day=0.1))
    stack.fake.set_limits(KEY_C, Limits(requests_limit=4))
    # Nothing known yet: file order, and each answer teaches the pool its account's quota.
    assert [ask(stack) for _ in range(3)] == ["a", "b", "c"]
    b = stack.pool.status("b").quota
    assert b is not None
    assert b.binding is not None
    assert b.binding.utilization == 0.6
    # b is at 60 % of its five-hour window; a and c are at 10-50 % of their request limits.
    later = [ask(stack) for _ in range(4)]
    assert "b" not in later
    assert later[0] == "a"  # 10 % used beats c's 25 %
