"""The proxy driven by the official ``anthropic`` SDK over real loopback sockets.

Every test serves the fake upstream and the proxy with uvicorn (``proxy_server`` in
conftest): accounts ``a`` and ``c`` are API keys, ``b`` is OAuth; rotation order is
``a, b, c``. Cooldowns end by moving the pool's fake clock, never by sleeping.
"""

from __future__ import annotations

import math
import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import anthropic
import httpx
import pytest

from ccrotate import AccountState
from ccrotate.testing import (
    ApiError,
    CutStream,
    Forbidden,
    Overloaded,
    RateLimited,
    SpendCapReached,
    StreamError,
    Unauthorized,
    serve_app,
)
from conftest import ACCOUNT_OF, HELLO, KEY_A, KEY_C, MODEL, TOKEN_B, Stack

ACCOUNT = "x-ccrotate-account"


def sdk(stack: Stack, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="client-key", max_retries=0,
                               **kwargs)


def async_sdk(stack: Stack) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=stack.url, api_key="client-key", max_retries=0)


def create(client: anthropic.Anthropic, **extra: Any) -> Any:
    """A raw-response ``messages.create`` (headers and parsed message)."""
    return client.messages.with_raw_response.create(model=MODEL, max_tokens=64,
                                                    messages=HELLO, **extra)


def error_of(exc: anthropic.APIStatusError) -> dict[str, Any]:
    """The ``error`` object of an Anthropic error body."""
    body = exc.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    error: dict[str, Any] = body["error"]
    return error


def served_by(stack: Stack) -> list[str | None]:
    """The account of each ``/v1/messages`` request the fake received, in order."""
    return [ACCOUNT_OF.get(r.credential or "") for r in stack.fake.requests_for(
        path="/v1/messages")]


def states(stack: Stack) -> dict[str, AccountState]:
    return {s.name: s.state for s in stack.pool.statuses()}


# -- rotation -----------------------------------------------------------------------------------

def test_sync_requests_rotate_evenly_over_three_accounts(proxy_server: Stack) -> None:
    """Nine plain and streamed sync requests land three on each account, as the header says."""
    client = sdk(proxy_server)
    seen: list[str] = []
    for i in range(9):
        if i % 3 == 0:
            raw = create(client)
            assert raw.parse().content[0].text == "Hello from the fake Anthropic upstream."
            seen.append(raw.headers[ACCOUNT])
        elif i % 3 == 1:
            with client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as s:
                assert "".join(s.text_stream) == "Hello from the fake Anthropic upstream."
                seen.append(s.response.headers[ACCOUNT])
        else:
            raw = create(client, stream=True)
            events = [e.type for e in raw.parse()]
            assert events[0] == "message_start"
            assert events[-1] == "message_stop"
            seen.append(raw.headers[ACCOUNT])
    assert Counter(seen) == {"a": 3, "b": 3, "c": 3}
    assert Counter(served_by(proxy_server)) == {"a": 3, "b": 3, "c": 3}
    assert seen == served_by(proxy_server)
    assert proxy_server.wait_idle()


async def test_async_requests_rotate_evenly_over_three_accounts(proxy_server: Stack) -> None:
    """The async SDK, streamed and not, spreads six requests two per account."""
    client = async_sdk(proxy_server)
    seen: list[str] = []
    message: anthropic.types.Message
    async with client:
        for i in range(6):
            if i % 2:
                async with client.messages.stream(model=MODEL, max_tokens=64,
                                                  messages=HELLO) as s:
                    message = await s.get_final_message()
                    seen.append(s.response.headers[ACCOUNT])
            else:
                raw = await client.messages.with_raw_response.create(
                    model=MODEL, max_tokens=64, messages=HELLO)
                message = await raw.parse()
                seen.append(raw.headers[ACCOUNT])
            assert message.stop_reason == "end_turn"
    assert Counter(seen) == {"a": 2, "b": 2, "c": 2}
    assert seen == served_by(proxy_server)


