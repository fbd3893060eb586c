"""The error taxonomy, row by row: what each upstream refusal does to the account and request.

First the table itself (:func:`classify`, pure), then what the pool does with each
verdict (cooldowns, backoff and the half-open probe, entitlement memory, escalation,
enable), then the same rows end to end through the proxy with the anthropic SDK
against the fake upstream.
"""

from __future__ import annotations

import math
from typing import Any

import anthropic
import pytest

from ccrotate import Account, AccountKind, AccountPool, Secret
from ccrotate._pool.state import AccountState
from ccrotate._pool.strategy import SelectionContext
from ccrotate._pool.taxonomy import AccountAction, Reason, Verdict, classify
from ccrotate._wire import SPEND_CAP
from ccrotate.testing import (
    ApiError,
    Forbidden,
    NotEntitled,
    Overloaded,
    RateLimited,
    SpendCapReached,
    Unauthorized,
)
from conftest import ACCOUNT_OF, HELLO, KEY_A, KEY_C, MODEL, TOKEN_B, FakeClock, Stack

T0 = 1_800_000_000.0
API, OAUTH = AccountKind.API_KEY, AccountKind.OAUTH
U = "anthropic-ratelimit-unified-"
RL = ("rate_limit_error", "Rate limited", None)

# (row id, status, headers, (type, message, code), kind, can_refresh) →
# (reason, action, cooled-until offset or None, fail over)
ROWS: list[tuple[str, int, dict[str, str], tuple[str, str, str | None], AccountKind, bool,
                 Reason, AccountAction, float | None, bool]] = [
    ("unified rejected, no retry-after", 429,
     {U + "status": "rejected", U + "reset": str(int(T0 + 3000))}, RL, OAUTH, False,
     Reason.QUOTA, AccountAction.COOL, 3000, True),
    ("one window rejected", 429,
     {U + "status": "allowed", U + "7d-status": "rejected", U + "7d-reset": str(int(T0 + 9000))},
     RL, OAUTH, False, Reason.QUOTA, AccountAction.COOL, 9000, True),
    ("api-key bucket exhausted with reset", 429,
     {"anthropic-ratelimit-tokens-remaining": "0",
      "anthropic-ratelimit-tokens-reset": "2027-01-15T08:00:20Z"}, RL, API, False,
     Reason.QUOTA, AccountAction.COOL, None, True),
    ("long retry-after is a window", 429, {"retry-after": "600"}, RL, API, False,
     Reason.QUOTA, AccountAction.COOL, 600, True),
    ("short retry-after is a throttle", 429, {"retry-after": "7"}, RL, API, False,
     Reason.THROTTLE, AccountAction.COOL, 7, True),
    ("spend cap without reset", 429, {}, ("rate_limit_error", "cap", SPEND_CAP), API, False,
     Reason.SPEND_CAP, AccountAction.COOL, 3600, True),
    ("spend cap with unified reset", 429,
     {U + "status": "rejected", U + "reset": str(int(T0 + 7200))},
     ("rate_limit_error", "cap", SPEND_CAP), OAUTH, False,
     Reason.SPEND_CAP, AccountAction.COOL, 7200, True),
    ("entitlement 403", 403, {}, ("permission_error", "no access to model", None), API, False,
     Reason.ENTITLEMENT, AccountAction.DENY_MODEL, None, True),
    ("entitlement 429", 429, {}, ("permission_error", "feature not enabled", None), OAUTH,
     False, Reason.ENTITLEMENT, AccountAction.DENY_MODEL, None, True),
    ("headerless 429", 429, {}, RL, API, False,
     Reason.RATE_LIMITED, AccountAction.BACKOFF, None, True),
    ("429 with an allowed window's reset only", 429,
     {U + "status": "allowed", U + "reset": str(int(T0 + 18000))}, RL, OAUTH, False,
     Reason.RATE_LIMITED, AccountAction.BACKOFF, None, True),
    ("529", 529, {}, ("overloaded_error", "Overloaded", None), API, False,
     Reason.OVERLOADED, AccountAction.BACKOFF, None, True),
    ("overloaded event in a stream", 529, {}, ("overloaded_error", "Overloaded", None), OAUTH,
     False, Reason.OVERLOADED, AccountAction.BACKOFF, None, True),
    ("500", 500, {}, ("api_error", "boom", None), API, False,
     Reason.SERVER_ERROR, AccountAction.BACKOFF, None, True),
    ("503", 503, {}, ("api_error", "", None), OAUTH, False,
     Reason.SERVER_ERROR, AccountAction.BACKOFF, None, True),
    ("401 on OAuth, refresh possible", 401, {}, ("authentication_error", "expired", None),
     OAUTH, True, Reason.REFRESH, AccountAction.REFRESH, None, True),
    ("401 on OAuth after the refresh", 401, {}, ("authentication_error", "bad", None),
     OAUTH, False, Reason.AUTH, AccountAction.AUTH_ERROR, None, True),
    ("401 on an API key", 401, {}, ("authentication_error", "invalid x-api-key", None),
     API, True, Reason.AUTH, AccountAction.AUTH_ERROR, None, True),
    ("400 is the client's", 400, {}, ("invalid_request_error", "bad", None), API, False,
     Reason.CLIENT_ERROR, AccountAction.COUNT, None, False),
    ("404 is the client's", 404, {}, ("not_found_error", "model", None), OAUTH, False,
     Reason.CLIENT_ERROR, AccountAction.COUNT, None, False),
    ("413 is the client's", 413, {}, ("request_too_large", "big", None), API, False,
     Reason.CLIENT_ERROR, AccountAction.COUNT, None, False),
]


