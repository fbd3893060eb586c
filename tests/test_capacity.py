"""Per-account concurrency caps (``maxConcurrent``): the next account serves at the cap;
when every account is at its cap a request waits for a slot, up to capacity_wait, then 429."""

from __future__ import annotations

import dataclasses
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import pytest

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    AccountsFile,
    AccountsFileError,
    NoAccountAvailable,
    Secret,
)
from ccrotate.testing import Gate, Reply
from conftest import HELLO, MODEL, FakeClock, Stack, make_accounts


def key(name: str, cap: int | None = None) -> Account:
    return Account(name=name, kind=AccountKind.API_KEY, api_key=Secret(f"sk-ant-api03-{name}"),
                   max_concurrent=cap)


# -- the accounts file -----------------------------------------------------------------------

def test_max_concurrent_is_read_and_written_back(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps({"version": 1, "accounts": {
        "capped": {"apiKey": "sk-ant-api03-capped", "maxConcurrent": 2},
        "free": {"apiKey": "sk-ant-api03-free"}}}))
    capped, free = AccountsFile(path).load()
    assert (capped.max_concurrent, free.max_concurrent) == (2, None)
    AccountsFile(path).update(lambda accounts: accounts)
    saved = json.loads(path.read_text())["accounts"]
    assert saved["capped"]["maxConcurrent"] == 2
    assert "maxConcurrent" not in saved["free"]


@pytest.mark.parametrize("bad", [0, -1, "2", True, 1.5])
def test_max_concurrent_must_be_a_positive_integer(tmp_path: Path, bad: Any) -> None:
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps({"version": 1, "accounts": {
        "x": {"apiKey": "sk-ant-api03-x", "maxConcurrent": bad}}}))
    with pytest.raises(AccountsFileError, match="maxConcurrent"):
        AccountsFile(path).load()


# -- the pool --------------------------------------------------------------------------------

def test_at_its_cap_the_next_account_serves(clock: FakeClock) -> None:
    pool = AccountPool([key("a", 1), key("b")], clock=clock)
    assert pool.acquire().name == "a"
    assert [pool.acquire().name for _ in range(3)] == ["b", "b", "b"]  # a is full
    pool.release("a")
    assert "a" in {pool.acquire().name for _ in range(2)}


def test_every_account_at_its_cap_is_a_wait_not_an_outage(clock: FakeClock) -> None:
    pool = AccountPool([key("a", 1), key("b", 2)], clock=clock)
    for _ in range(3):
        pool.acquire()
    with pytest.raises(NoAccountAvailable) as caught:
        pool.acquire()
    assert caught.value.at_capacity
    assert caught.value.retry_after == 1.0
    with pytest.raises(NoAccountAvailable) as pinned:
        pool.acquire("a")
    assert pinned.value.at_capacity


def test_a_cooling_pool_is_not_at_capacity(clock: FakeClock) -> None:
    pool = AccountPool([key("a", 1)], clock=clock)
    pool.report_rate_limited("a", {"retry-after": "30"})
    with pytest.raises(NoAccountAvailable) as caught:
        pool.acquire()
    assert not caught.value.at_capacity


def test_release_wakes_the_waiters_until_undone(clock: FakeClock) -> None:
    pool = AccountPool([key("a", 1)], clock=clock)
    woken: list[int] = []
    undo = pool.on_release(lambda: woken.append(1))
    pool.acquire()
    pool.release("a")
    undo()
    pool.acquire()
    pool.release("a")
    assert woken == [1]


# -- end to end ------------------------------------------------------------------------------

@pytest.fixture
def pool(clock: FakeClock) -> AccountPool:
    return AccountPool([dataclasses.replace(a, max_concurrent=1) for a in make_accounts()],
                       clock=clock)


def ask(stack: Stack) -> Any:
    client = anthropic.Anthropic(base_url=stack.url, api_key="client", max_retries=0)
    return client.messages.with_raw_response.create(model=MODEL, max_tokens=16,
                                                    messages=HELLO)


def test_e2e_a_request_waits_for_a_slot_and_is_served(serve_proxy: Any) -> None:
    stack: Stack = serve_proxy(capacity_wait=30)
    gate = Gate()
    stack.fake.script_any(*(Reply(hold=gate) for _ in range(3)))
    with ThreadPoolExecutor(4) as threads:
        held = [threads.submit(ask, stack) for _ in range(3)]
        assert gate.wait_arrivals(3)
        waiting = threads.submit(ask, stack)
        deadline = time.monotonic() + 5
        while not stack.pool._release_waiters:  # the fourth is parked, waiting for a release
            assert time.monotonic() < deadline, "the fourth request never waited"
            time.sleep(0.005)
        # Nothing more reached the upstream meanwhile.
        assert len(stack.fake.requests_for(path="/v1/messages")) == 3
        assert not waiting.done()
        gate.release()
        answers = [f.result(timeout=10) for f in [*held, waiting]]
    assert [a.status_code for a in answers] == [200, 200, 200, 200]
    assert len(stack.fake.requests_for(path="/v1/messages")) == 4
    assert stack.wait_idle()


def test_e2e_no_slot_within_capacity_wait_is_a_429(serve_proxy: Any) -> None:
    stack: Stack = serve_proxy(capacity_wait=0.05)
    gate = Gate()
    stack.fake.script_any(*(Reply(hold=gate) for _ in range(3)))
    with ThreadPoolExecutor(3) as threads:
        held = [threads.submit(ask, stack) for _ in range(3)]
        assert gate.wait_arrivals(3)
        with pytest.raises(anthropic.RateLimitError) as caught:
            ask(stack)
        gate.release()
        assert [f.result(timeout=10).status_code for f in held] == [200, 200, 200]
    assert caught.value.response.headers["retry-after"] == "1"
    assert "maxConcurrent" in caught.value.message
    assert stack.wait_idle()