def test_count_tokens_and_models_go_through(proxy_server: Stack) -> None:
    """count_tokens, models.list and models.retrieve are relayed (and rotated) too."""
    client = sdk(proxy_server)
    count = client.messages.with_raw_response.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "four words of prose"}])
    assert count.parse().input_tokens >= 1
    models = client.models.with_raw_response.list()
    assert [m.id for m in models.parse()] == proxy_server.fake.models
    one = client.models.retrieve(MODEL)
    assert one.id == MODEL
    assert [count.headers[ACCOUNT], models.headers[ACCOUNT]] == ["a", "b"]
    paths = [(r.method, r.path, r.credential) for r in proxy_server.fake.requests]
    assert paths == [("POST", "/v1/messages/count_tokens", KEY_A),
                     ("GET", "/v1/models", TOKEN_B), ("GET", f"/v1/models/{MODEL}", KEY_C)]


def test_beta_query_string_passes_through(proxy_server: Stack) -> None:
    """``?beta=true`` (what Claude Code calls) and the client's betas reach the upstream."""
    client = sdk(proxy_server)
    # The Python SDK's beta namespace sends no query string; Claude Code's TS SDK does.
    message = client.beta.messages.create(model=MODEL, max_tokens=64,
                                          betas=["context-1m-2025-08-07"],
                                          messages=cast(Any, HELLO),
                                          extra_query={"beta": "true"})
    assert message.content[0].type == "text"
    rec = proxy_server.fake.last_request
    assert (rec.path, rec.query) == ("/v1/messages", "beta=true")
    assert rec.betas == ["context-1m-2025-08-07"]
    raw = httpx.get(proxy_server.url + "/v1/models?limit=2")
    assert [m["id"] for m in raw.json()["data"]] == proxy_server.fake.models[:2]
    assert proxy_server.fake.last_request.query == "limit=2"


# -- failover -----------------------------------------------------------------------------------

def test_rate_limited_account_is_skipped_until_its_cooldown_ends(proxy_server: Stack) -> None:
    """A 429 with retry-after cools ``a``; the request succeeds on ``b``; ``a`` returns later."""
    fake, client = proxy_server.fake, sdk(proxy_server)
    fake.script(KEY_A, RateLimited(retry_after=30, reset_after=30))
    raw = create(client)
    assert raw.status_code == 200
    assert raw.headers[ACCOUNT] == "b"
    assert served_by(proxy_server) == ["a", "b"]
    status = proxy_server.pool.status("a")
    assert status.state is AccountState.RATE_LIMITED
    assert status.cooldown_until == pytest.approx(proxy_server.clock.now + 30, abs=2)
    assert [create(client).headers[ACCOUNT] for _ in range(4)] == ["c", "b", "c", "b"]
    proxy_server.clock.advance(31)
    # Smooth round-robin brings a returning account back within a round or two.
    assert "a" in {create(client).headers[ACCOUNT] for _ in range(6)}
    assert states(proxy_server)["a"] is AccountState.AVAILABLE


def test_reset_headers_alone_cool_an_oauth_account(proxy_server: Stack) -> None:
    """A subscription 429 with only unified reset headers cools until that reset."""
    fake, client = proxy_server.fake, sdk(proxy_server)
    fake.script(TOKEN_B, RateLimited(reset_after=120))
    assert create(client).headers[ACCOUNT] == "a"
    raw = create(client)
    assert raw.status_code == 200
    assert raw.headers[ACCOUNT] == "c"
    no_retry_after = [r for r in fake.requests if r.status == 429]
    assert len(no_retry_after) == 1
    assert no_retry_after[0].credential == TOKEN_B
    status = proxy_server.pool.status("b")
    assert status.state is AccountState.RATE_LIMITED
    assert status.cooldown_until == pytest.approx(proxy_server.clock.now + 120, abs=2)
    assert {create(client).headers[ACCOUNT] for _ in range(4)} == {"a", "c"}
    proxy_server.clock.advance(125)
    assert "b" in {create(client).headers[ACCOUNT] for _ in range(6)}


