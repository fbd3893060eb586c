"""The fake Anthropic upstream, driven over a real socket by the official SDK and raw HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import anthropic
import anyio
import httpx
import httpx2
import pytest
from anthropic.types import (
    Message,
    MessageParam,
    RawContentBlockDeltaEvent,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ToolUseBlock,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ccrotate.testing import (
    ApiError,
    CutStream,
    FakeUpstream,
    Forbidden,
    Gate,
    Limits,
    Overloaded,
    RateLimited,
    Reply,
    ServerHandle,
    SpendCapReached,
    StreamError,
    TokenError,
    TokenReply,
    ToolUse,
    Unauthorized,
    serve_app,
    serve_fake_upstream,
)

Server = ServerHandle[FakeUpstream]

CLAUDE_CODE_CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
API_KEY = "sk-ant-api03-test-key-0001"
OAUTH_TOKEN = "sk-ant-oat01-test-token-0001"
IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."
AGENT_IDENTITY = "You are a Claude agent, built on Anthropic's Claude Agent SDK."
BILLING = {"type": "text",
           "text": "x-anthropic-billing-header: cc_version=2.1.197; cc_entrypoint=cli;"}
MODEL = "claude-sonnet-4-6"
HELLO: list[MessageParam] = [{"role": "user", "content": "hello"}]


@pytest.fixture
def server(fake_upstream_server: Server) -> Server:
    return fake_upstream_server


def sdk(server: Server, key: str = API_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)


def oauth_sdk(server: Server, token: str = OAUTH_TOKEN) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, auth_token=token, max_retries=0,
                               default_headers={"anthropic-beta": "oauth-2025-04-20"})


def body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 64, "messages": HELLO, **extra}


def text_of(message: Message) -> str:
    return "".join(b.text for b in message.content if isinstance(b, TextBlock))


def error_of(exc: anthropic.APIStatusError) -> dict[str, Any]:
    assert isinstance(exc.body, dict)
    error: dict[str, Any] = exc.body["error"]
    return error


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, parsed data) pairs of an SSE body; asserts the data names its event."""
    events = []
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]
        events.append((lines["event"], data))
    return events


# -- streaming shape -------------------------------------------------------------------


def test_sse_stream_has_the_exact_event_sequence(server: Server) -> None:
    server.app.script(API_KEY, Reply(text="abcdefghi", text_deltas=3))
    r = httpx.post(server.url + "/v1/messages?beta=true", json=body(stream=True),
                   headers={"x-api-key": API_KEY})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.headers["request-id"].startswith("req_")
    events = sse_events(r.text)
    assert [name for name, _ in events] == [
        "message_start", "ping", "content_block_start", "content_block_delta",
        "content_block_delta", "content_block_delta", "content_block_stop", "message_delta",
        "message_stop"]
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_")
    assert (start["type"], start["role"], start["model"]) == ("message", "assistant", MODEL)
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert {"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
            "output_tokens"} <= start["usage"].keys()
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") \
        == "abcdefghi"
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] >= start["usage"]["output_tokens"]


def test_sdk_stream_accumulates_thinking_text_and_tool_use(server: Server) -> None:
    server.app.script(API_KEY, Reply(
        thinking="Let me look that up.", text="Checking the weather.",
        tool_use=ToolUse("get_weather", {"city": "Paris", "unit": "celsius"}, json_deltas=4),
        cache_creation_input_tokens=7, cache_read_input_tokens=11, output_tokens=42))
    with sdk(server).messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    thinking, tool = final.content[0], final.content[2]
    assert isinstance(thinking, ThinkingBlock)
    assert thinking.thinking == "Let me look that up."
    assert thinking.signature
    assert isinstance(tool, ToolUseBlock)
    assert tool.input == {"city": "Paris", "unit": "celsius"}
    assert tool.id.startswith("toolu_")
    assert {"thinking_delta", "signature_delta", "text_delta", "input_json_delta"} == set(deltas)
    assert deltas.count("input_json_delta") >= 4
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 42
    assert final.usage.cache_creation_input_tokens == 7
    assert final.usage.cache_read_input_tokens == 11