@pytest.mark.parametrize(
    ("status", "headers", "error", "kind", "can_refresh", "reason", "action", "cooled",
     "fail_over"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_classify_row(status: int, headers: dict[str, str],
                      error: tuple[str, str, str | None], kind: AccountKind, can_refresh: bool,
                      reason: Reason, action: AccountAction, cooled: float | None,
                      fail_over: bool) -> None:
    verdict = classify(status, headers, error, kind=kind, now=T0, can_refresh=can_refresh)
    assert (verdict.reason, verdict.action, verdict.fail_over) == (reason, action, fail_over)
    assert verdict.error_type == error[0]
    assert verdict.message == error[1]
    if action is AccountAction.COOL:
        assert verdict.until is not None
        assert verdict.until > T0
        if cooled is not None:
            assert verdict.until == pytest.approx(T0 + cooled, abs=1)
    else:
        assert verdict.until is None


# -- what the pool does with each verdict ----------------------------------------------------

def key(name: str) -> Account:
    return Account(name=name, kind=AccountKind.API_KEY, api_key=Secret(f"sk-ant-api03-{name}"))


def make(clock: FakeClock, *names: str, **options: Any) -> AccountPool:
    return AccountPool([key(n) for n in names], clock=clock, **options)


def verdict(status: int, error: tuple[str, str, str | None] = RL, now: float = T0,
            **headers: str) -> Verdict:
    return classify(status, {k.replace("_", "-"): v for k, v in headers.items()}, error,
                    kind=API, now=now)


def test_a_cooling_verdict_keeps_the_account_out_until_the_reset(clock: FakeClock) -> None:
    pool = make(clock, "a", "b")
    until = pool.report("a", verdict(429, now=clock.now, retry_after="7"))
    assert until == pytest.approx(clock.now + 7)
    status = pool.status("a")
    assert (status.state, status.out_reason) == (AccountState.RATE_LIMITED, "throttle")
    assert [pool.acquire().name for _ in range(2)] == ["b", "b"]
    clock.advance(7.5)
    assert pool.status("a").state is AccountState.AVAILABLE
    assert pool.status("a").out_reason is None


def test_spend_cap_shows_its_own_reason(clock: FakeClock) -> None:
    pool = make(clock, "a", "b")
    pool.report("a", verdict(429, ("rate_limit_error", "cap", SPEND_CAP), now=clock.now))
    status = pool.status("a")
    assert (status.state, status.out_reason) == (AccountState.RATE_LIMITED, "spend_cap")
    assert status.cooldown_until is not None
    assert status.cooldown_until - clock.now >= 3000


def test_backoff_doubles_with_jitter_and_probes_once(clock: FakeClock) -> None:
    """Headerless 429/529/5xx: out for base·2ⁿ (jittered to half of it at least), then a
    single half-open probe; a failed probe backs off longer, a good one restores it."""
    pool = make(clock, "a", "b", backoff_base=10.0, backoff_cap=100.0)
    first = pool.report("a", verdict(529, ("overloaded_error", "Overloaded", None)))
    assert first is not None
    assert clock.now + 5 <= first <= clock.now + 10
    assert pool.status("a").state is AccountState.BACKING_OFF
    assert pool.status("a").out_reason == "overloaded"
    clock.advance(10)
    assert pool.status("a").state is AccountState.PROBING
    probe = pool.acquire("a")
    # While the probe is out nobody else gets ``a``, and naming it is refused too.
    assert [pool.acquire().name for _ in range(3)] == ["b", "b", "b"]
    with pytest.raises(Exception, match="probing"):
        pool.acquire("a")
    second = pool.report(probe.name, verdict(500, ("api_error", "boom", None), now=clock.now))
    pool.release(probe.name)
    assert second is not None
    assert clock.now + 10 <= second <= clock.now + 20
    clock.advance(20)
    assert pool.acquire("a").name == "a"
    pool.report_success("a")
    pool.release("a")
    status = pool.status("a")
    assert (status.state, status.last_error, status.out_reason) == (
        AccountState.AVAILABLE, None, None)
    # The streak restarts: the next failure backs off for the base again.
    again = pool.report("a", verdict(529, ("overloaded_error", "Overloaded", None),
                                     now=clock.now))
    assert again is not None
    assert again <= clock.now + 10


def test_backoff_is_capped(clock: FakeClock) -> None:
    pool = make(clock, "a", backoff_base=10.0, backoff_cap=25.0)
    for _ in range(6):
        until = pool.report("a", verdict(503, ("api_error", "", None)))
        assert until is not None
        clock.advance(until - clock.now)
        assert pool.status("a").state is AccountState.PROBING
    assert until <= clock.now + 25


def test_a_cancelled_probe_lets_the_next_caller_probe(clock: FakeClock) -> None:
    pool = make(clock, "a", backoff_base=1.0)
    pool.report("a", verdict(500, ("api_error", "", None)))
    clock.advance(1)
    pool.acquire()
    pool.release("a")  # no outcome reported: the client went away
    assert pool.acquire().name == "a"


def test_entitlement_is_per_model_and_expires(clock: FakeClock) -> None:
    """A 403 keeps the account off that model (only) for entitlement_ttl seconds."""
    pool = make(clock, "a", "b", entitlement_ttl=600)
    opus, sonnet = SelectionContext(model="claude-opus-4-8"), SelectionContext(model=MODEL)
    pool.report("a", verdict(403, ("permission_error", "no opus", None)),
                model="claude-opus-4-8")
    status = pool.status("a")
    assert status.state is AccountState.AVAILABLE  # no cooldown: other models still fine
    assert status.denied_models == ("claude-opus-4-8",)
    assert pool.denied("a", "claude-opus-4-8")
    assert not pool.denied("a", MODEL)
    assert [pool.acquire(context=opus).name for _ in range(3)] == ["b", "b", "b"]
    assert sorted(pool.acquire(context=sonnet).name for _ in range(2)) == ["a", "b"]
    clock.advance(601)
    assert not pool.denied("a", "claude-opus-4-8")
    assert sorted(pool.acquire(context=opus).name for _ in range(2)) == ["a", "b"]


def test_repeated_403s_from_different_requests_become_account_level(clock: FakeClock) -> None:
    pool = make(clock, "a", "b", forbidden_threshold=3)
    for model in ("m1", "m2"):
        pool.report("a", verdict(403, ("permission_error", "nope", None)), model=model)
    assert pool.status("a").state is AccountState.AVAILABLE
    pool.report("a", verdict(403, ("permission_error", "nope", None)), model="m3")
    status = pool.status("a")
    assert (status.state, status.out_reason) == (AccountState.AUTH_ERROR, "forbidden")
    assert "3 refusals" in (status.last_error or "")


def test_a_success_between_403s_resets_the_strikes(clock: FakeClock) -> None:
    pool = make(clock, "a", forbidden_threshold=2)
    pool.report("a", verdict(403, ("permission_error", "nope", None)), model="m1")
    pool.report_success("a")
    pool.report("a", verdict(403, ("permission_error", "nope", None)), model="m2")
    assert pool.status("a").state is AccountState.AVAILABLE


@pytest.mark.parametrize("how", ["auth", "cool", "backoff", "disabled", "forbidden", "deny"])
def test_enable_clears_every_state(clock: FakeClock, how: str) -> None:
    pool = make(clock, "a", forbidden_threshold=1)
    if how == "auth":
        pool.report("a", verdict(401, ("authentication_error", "bad key", None)))
    elif how == "cool":
        pool.report("a", verdict(429, now=clock.now, retry_after="600"))
    elif how == "backoff":
        pool.report("a", verdict(529, ("overloaded_error", "", None)))
    elif how == "disabled":
        pool.disable("a")
    else:
        pool.report("a", verdict(403, ("permission_error", "x", None)), model=MODEL)
    assert pool.status("a").state is not AccountState.AVAILABLE or how == "deny"
    pool.enable("a")
    status = pool.status("a")
    assert (status.state, status.last_error, status.out_reason, status.cooldown_until) == (
        AccountState.AVAILABLE, None, None, None)


def test_a_success_clears_last_error(clock: FakeClock) -> None:
    pool = make(clock, "a")
    pool.report("a", verdict(403, ("permission_error", "x", None)), model="m")
    assert pool.status("a").last_error is not None
    pool.report_success("a", {})
    assert pool.status("a").last_error is None


def test_a_connection_failure_only_counts(clock: FakeClock) -> None:
    from ccrotate._pool.taxonomy import CONNECTION

    pool = make(clock, "a")
    assert pool.report("a", CONNECTION) is None
    status = pool.status("a")
    assert (status.state, status.failures) == (AccountState.AVAILABLE, 1)


# -- end to end: the anthropic SDK through the proxy against the fake ------------------------

def sdk(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="client", max_retries=0)


def create(stack: Stack, model: str = MODEL, pin: str | None = None) -> Any:
    return sdk(stack).messages.with_raw_response.create(
        model=model, max_tokens=32, messages=HELLO,
        extra_headers={"x-account-name": pin} if pin else None)


def served_by(stack: Stack) -> list[str]:
    return [ACCOUNT_OF[r.credential or ""] for r in stack.fake.requests_for(path="/v1/messages")]


def test_e2e_unified_rejection_cools_until_the_window_reset(proxy_server: Stack) -> None:
    """An OAuth 429 with unified ``rejected`` headers and no retry-after cools ``b`` until
    the reset the headers name; its utilization shows in its status."""
    stack = proxy_server
    stack.fake.script(TOKEN_B, RateLimited(reset_after=1800))
    create(stack)  # a
    assert create(stack).headers["x-ccrotate-account"] == "c"
    status = stack.pool.status("b")
    assert (status.state, status.out_reason) == (AccountState.RATE_LIMITED, "quota")
    assert status.cooldown_until is not None
    assert status.cooldown_until - stack.clock.now == pytest.approx(1800, abs=5)
    assert status.quota is not None
    assert status.quota.windows["5h"].utilization == 1.0


def test_e2e_short_throttle_pauses_briefly(proxy_server: Stack) -> None:
    stack = proxy_server
    stack.fake.script(KEY_A, ApiError(status=429, error_type="rate_limit_error",
                                      message="slow down", retry_after=3))
    assert create(stack).headers["x-ccrotate-account"] == "b"
    status = stack.pool.status("a")
    assert (status.state, status.out_reason) == (AccountState.RATE_LIMITED, "throttle")
    assert status.cooldown_until is not None
    assert status.cooldown_until - stack.clock.now == pytest.approx(3, abs=1)
    stack.clock.advance(4)
    assert stack.pool.status("a").state is AccountState.AVAILABLE


def test_e2e_spend_cap_takes_the_account_out(proxy_server: Stack) -> None:
    stack = proxy_server
    stack.fake.script(KEY_A, SpendCapReached())
    assert create(stack).headers["x-ccrotate-account"] == "b"
    assert stack.pool.status("a").out_reason == "spend_cap"
    assert [create(stack).headers["x-ccrotate-account"] for _ in range(4)].count("a") == 0


def test_e2e_entitlement_403_fails_over_without_cooling(proxy_server: Stack) -> None:
    """A model the account may not use: the request moves on, the account keeps serving
    other models, and it is not asked for that model again for a while."""
    stack = proxy_server
    opus = "claude-opus-4-8"
    stack.fake.script(KEY_A, NotEntitled(model=opus))
    assert create(stack, opus).headers["x-ccrotate-account"] == "b"
    assert stack.pool.status("a").state is AccountState.AVAILABLE
    stack.fake.clear_requests()
    picked = [create(stack, opus).headers["x-ccrotate-account"] for _ in range(4)]
    assert "a" not in picked
    assert create(stack, MODEL, pin="a").headers["x-ccrotate-account"] == "a"


def test_e2e_entitlement_for_every_account_returns_the_403(proxy_server: Stack) -> None:
    stack = proxy_server
    stack.fake.script_any(NotEntitled(), NotEntitled(), NotEntitled())
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        create(stack, "claude-opus-4-8")
    assert "does not have access" in str(caught.value)


def test_e2e_repeated_403s_make_the_account_forbidden(serve_proxy: Any, pool: AccountPool
                                                      ) -> None:
    stack: Stack = serve_proxy()
    pool.forbidden_threshold = 2
    stack.fake.set_default(KEY_A, Forbidden())
    # Different models, so each 403 comes from a request that had not been refused before.
    for model in ("claude-opus-4-8", "claude-haiku-4-5"):
        with pytest.raises(anthropic.PermissionDeniedError):
            create(stack, model, pin="a")
    status = pool.status("a")
    assert (status.state, status.out_reason) == (AccountState.AUTH_ERROR, "forbidden")


def test_e2e_headerless_429_backs_off_then_probes(proxy_server: Stack) -> None:
    stack = proxy_server
    stack.fake.script(KEY_A, ApiError(status=429, error_type="rate_limit_error",
                                      message="busy", headers={}))
    assert create(stack).headers["x-ccrotate-account"] == "b"
    status = stack.pool.status("a")
    assert (status.state, status.out_reason) == (AccountState.BACKING_OFF, "rate_limited")
    stack.clock.advance(stack.pool.backoff_base)
    assert stack.pool.status("a").state is AccountState.PROBING


def test_e2e_api_key_401_is_auth_error_and_enable_brings_it_back(proxy_server: Stack
                                                                 ) -> None:
    stack = proxy_server
    stack.fake.script(KEY_C, Unauthorized())
    for _ in range(3):
        create(stack)
    assert stack.pool.status("c").state is AccountState.AUTH_ERROR
    stack.pool.enable("c")
    assert stack.pool.status("c").state is AccountState.AVAILABLE
    assert stack.pool.status("c").last_error is None


def test_e2e_overloaded_everywhere_backs_every_account_off(proxy_server: Stack) -> None:
    stack = proxy_server
    stack.fake.script_any(Overloaded(), Overloaded(), Overloaded())
    with pytest.raises(anthropic.APIStatusError) as caught:
        create(stack)
    assert caught.value.status_code == 529
    assert {s.out_reason for s in stack.pool.statuses()} == {"overloaded"}


# -- an exhausted pool answers like the upstream would ---------------------------------------

def test_exhausted_pool_answers_with_the_last_refusal_and_the_earliest_retry(
        proxy_server: Stack) -> None:
    """Every account refuses: the client gets the last refusal's own type and message and
    ``retry-after`` = when the first account can serve again (a backoff counts too)."""
    stack = proxy_server
    stack.fake.script(KEY_A, RateLimited(retry_after=500, reset_after=500))
    stack.fake.script(TOKEN_B, ApiError(status=429, error_type="rate_limit_error",
                                        message="busy", headers={}))  # backs off ~2 s
    stack.fake.script(KEY_C, RateLimited(retry_after=300, reset_after=300,
                                         message="Number of requests has exceeded your limit"))
    with pytest.raises(anthropic.RateLimitError) as caught:
        create(stack)
    soonest = stack.pool.soonest_recovery()
    assert soonest is not None
    assert soonest - stack.clock.now <= stack.pool.backoff_base  # b's backoff, not a cooldown
    headers = caught.value.response.headers
    assert headers["retry-after"] == str(max(1, math.ceil(soonest - stack.clock.now)))
    body = caught.value.response.json()
    assert body["error"] == {"type": "rate_limit_error",
                             "message": "Number of requests has exceeded your limit"}


def test_exhausted_pool_with_nothing_tried_keeps_the_upstream_words(proxy_server: Stack
                                                                     ) -> None:
    """Nothing can serve at the start: the answer repeats the soonest account's refusal."""
    stack = proxy_server
    for key_, after in ((KEY_A, 900), (TOKEN_B, 400), (KEY_C, 700)):
        stack.fake.script(key_, RateLimited(retry_after=after, reset_after=after,
                                            message=f"limit of {ACCOUNT_OF[key_]}"))
    with pytest.raises(anthropic.RateLimitError):
        create(stack)
    stack.clock.advance(100)
    with pytest.raises(anthropic.RateLimitError) as caught:
        create(stack)
    assert len(stack.fake.requests_for(path="/v1/messages")) == 3
    # b's reset, 400 s after the 429, 100 s ago (the headers' whole seconds may add one).
    assert caught.value.response.headers["retry-after"] in {"300", "301"}
    assert caught.value.response.json()["error"] == {"type": "rate_limit_error",
                                                     "message": "limit of b"}


def test_exhausted_pool_of_spend_caps_keeps_the_code(proxy_server: Stack) -> None:
    stack = proxy_server
    stack.fake.script_any(SpendCapReached(), SpendCapReached(), SpendCapReached())
    with pytest.raises(anthropic.RateLimitError) as caught:
        create(stack)
    assert caught.value.response.json()["error"]["details"] == {
        "error_code": "enforced_spend_limit_reached"}
    assert int(caught.value.response.headers["retry-after"]) >= 3000


def test_a_model_refused_everywhere_is_a_403_without_asking_again(proxy_server: Stack
                                                                   ) -> None:
    """Once every account was refused a model, the next request for it gets the
    upstream's 403 at once (nothing sent), while other models still work."""
    stack = proxy_server
    opus = "claude-opus-4-8"
    stack.fake.script_any(NotEntitled(model=opus), NotEntitled(model=opus),
                          NotEntitled(model=opus))
    with pytest.raises(anthropic.PermissionDeniedError):
        create(stack, opus)
    sent = len(stack.fake.requests_for(path="/v1/messages"))
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        create(stack, opus)
    assert len(stack.fake.requests_for(path="/v1/messages")) == sent
    assert "does not have access to model" in caught.value.message
    assert create(stack, MODEL).status_code == 200