def test_a_bad_request_cools_nothing(proxy_server: Stack) -> None:
    """A 400 from upstream goes back as is, after one attempt, and no account is touched."""
    fake, client = proxy_server.fake, sdk(proxy_server)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=MODEL, max_tokens=64, messages=[])
    assert error_of(caught.value)["message"] == "messages: at least one message is required"
    assert caught.value.response.headers[ACCOUNT] == "a"
    fake.script(KEY_C, ApiError(status=413, error_type="request_too_large", message="big"))
    assert create(client).headers[ACCOUNT] == "b"
    with pytest.raises(anthropic.APIStatusError) as too_large:
        create(client)
    assert too_large.value.status_code == 413
    assert len(fake.requests) == 3
    assert set(states(proxy_server).values()) == {AccountState.AVAILABLE}
    assert all(s.failures == 0 for s in proxy_server.pool.statuses())


def test_every_account_cooling_gives_429_with_the_soonest_retry_after(
        proxy_server: Stack) -> None:
    """When all accounts are cooling the client gets 429 and retry-after = soonest recovery."""
    fake, client, clock = proxy_server.fake, sdk(proxy_server), proxy_server.clock
    fake.script(KEY_A, RateLimited(retry_after=50, reset_after=50))
    fake.script(TOKEN_B, RateLimited(retry_after=30, reset_after=30))
    fake.script(KEY_C, RateLimited(retry_after=70, reset_after=70))
    with pytest.raises(anthropic.RateLimitError) as caught:
        create(client)
    assert len(fake.requests) == 3
    soonest = proxy_server.pool.soonest_recovery()
    assert soonest is not None
    assert caught.value.response.headers["retry-after"] == str(math.ceil(soonest - clock.now))
    assert error_of(caught.value)["type"] == "rate_limit_error"
    clock.advance(10.5)
    with pytest.raises(anthropic.RateLimitError) as again:
        create(client)
    assert again.value.response.headers["retry-after"] == str(math.ceil(soonest - clock.now))
    assert len(fake.requests) == 3  # nothing was sent upstream the second time


def test_a_spend_cap_cools_the_account_for_long(proxy_server: Stack) -> None:
    """A spend-cap 429 (no retry-after) cools its account for an hour, not the short default."""
    proxy_server.fake.script(KEY_A, SpendCapReached())
    assert create(sdk(proxy_server)).headers[ACCOUNT] == "b"
    status = proxy_server.pool.status("a")
    assert status.state is AccountState.RATE_LIMITED
    assert status.cooldown_until is not None
    assert status.cooldown_until - proxy_server.clock.now >= 3000


@pytest.mark.parametrize("failure", [Overloaded(), ApiError(status=500),
                                     ApiError(status=503, error_type="api_error")])
def test_overloaded_and_server_errors_move_on_and_back_off(
        proxy_server: Stack, failure: ApiError) -> None:
    """529 and 5xx try the next account; the failed one backs off, then serves one probe."""
    proxy_server.fake.script(KEY_A, failure)
    raw = create(sdk(proxy_server))
    assert raw.headers[ACCOUNT] == "b"
    assert served_by(proxy_server) == ["a", "b"]
    assert states(proxy_server)["a"] is AccountState.BACKING_OFF
    assert proxy_server.pool.status("a").failures == 1
    proxy_server.clock.advance(proxy_server.pool.backoff_base + 0.01)
    assert states(proxy_server)["a"] is AccountState.PROBING
    # Rotation resumes with ``a`` among the candidates: its probe succeeds and it is back.
    assert "a" in [create(sdk(proxy_server)).headers[ACCOUNT] for _ in range(4)]
    assert states(proxy_server)["a"] is AccountState.AVAILABLE
    assert proxy_server.pool.status("a").last_error is None


def test_all_overloaded_returns_the_upstream_error(proxy_server: Stack) -> None:
    """When every account answers 529 the client gets the real 529, not a made-up 429."""
    proxy_server.fake.script_any(Overloaded(), Overloaded(), Overloaded())
    with pytest.raises(anthropic.APIStatusError) as caught:
        create(sdk(proxy_server))
    assert caught.value.status_code == 529
    assert error_of(caught.value)["type"] == "overloaded_error"
    assert served_by(proxy_server) == ["a", "b", "c"]
    assert set(states(proxy_server).values()) == {AccountState.BACKING_OFF}


