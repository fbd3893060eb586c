"""Session affinity: the key a request carries, and the pool keeping a session on its
account while it can serve, failing over and rebinding when it cannot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import pytest

from ccrotate import Account, AccountKind, AccountPool, Secret, SelectionContext
from ccrotate._proxy.session import PREFIX_LIMIT, prefix_key, session_key, session_of_user_id
from ccrotate.testing import RateLimited
from conftest import ACCOUNT_OF, CLAUDE_CODE_SAMPLE, HELLO, MODEL, FakeClock, Stack

SAMPLE = CLAUDE_CODE_SAMPLE
CLAUDE_CODE_USER = ('{"device_id":"80fd","account_uuid":"",'
                    '"session_id":"1523d9c8-ece3-4416-83e2-3a5fda5defbc"}')


# -- the key -------------------------------------------------------------------------------

@pytest.mark.parametrize(("user_id", "session"), [
    (CLAUDE_CODE_USER, "1523d9c8-ece3-4416-83e2-3a5fda5defbc"),
    ('{"session_id": "abc", "device_id": "x"}', "abc"),
    ("user_9f86d0_account_1b4e28ba-2fa1_session_6fa459ea-ee8a", "6fa459ea-ee8a"),
    ('{"device_id":"x"}', None),
    ('{"session_id":""}', None),
    ("user-42", None),
    ("", None),
    (None, None),
])
def test_session_of_user_id(user_id: str | None, session: str | None) -> None:
    assert session_of_user_id(user_id) == session


def test_the_real_claude_code_request_yields_its_session() -> None:
    if not SAMPLE.exists():
        pytest.skip("sample request not available")
    sample = json.loads(SAMPLE.read_text())
    user_id = sample["body"]["metadata"]["user_id"]
    assert session_of_user_id(user_id) == json.loads(user_id)["session_id"]


def test_key_precedence_user_id_then_header_then_cache_prefix() -> None:
    body = b'{"system":[{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}]}'
    headers = [(b"x-session-id", b"s-1")]
    assert session_key(CLAUDE_CODE_USER, headers, body, b"x-session-id") == (
        "session:1523d9c8-ece3-4416-83e2-3a5fda5defbc")
    assert session_key("user-42", headers, body, b"x-session-id") == "header:s-1"
    assert session_key("user-42", [], body, b"x-session-id") == "user:user-42"
    assert session_key(None, headers, body, None) == prefix_key(body)
    assert session_key(None, [], b'{"messages":[]}', b"x-session-id") is None


def test_prefix_key_follows_the_prefix_up_to_the_first_breakpoint() -> None:
    one = b'{"system":"A","messages":[{"cache_control":1}],"x":1}'
    same = b'{"system":"A","messages":[{"cache_control":1}],"x":2}'  # differs after it
    other = b'{"system":"B","messages":[{"cache_control":1}],"x":1}'
    assert prefix_key(one) == prefix_key(same) != prefix_key(other)
    assert prefix_key(b'{"system":"A"}') is None
    big = b'{"s":"' + b"x" * (PREFIX_LIMIT * 2) + b'","cache_control":1}'
    assert prefix_key(big) is not None  # bounded work, still a key


# -- the pool --------------------------------------------------------------------------------

def key(name: str) -> Account:
    return Account(name=name, kind=AccountKind.API_KEY, api_key=Secret(f"sk-ant-api03-{name}"))


def session(name: str) -> SelectionContext:
    return SelectionContext(model=MODEL, session_key=name)


def test_a_session_stays_on_its_account_while_others_rotate(clock: FakeClock) -> None:
    pool = AccountPool([key("a"), key("b"), key("c")], clock=clock)
    first = pool.acquire(context=session("s1")).name
    picks = []
    for _ in range(5):
        picks.append(pool.acquire(context=session("s1")).name)
        pool.acquire()  # unrelated traffic keeps rotating
    assert set(picks) == {first}
    assert pool.affinity_counts == {"hit": 5, "miss": 1, "rebind": 0}
    assert pool.bound("s1") == first


def test_a_bound_account_that_cannot_serve_fails_over_and_rebinds(clock: FakeClock) -> None:
    pool = AccountPool([key("a"), key("b")], clock=clock)
    assert pool.acquire(context=session("s")).name == "a"
    pool.report_rate_limited("a", {"retry-after": "60"})
    assert pool.acquire(context=session("s")).name == "b"
    assert pool.bound("s") == "b"
    clock.advance(61)
    assert pool.acquire(context=session("s")).name == "b"  # stays on the new account
    assert pool.affinity_counts == {"hit": 1, "miss": 1, "rebind": 1}


def test_a_failover_within_one_request_rebinds(clock: FakeClock) -> None:
    pool = AccountPool([key("a"), key("b")], clock=clock)
    assert pool.acquire(context=session("s")).name == "a"
    assert pool.acquire(exclude=["a"], context=session("s")).name == "b"
    assert pool.bound("s") == "b"


def test_bindings_expire_after_the_ttl_and_each_use_extends_them(clock: FakeClock) -> None:
    pool = AccountPool([key("a"), key("b")], clock=clock, affinity_ttl=300)
    pool.acquire(context=session("s"))
    clock.advance(200)
    pool.acquire(context=session("s"))
    clock.advance(200)
    assert pool.bound("s") == "a"  # 400 s after binding, 200 s after its last use
    clock.advance(301)
    assert pool.bound("s") is None


def test_affinity_can_be_switched_off(clock: FakeClock) -> None:
    pool = AccountPool([key("a"), key("b")], clock=clock, affinity_ttl=None)
    assert not pool.affinity
    assert [pool.acquire(context=session("s")).name for _ in range(4)] == ["a", "b", "a", "b"]


def test_concurrent_requests_of_one_session_are_not_serialized(clock: FakeClock) -> None:
    pool = AccountPool([key("a"), key("b")], clock=clock)
    for _ in range(3):
        pool.acquire(context=session("s"))  # none released yet
    assert pool.status("a").in_flight == 3


# -- end to end ------------------------------------------------------------------------------

def sdk(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="client", max_retries=0)


def ask(stack: Stack, **extra: Any) -> str:
    raw = sdk(stack).messages.with_raw_response.create(model=MODEL, max_tokens=16,
                                                       messages=HELLO, **extra)
    return raw.headers["x-ccrotate-account"]


def test_e2e_a_claude_code_session_sticks_and_fails_over(proxy_server: Stack) -> None:
    stack = proxy_server
    meta = {"metadata": {"user_id": CLAUDE_CODE_USER}}
    first = ask(stack, **meta)
    assert [ask(stack, **meta) for _ in range(3)] == [first] * 3
    assert {ask(stack) for _ in range(3)} == {"a", "b", "c"}  # sessionless traffic rotates
    stack.fake.script(next(k for k, v in ACCOUNT_OF.items() if v == first),
                      RateLimited(retry_after=60, reset_after=60))
    moved = ask(stack, **meta)
    assert moved != first
    assert ask(stack, **meta) == moved


def test_e2e_session_header_and_cache_prefix(proxy_server: Stack) -> None:
    stack = proxy_server
    headers = {"extra_headers": {"X-Session-Id": "conv-7"}}
    first = ask(stack, **headers)
    assert [ask(stack, **headers) for _ in range(2)] == [first] * 2
    system = [{"type": "text", "text": "You are terse.",
               "cache_control": {"type": "ephemeral"}}]
    cached = ask(stack, system=system)
    assert [ask(stack, system=system) for _ in range(2)] == [cached] * 2


@pytest.mark.parametrize(("on", "ttl"), [(True, 120.0), (False, None)])
def test_settings_turn_affinity_on_and_off(tmp_path: Path, on: bool, ttl: float | None
                                           ) -> None:
    from ccrotate import Settings
    from ccrotate._server.rotator import Rotator

    path = tmp_path / "accounts.json"
    path.write_text(json.dumps({"version": 1, "accounts": {
        "k1": {"apiKey": "sk-ant-api03-k1"}, "k2": {"apiKey": "sk-ant-api03-k2"}}}))
    rotator = Rotator(Settings(session_affinity=on, affinity_ttl=120.0,
                               session_header="X-Conversation", accounts_path=path,
                               credentials_path=tmp_path / "none.json"))
    pool = rotator.pool
    assert pool.affinity is on
    assert pool.session_header == b"x-conversation"
    if ttl is not None:
        pool.acquire(context=session("s"))
        assert pool.bound("s") is not None
