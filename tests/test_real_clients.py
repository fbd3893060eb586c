"""The official SDKs through the full guarded stack, as ``ccrotate serve`` runs it.

``test_proxy_sdk.py`` and ``test_openai_proxy.py`` drive the SDKs against a bare
:class:`RotatingProxy`. Here the same SDKs go through ``Rotator(settings).app`` under
``uvicorn_options(settings)`` with a client token: the Host/Origin guard, the 415 for
non-JSON bodies, the client-key check, the request-head deadline and the connection cap
all see exactly what the SDKs send (a ``Host: 127.0.0.1:PORT``, no ``Origin``), and none
of them may refuse it. The last tests show that the checks are really there.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import anthropic
import openai
import pytest

from ccrotate.testing import Reply, ToolUse
from conftest import ACCOUNT_OF, CLIENT_TOKEN, HELLO, MODEL, GuardedStack

pytestmark = pytest.mark.slow

TEXT = "Hello from the fake Anthropic upstream."
USER: list[Any] = [{"role": "user", "content": "hello"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.fixture
def stack(serve_guarded: Any) -> GuardedStack:
    guarded: GuardedStack = serve_guarded()
    return guarded


def _no_refusal_and_sdk_heads(stack: GuardedStack) -> None:
    """Nothing was refused; every request is what an SDK sends: its own server's Host,
    no Origin, and JSON whenever there is a body."""
    assert stack.refused() == [], stack.refused()
    for seen in stack.seen:
        assert seen.header("host") == f"127.0.0.1:{stack.server.port}", seen
        assert seen.header("origin") is None, seen
        if seen.method == "POST":
            assert (seen.header("content-type") or "").startswith("application/json"), seen


def test_anthropic_sdk_sync(stack: GuardedStack) -> None:
    """messages (plain and streamed), count_tokens and models, over all three accounts."""
    client = anthropic.Anthropic(base_url=stack.url + "/api", api_key=CLIENT_TOKEN,
                                 max_retries=0)
    with client:
        out = client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
        assert out.content[0].type == "text"
        assert out.content[0].text == TEXT
        with client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as s:
            assert s.get_final_text() == TEXT
        count = client.messages.count_tokens(model=MODEL, messages=HELLO)
        assert count.input_tokens >= 1
        assert [m.id for m in client.models.list()] == stack.fake.models
        assert client.models.retrieve(MODEL).id == MODEL
    _no_refusal_and_sdk_heads(stack)
    assert all((s.header("user-agent") or "").startswith("Anthropic/Python")
               for s in stack.seen)
    sent = [(r.method, r.path, ACCOUNT_OF.get(r.credential or ""), r.status)
            for r in stack.fake.requests]
    assert sent == [("POST", "/v1/messages", "a", 200), ("POST", "/v1/messages", "b", 200),
                    ("POST", "/v1/messages/count_tokens", "c", 200),
                    ("GET", "/v1/models", "a", 200), ("GET", f"/v1/models/{MODEL}", "b", 200)]
    # The client key stays at the server; the accounts' credentials go upstream.
    assert all(CLIENT_TOKEN not in repr(r.headers) for r in stack.fake.requests)


async def test_anthropic_sdk_async(stack: GuardedStack) -> None:
    """The async SDK, plain and streamed, and count_tokens."""
    async with anthropic.AsyncAnthropic(base_url=stack.url + "/api", api_key=CLIENT_TOKEN,
                                        max_retries=0) as client:
        out = await client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
        assert out.stop_reason == "end_turn"
        async with client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as s:
            assert await s.get_final_text() == TEXT
        assert (await client.messages.count_tokens(model=MODEL, messages=HELLO)).input_tokens
        assert [m.id async for m in client.models.list()] == stack.fake.models
    _no_refusal_and_sdk_heads(stack)
    assert [s.header("x-stainless-async") for s in stack.seen] == ["async:asyncio"] * 4
    assert [r.status for r in stack.fake.requests] == [200] * 4


def test_openai_sdk_chat_stream_tools_models(stack: GuardedStack) -> None:
    """chat (plain and streamed), a tool call round trip, and models, at ``/api/v1``."""
    client = openai.OpenAI(base_url=stack.url + "/api/v1", api_key=CLIENT_TOKEN,
                           max_retries=0)
    with client:
        out = client.chat.completions.create(model=MODEL, messages=USER)
        assert out.choices[0].message.content == TEXT
        stream = client.chat.completions.create(model=MODEL, messages=USER, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == TEXT
        stack.fake.script_any(Reply(text="", tool_use=ToolUse("get_weather",
                                                              {"city": "Paris"})))
        called = client.chat.completions.create(model=MODEL, messages=USER, tools=[WEATHER])
        (call,) = called.choices[0].message.tool_calls or []
        assert called.choices[0].finish_reason == "tool_calls"
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        answered = client.chat.completions.create(model=MODEL, tools=[WEATHER], messages=[
            *USER, called.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
        assert answered.choices[0].message.content == TEXT
        listed = [m.id for m in client.models.list()]
        assert MODEL in listed
    _no_refusal_and_sdk_heads(stack)
    assert all((s.header("user-agent") or "").startswith("OpenAI/Python")
               and s.header("authorization") == f"Bearer {CLIENT_TOKEN}" for s in stack.seen)
    messages = stack.fake.requests_for(path="/v1/messages")
    assert [r.status for r in messages] == [200] * 4
    assert messages[3].json["messages"][-1]["content"][0]["type"] == "tool_result"


async def test_openai_sdk_async_stream(stack: GuardedStack) -> None:
    client = openai.AsyncOpenAI(base_url=stack.url + "/api/v1", api_key=CLIENT_TOKEN,
                                max_retries=0)
    async with client:
        stream = await client.chat.completions.create(model=MODEL, messages=USER, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == TEXT
    _no_refusal_and_sdk_heads(stack)


def _raw(stack: GuardedStack, method: str, path: str, body: bytes | None = None,
         **headers: str) -> tuple[int, bytes]:
    # http.client sends exactly these headers plus Host (127.0.0.1:PORT) and, with a
    # body, Content-Length: what a minimal non-browser client sends.
    conn = http.client.HTTPConnection("127.0.0.1", stack.server.port, timeout=10)
    try:
        conn.request(method, path, body=body,
                     headers={k.replace("_", "-"): v for k, v in headers.items()})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_an_origin_less_loopback_request_as_sdks_send_it(stack: GuardedStack) -> None:
    """``Host: 127.0.0.1:PORT``, no Origin, JSON, the client key: answered."""
    body = json.dumps({"model": MODEL, "max_tokens": 16, "messages": HELLO}).encode()
    status, answer = _raw(stack, "POST", "/api/v1/messages", body, x_api_key=CLIENT_TOKEN,
                          anthropic_version="2023-06-01", content_type="application/json")
    assert status == 200, answer
    assert json.loads(answer)["content"][0]["text"] == TEXT
    assert stack.seen[0].header("host") == f"127.0.0.1:{stack.server.port}"
    assert stack.seen[0].header("origin") is None


def test_claude_codes_head_probe(stack: GuardedStack) -> None:
    """The probe exactly as Claude Code 2.1 sends it (Bun's fetch: no key, no body, no
    Origin) is answered 200 and reaches no upstream."""
    status, _ = _raw(stack, "HEAD", "/api", connection="keep-alive", user_agent="Bun/1.4.0",
                     accept="*/*", accept_encoding="gzip, deflate, br, zstd")
    assert status == 200
    assert stack.fake.requests == []


@pytest.mark.parametrize(("headers", "status"), [
    ({"host": "evil.example:8080"}, 421),                      # DNS rebinding
    ({"origin": "https://evil.example"}, 403),                 # a cross-site page
    ({"content_type": "text/plain"}, 415),                     # a preflight-free form post
    ({"x_api_key": "not-the-client-token"}, 401),
])
def test_the_checks_are_in_front(stack: GuardedStack, headers: dict[str, str],
                                 status: int) -> None:
    """The stack these tests use does refuse what it should, before any upstream call."""
    body = json.dumps({"model": MODEL, "max_tokens": 16, "messages": HELLO}).encode()
    sent = {"x_api_key": CLIENT_TOKEN, "anthropic_version": "2023-06-01",
            "content_type": "application/json", **headers}
    got, answer = _raw(stack, "POST", "/api/v1/messages", body, **sent)
    assert got == status, answer
    assert stack.fake.requests == []