def test_create_stream_true_and_non_streaming_agree(server: Server) -> None:
    server.app.set_default(API_KEY, Reply(text="same answer", stop_reason="max_tokens"))
    client = sdk(server)
    events = list(client.messages.create(model=MODEL, max_tokens=64, messages=HELLO,
                                         stream=True))
    assert events[0].type == "message_start"
    assert events[-1].type == "message_stop"
    streamed = "".join(e.delta.text for e in events
                       if isinstance(e, RawContentBlockDeltaEvent)
                       and isinstance(e.delta, TextDelta))
    message = client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
    assert streamed == text_of(message) == "same answer"
    assert message.stop_reason == "max_tokens"
    assert message.id.startswith("msg_")
    assert message.model == MODEL


# -- validation and credentials ----------------------------------------------------------


@pytest.mark.parametrize(("payload", "expected"), [
    ({"max_tokens": 5, "messages": HELLO}, "model: Field required"),
    ({"model": MODEL, "messages": HELLO}, "max_tokens: Field required"),
    ({"model": MODEL, "max_tokens": "5", "messages": HELLO}, "max_tokens: Input should be"),
    ({"model": MODEL, "max_tokens": 5}, "messages: Field required"),
    ({"model": MODEL, "max_tokens": 5, "messages": "hi"}, "messages: Input should be"),
    ([1, 2], "JSON object"),
])
def test_invalid_bodies_get_invalid_request_error(server: Server, payload: Any,
                                                  expected: str) -> None:
    r = httpx.post(server.url + "/v1/messages", json=payload, headers={"x-api-key": API_KEY})
    assert r.status_code == 400
    error = r.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert expected in error["error"]["message"]
    assert error["request_id"] == r.headers["request-id"]
    assert server.app.last_request.status == 400


def test_missing_credential_is_401(server: Server) -> None:
    r = httpx.post(server.url + "/v1/messages", json=body())
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"


def test_revoked_expired_and_strict_credentials(server: Server) -> None:
    fake = server.app
    fake.revoke(API_KEY)
    with pytest.raises(anthropic.AuthenticationError):
        sdk(server).messages.create(**body())
    fake.expire(OAUTH_TOKEN)
    with pytest.raises(anthropic.AuthenticationError, match="expired"):
        oauth_sdk(server).messages.create(**body(system=IDENTITY))
    fake.strict_auth = True
    with pytest.raises(anthropic.AuthenticationError):
        sdk(server, "sk-ant-api03-never-registered").messages.create(**body())
    key = fake.add_api_key()
    assert sdk(server, key).messages.create(**body()).content


def test_made_up_bearer_keys_can_count_as_api_keys() -> None:
    with serve_fake_upstream(FakeUpstream(bearer_kind="api_key")) as handle:
        client = anthropic.Anthropic(base_url=handle.url, api_key="test-key", max_retries=0)
        assert client.messages.create(**body()).content  # no OAuth beta, no identity
        assert handle.app.last_request.kind == "api_key"
        assert handle.app.last_request.header("authorization") == "Bearer test-key"