def test_unreachable_upstream_gives_502_after_every_account(serve_proxy: Any) -> None:
    """Connection refused on every attempt ends in a 502 api_error; nobody is cooled."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, never listening
        stack: Stack = serve_proxy(upstream_url=dead)
        with pytest.raises(anthropic.APIStatusError) as caught:
            create(sdk(stack))
    assert caught.value.status_code == 502
    assert error_of(caught.value)["type"] == "api_error"
    assert [s.requests for s in stack.pool.statuses()] == [1, 1, 1]
    assert set(states(stack).values()) == {AccountState.AVAILABLE}
    assert stack.wait_idle()


def test_401_marks_auth_error_and_403_skips_the_model(proxy_server: Stack) -> None:
    """A 401 on an API key puts it in auth_error; a 403 only keeps its account off this
    model for a while. Either way the request is served elsewhere."""
    fake, client = proxy_server.fake, sdk(proxy_server)
    fake.script(KEY_A, Unauthorized())
    fake.script(TOKEN_B, Forbidden())
    assert create(client).headers[ACCOUNT] == "c"
    assert states(proxy_server) == {"a": AccountState.AUTH_ERROR,
                                    "b": AccountState.AVAILABLE, "c": AccountState.AVAILABLE}
    assert proxy_server.pool.denied("b", MODEL)
    assert [create(client).headers[ACCOUNT] for _ in range(2)] == ["c", "c"]


def test_error_event_opening_a_stream_fails_over(proxy_server: Stack) -> None:
    """An overloaded ``event: error`` as the first event of a 200 stream moves to ``b``."""
    proxy_server.fake.script(KEY_A, StreamError(after=0))
    with sdk(proxy_server).messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as s:
        assert s.get_final_text() == "Hello from the fake Anthropic upstream."
        assert s.response.headers[ACCOUNT] == "b"
    assert served_by(proxy_server) == ["a", "b"]
    assert states(proxy_server)["a"] is AccountState.BACKING_OFF


def test_max_attempts_bounds_the_accounts_tried(serve_proxy: Any) -> None:
    """With ``max_attempts=2`` a request stops after two overloaded accounts."""
    stack: Stack = serve_proxy(max_attempts=2)
    stack.fake.script_any(Overloaded(), Overloaded(), Overloaded())
    with pytest.raises(anthropic.APIStatusError) as caught:
        create(sdk(stack))
    assert caught.value.status_code == 529
    assert served_by(stack) == ["a", "b"]


# -- broken streams -----------------------------------------------------------------------------

def test_a_stream_cut_midway_ends_with_an_error_the_sdk_raises(proxy_server: Stack) -> None:
    """An upstream that drops mid-stream gives the client an ``event: error``, not a clean end."""
    proxy_server.fake.script(KEY_A, CutStream(after=4, text_deltas=6))
    text: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught, sdk(proxy_server).messages.stream(
            model=MODEL, max_tokens=64, messages=HELLO) as s:
        text.extend(s.text_stream)
    assert text  # part of the answer was relayed before the cut
    assert error_of(caught.value)["type"] == "api_error"
    assert "upstream stream failed" in error_of(caught.value)["message"]
    assert proxy_server.wait_idle()


async def test_a_stream_cut_in_the_async_sdk_raises_too(proxy_server: Stack) -> None:
    """The async SDK's ``create(stream=True)`` raises on the proxy's error event as well."""
    proxy_server.fake.script(KEY_A, CutStream(after=3))
    events: list[str] = []

    async def consume(stream: anthropic.AsyncStream[Any]) -> None:
        async for event in stream:
            events.append(event.type)

    async with async_sdk(proxy_server) as client:
        stream = await client.messages.create(model=MODEL, max_tokens=64, messages=HELLO,
                                              stream=True)
        with pytest.raises(anthropic.APIStatusError) as caught:
            await consume(stream)
    assert events[0] == "message_start"
    assert "message_stop" not in events
    assert error_of(caught.value)["type"] == "api_error"


async def _truncated_sse(scope: Any, receive: Any, send: Any) -> None:
    # An upstream whose 200 stream ends cleanly but without message_stop.
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    start = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
             b'"type":"message","role":"assistant","model":"m","content":[],'
             b'"stop_reason":null,"stop_sequence":null,'
             b'"usage":{"input_tokens":1,"output_tokens":1}}}\n\n')
    block = (b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
             b'"content_block":{"type":"text","text":""}}\n\n')
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    await send({"type": "http.response.body", "body": start + block, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture
def truncating_upstream() -> Iterator[str]:
    with serve_app(_truncated_sse) as handle:
        yield handle.url


def test_a_stream_without_message_stop_ends_with_an_error(serve_proxy: Any,
                                                         truncating_upstream: str) -> None:
    """A clean upstream end before ``message_stop`` still reaches the client as an error."""
    stack: Stack = serve_proxy(upstream_url=truncating_upstream)
    with pytest.raises(anthropic.APIStatusError) as caught, sdk(stack).messages.stream(
            model=MODEL, max_tokens=64, messages=HELLO) as s:
        list(s.text_stream)
    assert "ended early" in error_of(caught.value)["message"]


# -- pinning ------------------------------------------------------------------------------------

def test_x_account_name_pins_the_request(proxy_server: Stack) -> None:
    """``X-Account-Name: b`` sends every request to ``b``."""
    client = sdk(proxy_server, default_headers={"X-Account-Name": "b"})
    assert [create(client).headers[ACCOUNT] for _ in range(3)] == ["b", "b", "b"]
    assert served_by(proxy_server) == ["b", "b", "b"]


def test_an_unknown_pinned_account_is_a_400_naming_it(proxy_server: Stack) -> None:
    """Pinning a name the pool lacks is an invalid_request_error that names it."""
    client = sdk(proxy_server, default_headers={"X-Account-Name": "zed"})
    with pytest.raises(anthropic.BadRequestError) as caught:
        create(client)
    assert error_of(caught.value)["type"] == "invalid_request_error"
    assert "'zed'" in error_of(caught.value)["message"]
    assert proxy_server.fake.requests == []


def test_a_pinned_account_that_is_cooling_gives_429_with_its_retry_after(
        proxy_server: Stack) -> None:
    """A pinned, cooling account answers 429 with its own retry-after, without upstream."""
    proxy_server.pool.cool_down("c", proxy_server.clock.now + 42.3, reason="test")
    client = sdk(proxy_server, default_headers={"X-Account-Name": "c"})
    with pytest.raises(anthropic.RateLimitError) as caught:
        create(client)
    assert caught.value.response.headers["retry-after"] == "43"
    assert proxy_server.fake.requests == []


def test_a_pinned_upstream_429_is_returned_without_failover(proxy_server: Stack) -> None:
    """The upstream's 429 for a pinned account reaches the client; no other account is tried."""
    proxy_server.fake.script(KEY_C, RateLimited(retry_after=7, reset_after=7))
    client = sdk(proxy_server, default_headers={"X-Account-Name": "c"})
    with pytest.raises(anthropic.RateLimitError) as caught:
        create(client)
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.response.headers[ACCOUNT] == "c"
    assert served_by(proxy_server) == ["c"]
    assert states(proxy_server)["c"] is AccountState.RATE_LIMITED


# -- requests the proxy refuses itself ----------------------------------------------------------

def test_malformed_json_is_a_400_without_contacting_upstream(proxy_server: Stack) -> None:
    """A body that is not JSON gets invalid_request_error from the proxy itself."""
    r = httpx.post(proxy_server.url + "/v1/messages", content=b'{"model": ',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert proxy_server.fake.requests == []
    assert all(s.requests == 0 for s in proxy_server.pool.statuses())


def test_unknown_route_and_wrong_method(proxy_server: Stack) -> None:
    """Unknown paths get a 404 and wrong methods a 405, both in Anthropic's error shape."""
    missing = httpx.post(proxy_server.url + "/v1/complete", json={})
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    wrong = httpx.get(proxy_server.url + "/v1/messages")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["type"] == "invalid_request_error"
    assert proxy_server.fake.requests == []