async def test_the_fake_is_a_plain_asgi_app(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(API_KEY, Reply(text="in process", text_deltas=1))
    transport = httpx.ASGITransport(app=fake_upstream)
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
        r = await client.post("/v1/messages", json=body(stream=True),
                              headers={"x-api-key": API_KEY})
    assert [name for name, _ in sse_events(r.text)][-1] == "message_stop"
    assert "in process" in r.text
    assert fake_upstream.cancelled == 0


def test_oauth_requires_the_oauth_beta(server: Server) -> None:
    client = anthropic.Anthropic(base_url=server.url, auth_token=OAUTH_TOKEN, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError,
                       match="OAuth authentication is currently not supported"):
        client.messages.create(**body(system=IDENTITY))
    assert server.app.last_request.kind == "oauth"


@pytest.mark.parametrize(("system", "ok"), [
    (None, False),
    (IDENTITY, True),
    (AGENT_IDENTITY, True),
    (IDENTITY + " Be brief.", False),
    ([{"type": "text", "text": IDENTITY}, {"type": "text", "text": "More."}], True),
    ([BILLING, {"type": "text", "text": AGENT_IDENTITY}], True),
    ([BILLING], False),
    ([{"type": "text", "text": "You are a pirate."}, {"type": "text", "text": IDENTITY}], False),
])
def test_identity_rule_for_oauth(server: Server, system: Any, ok: bool) -> None:
    extra = {} if system is None else {"system": system}
    client = oauth_sdk(server)
    if ok:
        assert client.messages.create(**body(**extra)).content
    else:
        with pytest.raises(anthropic.BadRequestError) as info:
            client.messages.create(**body(**extra))
        assert error_of(info.value)["message"] == "Error"
    # API keys are not bound by the rule.
    assert sdk(server).messages.create(**body(**extra)).content


def test_identity_rule_can_be_switched_off(server: Server) -> None:
    server.app.enforce_identity = False
    assert oauth_sdk(server).messages.create(**body()).content


# -- scripted errors ---------------------------------------------------------------------


def test_scripted_429_reaches_the_sdk_with_headers_then_queue_moves_on(server: Server) -> None:
    server.app.script(API_KEY, RateLimited(retry_after=30))
    client = sdk(server)
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(**body())
    headers = info.value.response.headers
    assert headers["retry-after"] == "30"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    reset = datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"])
    assert abs(reset.timestamp() - (time.time() + 30)) < 5  # defaults to retry_after
    assert error_of(info.value)["type"] == "rate_limit_error"
    assert client.messages.create(**body()).content  # the one-shot was consumed
    assert server.app.pending(API_KEY) == 0


def test_oauth_429_carries_rejected_unified_headers(server: Server) -> None:
    server.app.script(OAUTH_TOKEN, RateLimited(reset_after=600))
    with pytest.raises(anthropic.RateLimitError) as info:
        oauth_sdk(server).messages.create(**body(system=IDENTITY))
    headers = info.value.response.headers
    assert "retry-after" not in headers
    assert headers["anthropic-ratelimit-unified-status"] == "rejected"
    assert headers["anthropic-ratelimit-unified-representative-claim"] == "five_hour"
    assert headers["anthropic-ratelimit-unified-5h-status"] == "rejected"
    assert abs(int(headers["anthropic-ratelimit-unified-reset"]) - (time.time() + 600)) < 5


def test_spend_cap_429_has_error_code_and_no_retry_after(server: Server) -> None:
    server.app.script(API_KEY, SpendCapReached())
    with pytest.raises(anthropic.RateLimitError) as info:
        sdk(server).messages.create(**body())
    assert "retry-after" not in info.value.response.headers
    error = error_of(info.value)
    assert error["details"]["error_code"] == "enforced_spend_limit_reached"


@pytest.mark.parametrize(("behaviour", "exc", "error_type"), [
    (Overloaded(), anthropic.OverloadedError, "overloaded_error"),
    (Unauthorized(), anthropic.AuthenticationError, "authentication_error"),
    (Forbidden(), anthropic.PermissionDeniedError, "permission_error"),
    (ApiError(status=413, error_type="request_too_large", message="too big"),
     anthropic.APIStatusError, "request_too_large"),
])
def test_scripted_status_errors(server: Server, behaviour: ApiError,
                                exc: type[anthropic.APIStatusError], error_type: str) -> None:
    server.app.script(API_KEY, behaviour)
    with pytest.raises(exc) as info:
        sdk(server).messages.create(**body())
    assert info.value.status_code == behaviour.status
    assert error_of(info.value)["type"] == error_type
    assert info.value.response.headers["request-id"].startswith("req_")
    assert "anthropic-ratelimit-requests-limit" in info.value.response.headers


def test_scripts_are_per_credential_with_defaults_and_shared_queue(server: Server) -> None:
    fake, other = server.app, "sk-ant-api03-other-0002"
    fake.script(API_KEY, Overloaded())
    assert sdk(server, other).messages.create(**body()).content
    with pytest.raises(anthropic.OverloadedError):
        sdk(server, API_KEY).messages.create(**body())
    fake.set_default(other, Reply(text="persistent"))
    for _ in range(2):
        assert text_of(sdk(server, other).messages.create(**body())) == "persistent"
    fake.script_any(Forbidden())
    with pytest.raises(anthropic.PermissionDeniedError):
        sdk(server, API_KEY).messages.create(**body())
    assert sdk(server, API_KEY).messages.create(**body()).content


# -- broken streams ----------------------------------------------------------------------


def test_error_event_mid_stream_raises_in_the_sdk(server: Server) -> None:
    server.app.script(API_KEY, StreamError(after=1))
    seen = []
    with pytest.raises(anthropic.APIStatusError) as info:  # noqa: PT012
        for event in sdk(server).messages.create(**body(), stream=True):
            seen.append(event.type)
    assert seen == ["message_start"]
    assert error_of(info.value)["type"] == "overloaded_error"


def test_error_event_as_first_event(server: Server) -> None:
    server.app.script(API_KEY, StreamError(after=0, error_type="api_error", message="boom"))
    r = httpx.post(server.url + "/v1/messages", json=body(stream=True),
                   headers={"x-api-key": API_KEY})
    assert r.status_code == 200
    events = sse_events(r.text)
    assert [name for name, _ in events] == ["error"]
    assert events[0][1]["error"] == {"type": "api_error", "message": "boom"}


def test_stream_error_on_a_non_streaming_request_is_an_http_error(server: Server) -> None:
    server.app.script(API_KEY, StreamError())
    with pytest.raises(anthropic.OverloadedError):
        sdk(server).messages.create(**body())


def test_cut_stream_drops_the_connection(server: Server) -> None:
    server.app.script(API_KEY, CutStream(after=4), CutStream(after=3))
    seen: list[str] = []
    # The SDK does not wrap transport errors raised mid-stream.
    with pytest.raises(httpx2.RemoteProtocolError):  # noqa: PT012
        for event in sdk(server).messages.create(**body(), stream=True):
            seen.append(event.type)
    assert seen == ["message_start", "content_block_start", "content_block_delta"]  # no ping
    received = []
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream(  # noqa: PT012
            "POST", server.url + "/v1/messages", json=body(stream=True),
            headers={"x-api-key": API_KEY}) as r:
        for line in r.iter_lines():
            if line.startswith("event: "):
                received.append(line[7:])
    assert received == ["message_start", "ping", "content_block_start"]


def test_cut_non_streaming_response_raises(server: Server) -> None:
    server.app.script(API_KEY, CutStream())
    with pytest.raises(anthropic.APIConnectionError):
        sdk(server).messages.create(**body())


# -- timing, holding, cancellation -------------------------------------------------------


def test_delay_and_event_gap(server: Server) -> None:
    server.app.script(API_KEY, Reply(text="abcd", text_deltas=4, delay=0.15, event_gap=0.01))
    start = time.monotonic()
    with httpx.stream("POST", server.url + "/v1/messages", json=body(stream=True),
                      headers={"x-api-key": API_KEY}) as r:
        arrivals = []
        for line in r.iter_lines():
            if line.startswith("event: "):
                arrivals.append(time.monotonic() - start)
    assert arrivals[0] >= 0.15
    assert arrivals[-1] - arrivals[0] >= 0.01 * (len(arrivals) - 1) * 0.9


def test_gate_holds_a_request_until_released(server: Server) -> None:
    gate = Gate()
    server.app.script(API_KEY, Reply(text="late", hold=gate))
    result: list[str] = []

    def call() -> None:
        message = sdk(server).messages.create(**body())
        result.append(text_of(message))

    thread = threading.Thread(target=call)
    thread.start()
    assert gate.wait_arrivals(1)
    time.sleep(0.05)
    assert result == []
    gate.release()
    thread.join(5)
    assert result == ["late"]
    assert server.app.cancelled == 0


async def test_client_disconnect_mid_stream_is_observed(server: Server) -> None:
    gate = Gate()
    server.app.script(API_KEY, Reply(hold=gate, hold_after=2))
    client = anthropic.AsyncAnthropic(base_url=server.url, api_key=API_KEY, max_retries=0)
    stream = await client.messages.create(**body(), stream=True)
    first = await stream.__anext__()
    assert first.type == "message_start"
    with anyio.fail_after(5):
        await gate.wait_arrivals_async(1)
    await stream.close()
    with anyio.fail_after(5):
        await server.app.wait_cancelled_async(1)
    gate.release()
    assert server.app.cancelled == 1
    assert server.app.last_request.cancelled is True
    await client.close()


# -- recording, limits, count_tokens, models ---------------------------------------------


def test_requests_are_recorded(server: Server) -> None:
    fake = server.app
    sdk(server).messages.create(**body(), extra_headers={"anthropic-beta": "a-1,b-2"})
    oauth_sdk(server).messages.count_tokens(model=MODEL, messages=HELLO, system=IDENTITY)
    httpx.post(server.url + "/v1/messages?beta=true", json=body(), headers={"x-api-key": "k"})
    first, second, third = fake.requests
    assert (first.method, first.path, first.credential, first.kind) == \
        ("POST", "/v1/messages", API_KEY, "api_key")
    assert first.json["messages"] == HELLO
    assert first.header("Anthropic-Beta") == "a-1,b-2"
    assert first.betas == ["a-1", "b-2"]
    assert all(name == name.lower() for name, _ in first.headers)
    assert (second.path, second.kind, second.status) == \
        ("/v1/messages/count_tokens", "oauth", 200)
    assert (third.query, third.kind) == ("beta=true", "api_key")
    assert fake.requests_for(API_KEY) == [first]
    assert fake.requests_for(path="/v1/messages") == [first, third]
    assert API_KEY not in repr(first)
    assert OAUTH_TOKEN not in repr(second)


def test_subscription_utilization_headers_and_rejection(server: Server) -> None:
    fake = server.app
    fake.set_limits(OAUTH_TOKEN, Limits(five_hour=0.25, seven_day=0.85))
    raw = oauth_sdk(server).messages.with_raw_response.create(**body(system=IDENTITY))
    h = raw.headers
    assert h["anthropic-ratelimit-unified-5h-utilization"] == "0.25"
    assert h["anthropic-ratelimit-unified-7d-utilization"] == "0.85"
    assert h["anthropic-ratelimit-unified-7d-status"] == "allowed_warning"
    assert h["anthropic-ratelimit-unified-status"] == "allowed_warning"
    assert h["anthropic-ratelimit-unified-representative-claim"] == "seven_day"
    assert int(h["anthropic-ratelimit-unified-reset"]) > time.time()
    fake.set_limits(OAUTH_TOKEN, Limits(five_hour=1.0))
    with pytest.raises(anthropic.RateLimitError) as info:
        oauth_sdk(server).messages.create(**body(system=IDENTITY))
    assert info.value.response.headers["anthropic-ratelimit-unified-status"] == "rejected"


def test_count_tokens_is_a_deterministic_estimate(server: Server) -> None:
    client = sdk(server)
    text = "word " * 200
    count = client.messages.count_tokens(model=MODEL,
                                         messages=[{"role": "user", "content": text}])
    assert count.input_tokens == len(text) // 4
    assert client.messages.count_tokens(model=MODEL, messages=HELLO).input_tokens >= 1
    r = httpx.post(server.url + "/v1/messages/count_tokens", json={"model": MODEL},
                   headers={"x-api-key": API_KEY})
    assert r.status_code == 400


def test_models_list_paginates_and_retrieves(server: Server) -> None:
    client = sdk(server)
    ids = ["claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-opus-4-8",
           "claude-sonnet-4-6", "claude-haiku-4-5"]
    assert server.app.models == ids
    assert [m.id for m in client.models.list()] == ids
    assert [m.id for m in client.models.list(limit=4)] == ids  # the SDK pages through
    page = client.models.list(limit=2)
    assert page.has_more is True
    assert page.last_id == ids[1]
    model = client.models.retrieve("claude-opus-4-8")
    assert model.display_name == "Claude Opus 4.8"
    assert model.type == "model"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-2.1")
    server.app.models = ["claude-test-1"]
    assert [m.id for m in client.models.list()] == ["claude-test-1"]


# -- OAuth token endpoint ----------------------------------------------------------------


def refresh(server: Server, token: str) -> httpx.Response:
    return httpx.post(server.url + "/v1/oauth/token",
                      json={"grant_type": "refresh_token", "refresh_token": token,
                            "client_id": CLAUDE_CODE_CLIENT_ID},
                      headers={"anthropic-beta": "oauth-2025-04-20"})


def test_refresh_tokens_are_single_use(server: Server) -> None:
    fake = server.app
    old = fake.oauth.add_refresh_token()
    r = refresh(server, old)
    assert r.status_code == 200
    answer = r.json()
    assert answer["access_token"].startswith("sk-ant-oat01-")
    assert answer["refresh_token"].startswith("sk-ant-ort01-")
    assert (answer["expires_in"], answer["token_type"]) == (28800, "Bearer")
    assert "user:inference" in answer["scope"].split()
    fake.strict_auth = True  # the issued access token is now a known credential
    assert oauth_sdk(server, answer["access_token"]).messages.create(**body(system=IDENTITY))
    again = refresh(server, old)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert old not in again.text  # never echo a credential
    assert fake.oauth.refresh_count(old) == 2
    assert old not in repr(fake.last_request)
    assert refresh(server, "sk-ant-ort01-unknown").json()["error"] == "invalid_grant"
    assert refresh(server, answer["refresh_token"]).status_code == 200


def test_refresh_without_rotation_keeps_the_old_token(server: Server) -> None:
    fake = server.app
    token = fake.oauth.add_refresh_token()
    fake.oauth.script(TokenReply(omit_refresh_token=True))
    answer = refresh(server, token).json()
    assert "refresh_token" not in answer
    assert answer["access_token"]
    assert fake.oauth.is_live(token)
    assert refresh(server, token).status_code == 200


def test_scripted_token_failures_and_delay(server: Server) -> None:
    fake = server.app
    token = fake.oauth.add_refresh_token()
    fake.oauth.script(TokenError(status=500), TokenReply(delay=0.2),
                      TokenError(status=502, consume=True))
    assert refresh(server, token).status_code == 500
    assert fake.oauth.is_live(token)  # a plain failure does not consume the token
    start = time.monotonic()
    new = refresh(server, token).json()["refresh_token"]
    assert time.monotonic() - start >= 0.2
    assert refresh(server, new).status_code == 502
    assert not fake.oauth.is_live(new)  # rotated upstream, answer lost
    assert refresh(server, new).json()["error"] == "invalid_grant"


def test_a_client_that_gives_up_mid_refresh_loses_the_token(server: Server) -> None:
    fake = server.app
    token = fake.oauth.add_refresh_token()
    fake.oauth.script(TokenReply(delay=2.0))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/oauth/token", timeout=0.2, json={
            "grant_type": "refresh_token", "refresh_token": token,
            "client_id": CLAUDE_CODE_CLIENT_ID})
    assert fake.wait_cancelled(1)
    assert fake.last_request.cancelled
    assert refresh(server, token).json()["error"] == "invalid_grant"
    assert len(fake.oauth.issued) == 1  # minted, never delivered


async def test_concurrent_refreshes_of_one_token_only_one_wins(server: Server) -> None:
    token = server.app.oauth.add_refresh_token()
    server.app.oauth.script(TokenReply(delay=0.1))
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=server.url) as client:

        async def one() -> None:
            r = await client.post("/v1/oauth/token", json={
                "grant_type": "refresh_token", "refresh_token": token,
                "client_id": CLAUDE_CODE_CLIENT_ID})
            statuses.append(r.status_code)

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
    assert sorted(statuses) == [200, 400]


def pkce() -> tuple[str, str]:
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(challenge: str, state: str, redirect: str) -> str:
    return "https://claude.ai/oauth/authorize?" + urlencode({
        "code": "true", "client_id": CLAUDE_CODE_CLIENT_ID, "response_type": "code",
        "redirect_uri": redirect, "scope": "user:profile user:inference",
        "code_challenge": challenge, "code_challenge_method": "S256", "state": state})


def exchange(server: Server, code: str, verifier: str, state: str,
             redirect: str) -> httpx.Response:
    return httpx.post(server.url + "/v1/oauth/token", json={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
        "client_id": CLAUDE_CODE_CLIENT_ID, "code_verifier": verifier, "state": state})


def test_pkce_login_over_the_authorize_endpoint(server: Server) -> None:
    verifier, challenge = pkce()
    state, redirect = secrets.token_urlsafe(16), "http://localhost:54545/callback"
    url = authorize_url(challenge, state, redirect)
    r = httpx.get(server.url + "/oauth/authorize?" + urlsplit(url).query)
    assert r.status_code == 302
    location = urlsplit(r.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == redirect
    params = parse_qs(location.query)
    code = params["code"][0]
    assert params["state"] == [state]
    assert exchange(server, code, "wrong-verifier", state, redirect).json()["error"] \
        == "invalid_grant"
    # Codes are single-use, even after a failed exchange.
    assert exchange(server, code, verifier, state, redirect).status_code == 400


def test_pkce_login_with_a_pasted_code(server: Server) -> None:
    fake = server.app
    verifier, challenge = pkce()
    state, redirect = secrets.token_urlsafe(16), "https://platform.claude.com/oauth/code/callback"
    pasted = fake.oauth.approve(authorize_url(challenge, state, redirect))
    code, _, pasted_state = pasted.partition("#")
    assert pasted_state == state
    assert exchange(server, code, verifier, "other-state", redirect).status_code == 400
    code = fake.oauth.approve(authorize_url(challenge, state, redirect)).partition("#")[0]
    r = exchange(server, code, verifier, state, redirect)
    assert r.status_code == 200
    tokens = r.json()
    assert tokens["refresh_token"]
    assert tokens["access_token"].startswith("sk-ant-oat01-")
    assert fake.oauth.is_live(tokens["refresh_token"])
    fake.strict_auth = True
    assert oauth_sdk(server, tokens["access_token"]).messages.create(**body(system=IDENTITY))
    bad = httpx.get(server.url + "/oauth/authorize?" + urlencode(
        {"response_type": "code", "client_id": CLAUDE_CODE_CLIENT_ID, "state": "s",
         "redirect_uri": redirect, "code_challenge": challenge}))
    assert bad.status_code == 400  # no S256 method


def test_issued_access_tokens_expire(server: Server) -> None:
    fake = server.app
    fake.oauth.expires_in = 0
    tokens = fake.oauth.issue()
    with pytest.raises(anthropic.AuthenticationError, match="expired"):
        oauth_sdk(server, tokens.access_token).messages.create(**body(system=IDENTITY))


# -- the generic runner ------------------------------------------------------------------


def test_serve_app_runs_lifespan_around_the_server() -> None:
    events: list[str] = []

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.app.state.greeting)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await anyio.sleep(0.05)
        app.state.greeting = "ready"
        events.append("startup")
        yield
        events.append("shutdown")

    app = Starlette(routes=[Route("/", hello)], lifespan=lifespan)
    with serve_app(app, lifespan="on") as handle:
        assert events == ["startup"]
        assert handle.url.startswith("http://127.0.0.1:")
        assert httpx.get(handle.url + "/").text == "ready"
    assert events == ["startup", "shutdown"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(handle.url + "/")


def test_serve_app_reports_a_failed_startup() -> None:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    with pytest.raises(RuntimeError, match="failed to start"), \
            serve_app(Starlette(lifespan=lifespan), lifespan="on"):
        pass
