"""The OpenAI-compatible route driven by the official ``openai`` SDK over real sockets.

The fake Anthropic upstream and a :class:`RotatingProxy` with an :class:`OpenAIRoute` are
each served by uvicorn on a loopback port (accounts ``a`` and ``c`` are API keys, ``b`` is
OAuth, as in conftest). What the fake recorded shows the Messages API request the
translation produced; the SDK's own parsing shows the answer is OpenAI's shape.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import anyio
import openai
import pytest

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    AccountState,
    OpenAIRoute,
    RotatingProxy,
    Rotator,
    Secret,
)
from ccrotate._pool.strategy import RoundRobin, SelectionContext
from ccrotate._proxy.auth import ClientAuth
from ccrotate._proxy.record import Failover, RequestRecord
from ccrotate._server.config import Settings
from ccrotate._tokens.refresh import TokenRefresher
from ccrotate._wire import CLAUDE_CODE_IDENTITY
from ccrotate.testing import (
    ApiError,
    CutStream,
    FakeUpstream,
    Overloaded,
    RateLimited,
    RecordedRequest,
    Reply,
    ServerHandle,
    SpendCapReached,
    StreamError,
    ToolUse,
    serve_app,
)
from conftest import ACCOUNT_OF, CREDENTIALS, MODEL, FakeClock, fast_config, make_accounts

ACCOUNT = "x-ccrotate-account"
ALIASES = {"gpt-4o": MODEL}
PIN_A = {"x-account-name": "a"}  # an API-key account: no identity block in ``system``
USER: list[Any] = [{"role": "user", "content": "hello"}]
TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nnot-really-a-png").decode()


class Recorder:
    """An observer keeping every record the proxy delivers (from the server's thread)."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.failovers: list[Failover] = []
        self._cond = threading.Condition()

    def on_failover(self, record: RequestRecord, failover: Failover) -> None:
        self.failovers.append(failover)

    def on_request(self, record: RequestRecord) -> None:
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[RequestRecord]:
        """The records once there are ``count`` (they arrive after the response ends)."""
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.records) >= count, timeout)
            return list(self.records)


@dataclass
class OAStack:
    """The served fake upstream and a proxy with the OpenAI route in front of it."""

    fake: FakeUpstream
    pool: AccountPool
    proxy: RotatingProxy
    route: OpenAIRoute
    server: ServerHandle[Any]
    clock: FakeClock
    recorder: Recorder = field(default_factory=Recorder)

    @property
    def base_url(self) -> str:
        return self.server.url + "/v1"

    def sync(self, **kwargs: Any) -> openai.OpenAI:
        options: dict[str, Any] = {"api_key": "client-key", "max_retries": 0, **kwargs}
        return openai.OpenAI(base_url=self.base_url, **options)

    def aio(self, **kwargs: Any) -> openai.AsyncOpenAI:
        options: dict[str, Any] = {"api_key": "client-key", "max_retries": 0, **kwargs}
        return openai.AsyncOpenAI(base_url=self.base_url, **options)

    def messages(self) -> list[RecordedRequest]:
        """The ``/v1/messages`` requests the fake received, oldest first."""
        return self.fake.requests_for(path="/v1/messages")

    def sent(self) -> dict[str, Any]:
        """The body of the last Messages API request."""
        body: dict[str, Any] = self.messages()[-1].json
        return body

    def wait_idle(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while any(s.in_flight for s in self.pool.statuses()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True


@pytest.fixture
def serve_openai(upstream_server: ServerHandle[FakeUpstream], pool: AccountPool,
                 clock: FakeClock) -> Iterator[Any]:
    """A factory: ``serve_openai(authenticate=, upstream=app, pool=, refresher=, **config)``."""
    default_pool = pool
    with contextlib.ExitStack() as stack:

        def make(*, authenticate: Any = None, upstream: Any = None,
                 upstream_url: str | None = None, pool: AccountPool | None = None,
                 refresher: Any = None, **config: Any) -> OAStack:
            url = upstream_url or upstream_server.url
            if upstream is not None:
                url = stack.enter_context(serve_app(upstream)).url
            pool = pool or default_pool
            route = OpenAIRoute(model_aliases=ALIASES)
            recorder = Recorder()
            proxy = RotatingProxy(pool, config=fast_config(url, **config),
                                  authenticate=authenticate, observers=[recorder],
                                  openai=route, refresher=refresher)
            server = stack.enter_context(serve_app(proxy))
            return OAStack(upstream_server.app, pool, proxy, route, server, clock, recorder)

        yield make


@pytest.fixture
def oa(serve_openai: Any) -> OAStack:
    """The default stack: aliases ``gpt-4o`` -> the Claude test model, no client auth."""
    stack: OAStack = serve_openai()
    return stack


def account_of(rec: RecordedRequest) -> str | None:
    return ACCOUNT_OF.get(rec.credential or "")


def tool_reply(**tool: Any) -> Reply:
    """The fake's answer calling ``get_weather`` (no text, as models usually do)."""
    return Reply(text="", tool_use=ToolUse(name="get_weather", **tool))


# -- plain chat ---------------------------------------------------------------------------------

def test_plain_chat_sync(oa: OAStack) -> None:
    """A plain sync chat comes back as a chat.completion with text, stop and usage."""
    fake = oa.fake
    fake.script_any(Reply(text="Hi there!", input_tokens=11, output_tokens=3,
                          cache_read_input_tokens=4))
    out = oa.sync().chat.completions.create(model=MODEL, messages=USER)
    assert out.object == "chat.completion"
    assert out.id.startswith("chatcmpl-")
    assert out.model == MODEL
    choice = out.choices[0]
    assert (choice.message.role, choice.message.content) == ("assistant", "Hi there!")
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens,
            out.usage.total_tokens) == (15, 3, 18)
    assert out.usage.prompt_tokens_details is not None
    assert out.usage.prompt_tokens_details.cached_tokens == 4
    sent = oa.sent()
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text",
                                                              "text": "hello"}]}]
    assert sent["max_tokens"] >= 1
    assert "stream" not in sent


async def test_plain_chat_async_streamed_and_not(oa: OAStack) -> None:
    """The async SDK gets the same text whole and as a stream of deltas."""
    async with oa.aio() as client:
        whole = await client.chat.completions.create(model=MODEL, messages=USER)
        stream = await client.chat.completions.create(model=MODEL, messages=USER,
                                                      stream=True)
        chunks = [chunk async for chunk in stream]
    text = "Hello from the fake Anthropic upstream."
    assert whole.choices[0].message.content == text
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    assert len([c for c in chunks if c.choices[0].delta.content]) == 3  # one per text delta
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert [r.json.get("stream", False) for r in oa.messages()] == [False, True]


def test_stream_has_stable_id_and_role_first(oa: OAStack) -> None:
    """Every chunk shares one id, created and model; the first carries the role."""
    stream = oa.sync().chat.completions.create(model="gpt-4o", messages=USER,
                                               stream=True)
    chunks = list(stream)
    assert len(chunks) >= 4
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].id.startswith("chatcmpl-")
    assert len({c.created for c in chunks}) == 1
    assert {c.model for c in chunks} == {"gpt-4o"}
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:])
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_multi_turn_conversation(oa: OAStack) -> None:
    """System and developer prompts become ``system``; turns alternate, merged when needed."""
    oa.sync(default_headers=PIN_A).chat.completions.create(model=MODEL, messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": "What is my name?"},
        {"role": "user", "content": [{"type": "text", "text": "Just the name."}]},
    ])
    sent = oa.sent()
    assert sent["system"] == [{"type": "text", "text": "Be brief."},
                              {"type": "text", "text": "Answer in English."}]
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "My name is Ada."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello Ada."}]},
        {"role": "user", "content": [{"type": "text", "text": "What is my name?"},
                                     {"type": "text", "text": "Just the name."}]},
    ]


async def test_images_from_data_and_https_urls(oa: OAStack) -> None:
    """``data:`` images become base64 blocks and ``https://`` images url blocks."""
    async with oa.aio() as client:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "text", "text": "Compare these."},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg",
                                                "detail": "high"}},
        ]}])
    assert oa.sent()["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these."},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_unsupported_image_is_a_400_not_dropped(oa: OAStack) -> None:
    """An ``http://`` image is refused naming the part, and nothing reaches the upstream."""
    with pytest.raises(openai.BadRequestError) as info:
        oa.sync().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://example.com/cat.jpg"}}]}])
    assert isinstance(info.value.body, dict)
    assert info.value.body["param"] == "messages[0].content[0]"
    assert oa.fake.requests == []


# -- tools --------------------------------------------------------------------------------------

def test_tools_round_trip(oa: OAStack) -> None:
    """Call -> tool result -> answer, passing the SDK's own message object back."""
    oa.fake.script_any(tool_reply(input={"city": "Paris"}, id="toolu_01Paris"),
                       Reply(text="Sunny in Paris."))
    client = oa.sync()
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS,
                                           parallel_tool_calls=False)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    assert len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.id == "toolu_01Paris"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    sent = oa.sent()
    assert sent["tools"] == [{"name": "get_weather", "description": "Weather in a city",
                              "input_schema": TOOLS[0]["function"]["parameters"]}]
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}

    messages += [choice.message, {"role": "tool", "tool_call_id": call.id, "content": "22C"}]
    second = client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "Sunny in Paris."
    assert second.choices[0].finish_reason == "stop"
    assert oa.sent()["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01Paris",
                                           "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01Paris",
                                      "content": "22C"}]},
    ]


async def test_tools_round_trip_streaming(oa: OAStack) -> None:
    """Streamed tool calls open with index, id and name, then stream their arguments."""
    oa.fake.script_any(
        Reply(text="Let me check.", tool_use=[
            ToolUse(name="get_weather", input={"city": "Paris"}, id="toolu_A", json_deltas=3),
            ToolUse(name="get_weather", input={"city": "Rome"}, id="toolu_B", json_deltas=2)]),
        Reply(text="Paris 22C, Rome 25C."))
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    async with oa.aio() as client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=messages,
                                                      tools=TOOLS, stream=True)
        chunks = [chunk async for chunk in stream]
        deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or ()]
        opening = [d for d in deltas if d.id is not None]
        assert [(d.index, d.id, d.function and d.function.name) for d in opening] == [
            (0, "toolu_A", "get_weather"), (1, "toolu_B", "get_weather")]
        assert all(d.function and d.function.arguments == "" for d in opening)
        fragments = [d for d in deltas if d.id is None]
        assert all(d.function and d.function.name is None for d in fragments)
        assert len([d for d in fragments if d.index == 0]) == 3
        args = {i: "".join(d.function.arguments or "" for d in fragments
                           if d.index == i and d.function) for i in (0, 1)}
        assert {i: json.loads(a) for i, a in args.items()} == {0: {"city": "Paris"},
                                                               1: {"city": "Rome"}}
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Let me check."
        assert chunks[-1].choices[0].finish_reason == "tool_calls"

        messages.append({"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": d.id, "type": "function",
             "function": {"name": "get_weather", "arguments": args[d.index]}}
            for d in opening]})
        messages += [{"role": "tool", "tool_call_id": "toolu_A", "content": "22C"},
                     {"role": "tool", "tool_call_id": "toolu_B", "content": "25C"}]
        stream = await client.chat.completions.create(model="gpt-4o", messages=messages,
                                                      tools=TOOLS, stream=True)
        answer = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert answer == "Paris 22C, Rome 25C."
    turns = oa.sent()["messages"]
    assert [b["type"] for b in turns[1]["content"]] == ["text", "tool_use", "tool_use"]
    assert [(b["tool_use_id"], b["content"]) for b in turns[2]["content"]] == [
        ("toolu_A", "22C"), ("toolu_B", "25C")]


# -- stream options, reasoning, JSON mode -------------------------------------------------------

def test_usage_chunk_with_include_usage(oa: OAStack) -> None:
    """``include_usage`` adds a final ``choices: []`` chunk with the usage; others say null."""
    oa.fake.script_any(Reply(input_tokens=20, output_tokens=9, cache_read_input_tokens=6,
                             cache_creation_input_tokens=2))
    stream = oa.sync().chat.completions.create(
        model=MODEL, messages=USER, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens,
            last.usage.total_tokens) == (28, 9, 37)
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 6
    assert all(c.usage is None and len(c.choices) == 1 for c in body)
    assert body[-1].choices[0].finish_reason == "stop"


def test_reasoning_effort_sends_thinking_and_returns_reasoning(oa: OAStack) -> None:
    """``reasoning_effort`` becomes thinking upstream; thinking comes back as reasoning."""
    oa.fake.script_any(Reply(thinking="Six times seven.", text="42"),
                       Reply(thinking="Six times seven.", text="42"))
    client = oa.sync()
    out = client.chat.completions.create(model=MODEL, messages=USER,
                                         reasoning_effort="high")
    sent = oa.sent()
    assert sent["thinking"] == {"type": "adaptive"}  # the fake lists no capabilities
    assert sent["output_config"] == {"effort": "high"}
    message: Any = out.choices[0].message
    assert (message.content, message.reasoning_content) == ("42", "Six times seven.")
    stream = client.chat.completions.create(model=MODEL, messages=USER,
                                            reasoning_effort="low", stream=True)
    deltas: list[Any] = [c.choices[0].delta for c in stream]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) \
        == "Six times seven."
    assert "".join(d.content or "" for d in deltas) == "42"
    assert oa.sent()["output_config"] == {"effort": "low"}


def test_json_object_mode_yields_parseable_json(oa: OAStack) -> None:
    """``json_object`` forces the JSON tool; its input becomes the message content."""
    oa.fake.script_any(Reply(text="", tool_use=ToolUse(name="json_response",
                                                       input={"answer": 42, "unit": "C"})))
    out = oa.sync().chat.completions.create(model=MODEL, messages=USER,
                                            response_format={"type": "json_object"})
    assert json.loads(out.choices[0].message.content or "") == {"answer": 42, "unit": "C"}
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].message.tool_calls is None
    sent = oa.sent()
    assert sent["tool_choice"] == {"type": "tool", "name": "json_response"}
    assert [t["name"] for t in sent["tools"]] == ["json_response"]


async def test_json_schema_mode_streamed(oa: OAStack) -> None:
    """A streamed ``json_schema`` answer arrives as content deltas that join into JSON."""
    schema: dict[str, Any] = {"type": "object", "properties": {"city": {"type": "string"}},
                              "required": ["city"]}
    oa.fake.script_any(Reply(text="", tool_use=ToolUse(name="json_response",
                                                       input={"city": "Paris"},
                                                       json_deltas=4)))
    async with oa.aio() as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=USER, stream=True,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "place", "schema": schema}})
        chunks = [c async for c in stream]
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert json.loads(content) == {"city": "Paris"}
    assert all(not c.choices[0].delta.tool_calls for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    tool = oa.sent()["tools"][0]
    assert (tool["name"], tool["input_schema"]) == ("json_response", schema)


# -- models and aliases -------------------------------------------------------------------------

def test_aliases_map_upstream_and_echo_back(oa: OAStack) -> None:
    """An aliased name reaches the upstream as the Claude id; answers echo the client's name."""
    client = oa.sync()
    out = client.chat.completions.create(model="gpt-4o", messages=USER)
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=USER,
                                                 stream=True))
    client.chat.completions.create(model="claude-haiku-4-5", messages=USER)
    assert out.model == "gpt-4o"
    assert {c.model for c in chunks} == {"gpt-4o"}
    assert [r.json["model"] for r in oa.messages()] == [MODEL, MODEL, "claude-haiku-4-5"]


def test_models_openai_shape_for_openai_and_anthropic_shape_for_anthropic(oa: OAStack) -> None:
    """The same /v1/models answers each SDK in its own shape; aliases are listed for OpenAI."""
    models = list(oa.sync().models.list())
    assert [m.id for m in models] == [*oa.fake.models, "gpt-4o"]
    assert {(m.object, m.owned_by) for m in models} == {("model", "anthropic")}
    assert all(isinstance(m.created, int) and m.created > 0 for m in models)
    native = anthropic.Anthropic(base_url=oa.server.url, api_key="client-key", max_retries=0)
    listed = list(native.models.list())
    assert [m.id for m in listed] == oa.fake.models
    assert all(m.type == "model" and m.display_name.startswith("Claude") for m in listed)


def test_models_retrieve_openai_shape(oa: OAStack) -> None:
    """``models.retrieve`` answers one model object, aliases included; unknown ids 404."""
    client = oa.sync()
    one = client.models.retrieve(MODEL)
    alias = client.models.retrieve("gpt-4o")
    assert (one.id, one.object, one.owned_by) == (MODEL, "model", "anthropic")
    assert (alias.id, alias.created) == ("gpt-4o", one.created)
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("claude-nope-1")
    assert isinstance(info.value.body, dict)
    assert "message" in info.value.body
    assert anthropic.Anthropic(base_url=oa.server.url, api_key="k", max_retries=0
                               ).models.retrieve(MODEL).display_name.startswith("Claude")


def test_capabilities_come_from_the_upstream_model_list(serve_openai: Any) -> None:
    """Model capabilities are fetched once from /v1/models and steer the translation."""
    models_body = json.dumps({"data": [
        {"type": "model", "id": "claude-budget-1", "created_at": "2026-01-01T00:00:00Z",
         "capabilities": {"thinking": {"supported": True, "types": {
             "adaptive": {"supported": False}, "enabled": {"supported": True}}}}},
    ], "has_more": False}).encode()
    listings: list[int] = []

    fake: FakeUpstream | None = None

    async def upstream(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/models":
            listings.append(1)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": models_body})
            return
        assert fake is not None
        await fake(scope, receive, send)

    stack: OAStack = serve_openai(upstream=upstream)
    fake = stack.fake
    client = stack.sync()
    for _ in range(3):
        client.chat.completions.create(model="claude-budget-1", messages=USER,
                                       reasoning_effort="low")
    assert listings == [1]
    thinking = [r.json["thinking"] for r in stack.messages()]
    assert thinking == [{"type": "enabled", "budget_tokens": 2048}] * 3


# -- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("params", "param"), [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"extra_body": {"made_up_option": 1}}, "made_up_option"),
])
def test_unsupported_parameter_is_a_400_naming_it(oa: OAStack, params: dict[str, Any],
                                                   param: str) -> None:
    """A parameter without equivalent is refused by name, before any upstream request."""
    with pytest.raises(openai.BadRequestError) as info:
        oa.sync().chat.completions.create(model=MODEL, messages=USER, **params)
    assert info.value.status_code == 400
    assert isinstance(info.value.body, dict)
    assert info.value.body["param"] == param
    assert info.value.body["type"] == "invalid_request_error"
    assert param in info.value.message
    assert oa.fake.requests == []  # not even the model list
    (record,) = oa.recorder.wait()
    assert (record.route, record.status, record.attempts) == ("chat_completions", 400, 0)


def test_upstream_400_is_a_bad_request(oa: OAStack) -> None:
    """The upstream's own 400 reaches the client as BadRequestError, with no failover."""
    oa.fake.script_any(ApiError(status=400, error_type="invalid_request_error",
                                message="messages.0.content: too many images"))
    with pytest.raises(openai.BadRequestError) as info:
        oa.sync().chat.completions.create(model=MODEL, messages=USER)
    assert "too many images" in info.value.message
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "invalid_request_error"
    assert len(oa.messages()) == 1
    assert {s.state for s in oa.pool.statuses()} == {AccountState.AVAILABLE}
    (record,) = oa.recorder.wait()
    assert (record.status, record.error_type) == (400, "invalid_request_error")


def test_all_accounts_cooling_is_a_rate_limit_error_with_retry_after(oa: OAStack) -> None:
    """When every account is rate limited the client gets 429 with ``retry-after``."""
    for credential in CREDENTIALS.values():
        oa.fake.script(credential, RateLimited(retry_after=30))
    client = oa.sync()
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=USER)
    # The pool's clock is frozen at the test's start, so the wait can read a second longer.
    assert 29 <= int(info.value.response.headers["retry-after"]) <= 31
    assert isinstance(info.value.body, dict)
    assert info.value.body["code"] == "rate_limit_exceeded"
    assert len(oa.messages()) == 3
    # While they cool, nothing is sent upstream at all.
    with pytest.raises(openai.RateLimitError) as again:
        client.chat.completions.create(model=MODEL, messages=USER, stream=True)
    assert "retry-after" in again.value.response.headers
    assert len(oa.messages()) == 3
    records = oa.recorder.wait(2)
    assert [(r.status, r.error_type, r.attempts) for r in records] == [
        (429, "rate_limit_error", 3), (429, "rate_limit_error", 0)]


def test_spend_cap_is_insufficient_quota_not_retried(oa: OAStack) -> None:
    """A spend cap is ``insufficient_quota`` with ``x-should-retry: false``: no SDK retry."""
    oa.fake.script(CREDENTIALS["a"], SpendCapReached())
    client = oa.sync(max_retries=2, default_headers=PIN_A)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=MODEL, messages=USER)
    assert isinstance(info.value.body, dict)
    assert info.value.body["code"] == "insufficient_quota"
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(oa.messages()) == 1


async def test_overloaded_everywhere_is_a_server_error(oa: OAStack) -> None:
    """529 on every account becomes OpenAI's 503 ``overloaded`` (the SDK's 5xx class)."""
    for credential in CREDENTIALS.values():
        oa.fake.set_default(credential, Overloaded())
    async with oa.aio() as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model=MODEL, messages=USER)
    assert info.value.status_code == 503
    assert isinstance(info.value.body, dict)
    assert (info.value.body["type"], info.value.body["code"]) == ("server_error", "overloaded")


def test_no_account_left_is_a_503(oa: OAStack) -> None:
    """With every account disabled the client gets 503, the proxy's status, not a bare 500."""
    for name in ("a", "b", "c"):
        oa.pool.disable(name)
    with pytest.raises(openai.InternalServerError) as info:
        oa.sync().chat.completions.create(model=MODEL, messages=USER)
    assert info.value.status_code == 503
    assert oa.fake.requests == []


def test_unreachable_upstream_is_a_502(serve_openai: Any) -> None:
    """An upstream that refuses connections on every account answers 502 Bad Gateway."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stack: OAStack = serve_openai(upstream_url=f"http://127.0.0.1:{port}")
    with pytest.raises(openai.InternalServerError) as info:
        stack.sync().chat.completions.create(model=MODEL, messages=USER)
    assert info.value.status_code == 502
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "server_error"
    (record,) = stack.recorder.wait()
    assert (record.status, record.attempts) == (502, 3)


def test_429_fails_over_invisibly(oa: OAStack) -> None:
    """A 429 on the first account is retried on another; the client sees one success."""
    oa.fake.script_any(RateLimited(retry_after=60))
    raw = oa.sync().chat.completions.with_raw_response.create(model=MODEL, messages=USER)
    assert raw.parse().choices[0].message.content == "Hello from the fake Anthropic upstream."
    first, second = oa.messages()
    assert (first.status, second.status) == (429, 200)
    assert raw.headers[ACCOUNT] == account_of(second) != account_of(first)
    states = {s.name: s.state for s in oa.pool.statuses()}
    assert states[account_of(first) or ""] is AccountState.RATE_LIMITED
    (record,) = oa.recorder.wait()
    assert [(f.account, f.reason) for f in record.failovers] == [
        (account_of(first), "quota")]


def test_overloaded_stream_start_fails_over_invisibly(oa: OAStack) -> None:
    """An error opening a 200 stream moves to another account before any chunk is sent."""
    oa.fake.script_any(StreamError(after=0))
    raw = oa.sync().chat.completions.with_raw_response.create(model=MODEL, messages=USER,
                                                              stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse())
    assert text == "Hello from the fake Anthropic upstream."
    first, second = oa.messages()
    assert raw.headers[ACCOUNT] == account_of(second) != account_of(first)


# The gap makes the failure arrive after the proxy has started relaying: an error already
# in the upstream's first read would still fail over invisibly.
@pytest.mark.parametrize("behaviour", [CutStream(after=5, event_gap=0.005),
                                       StreamError(after=5, event_gap=0.005)],
                         ids=["connection-cut", "error-event"])
def test_stream_failing_midway_raises_while_iterating(oa: OAStack, behaviour: Reply) -> None:
    """An upstream stream that dies after some text makes the SDK raise, not end quietly."""
    oa.fake.script_any(behaviour)
    stream = oa.sync().chat.completions.create(model=MODEL, messages=USER,
                                               stream=True)
    received: list[str] = []

    def drain() -> None:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError) as info:
        drain()
    assert not isinstance(info.value, openai.APIConnectionError)
    assert "".join(received) == "Hello from the fake Anthro"  # two text deltas arrived
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "server_error"
    (record,) = oa.recorder.wait()
    assert record.status == 200
    assert record.error_type in ("api_error", "overloaded_error")
    assert oa.wait_idle()


def test_wrong_client_key_is_an_openai_shaped_401(serve_openai: Any) -> None:
    """With client auth on, a wrong key gets AuthenticationError in OpenAI's error shape."""
    stack: OAStack = serve_openai(authenticate=ClientAuth(["right-key"]))
    bad = stack.sync(api_key="wrong-key")
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model=MODEL, messages=USER)
    body = info.value.body
    assert isinstance(body, dict)
    assert (body["type"], body["code"]) == ("authentication_error", "invalid_api_key")
    assert set(body) == {"message", "type", "param", "code"}
    with pytest.raises(openai.AuthenticationError) as listing:
        bad.models.list()
    assert isinstance(listing.value.body, dict)
    assert listing.value.body["code"] == "invalid_api_key"
    assert stack.fake.requests == []
    good = stack.sync(api_key="right-key")
    assert good.chat.completions.create(model=MODEL, messages=USER).choices


# -- accounts and observability -----------------------------------------------------------------

def test_oauth_accounts_get_the_identity_block_api_keys_do_not(oa: OAStack) -> None:
    """OAuth requests open ``system`` with the identity line (the fake enforces it)."""
    client = oa.sync()
    system = [{"role": "system", "content": "Be brief."}, *USER]
    for name in ("b", "a"):
        out = client.chat.completions.create(model=MODEL, messages=system,
                                             extra_headers={"x-account-name": name})
        assert out.choices[0].message.content
        stream = client.chat.completions.create(model=MODEL, messages=USER, stream=True,
                                                extra_headers={"x-account-name": name})
        assert "".join(c.choices[0].delta.content or "" for c in stream)
    oauth_plain, oauth_stream, key_plain, key_stream = oa.messages()
    assert [account_of(r) for r in oa.messages()] == ["b", "b", "a", "a"]
    identity = {"type": "text", "text": CLAUDE_CODE_IDENTITY}
    assert oauth_plain.json["system"] == [identity, {"type": "text", "text": "Be brief."}]
    assert oauth_stream.json["system"] == [identity]
    assert key_plain.json["system"] == [{"type": "text", "text": "Be brief."}]
    assert "system" not in key_stream.json


def test_request_records_for_chat_completions(oa: OAStack) -> None:
    """Observers get route ``chat_completions``, the Claude model and tokens, streamed or not."""
    oa.fake.script_any(Reply(input_tokens=12, output_tokens=5, cache_read_input_tokens=3),
                       Reply(input_tokens=30, output_tokens=8, cache_creation_input_tokens=4))
    client = oa.sync()
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    list(client.chat.completions.create(model="gpt-4o", messages=USER, stream=True))
    plain, streamed = oa.recorder.wait(2)
    for record in (plain, streamed):
        assert (record.route, record.method, record.model, record.status) == (
            "chat_completions", "POST", MODEL, 200)
        assert record.error_type is None
        assert not record.client_disconnected
        assert record.attempts == 1
        assert record.ttfb is not None
        assert record.latency is not None
    assert plain.account == raw.headers[ACCOUNT]
    assert (plain.stream, plain.input_tokens, plain.output_tokens,
            plain.cache_read_tokens, plain.cache_write_tokens) == (False, 12, 5, 3, 0)
    assert (streamed.stream, streamed.input_tokens, streamed.output_tokens,
            streamed.cache_read_tokens, streamed.cache_write_tokens) == (True, 30, 8, 0, 4)


async def test_concurrent_requests_do_not_mix(oa: OAStack) -> None:
    """Concurrent streamed and plain requests each get their own, complete answer."""
    async with oa.aio() as client:

        async def one(i: int, results: dict[int, tuple[set[str], str]]) -> None:
            messages: list[Any] = [{"role": "user", "content": f"request {i}"}]
            if i % 2:
                stream = await client.chat.completions.create(
                    model="gpt-4o", messages=messages, stream=True)
                chunks = [c async for c in stream]
                results[i] = ({c.id for c in chunks},
                              "".join(c.choices[0].delta.content or "" for c in chunks))
            else:
                out = await client.chat.completions.create(model="gpt-4o", messages=messages)
                results[i] = ({out.id}, out.choices[0].message.content or "")

        results: dict[int, tuple[set[str], str]] = {}
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(8):
                    tg.start_soon(one, i, results)
    assert {text for _, text in results.values()} == {"Hello from the fake Anthropic upstream."}
    ids = [next(iter(chunk_ids)) for chunk_ids, _ in results.values()]
    assert all(len(chunk_ids) == 1 for chunk_ids, _ in results.values())
    assert len(set(ids)) == 8
    assert {account_of(r) for r in oa.messages()} == {"a", "b", "c"}


async def test_client_leaving_a_stream_cancels_the_upstream(oa: OAStack) -> None:
    """Closing an OpenAI stream early cancels the upstream request and logs a 499."""
    oa.fake.script_any(Reply(text="x" * 200, text_deltas=50, event_gap=0.02))
    async with oa.aio() as client:
        stream = await client.chat.completions.create(model=MODEL, messages=USER,
                                                      stream=True)
        async for chunk in stream:
            if chunk.choices[0].delta.content:
                break
        await stream.close()
    with anyio.fail_after(5):
        await oa.fake.wait_cancelled_async()
    (record,) = oa.recorder.wait()
    assert record.status == 499
    assert record.client_disconnected
    assert oa.wait_idle()


class SpyStrategy(RoundRobin):
    """Round robin that remembers the selection context of every pick."""

    def __init__(self) -> None:
        super().__init__()
        self.contexts: list[SelectionContext] = []

    def select(self, candidates: Any, context: SelectionContext) -> str:
        self.contexts.append(context)
        return super().select(candidates, context)


def test_user_is_the_session_key_and_the_model_is_claudes(serve_openai: Any,
                                                         clock: FakeClock) -> None:
    """Strategies see ``user`` as the session key and the Claude model id, as on /v1/messages."""
    spy = SpyStrategy()
    stack: OAStack = serve_openai(pool=AccountPool(make_accounts(), strategy=spy, clock=clock))
    stack.sync().chat.completions.create(model="gpt-4o", messages=USER, user="alice")
    assert stack.sent()["metadata"] == {"user_id": "alice"}
    chat = spy.contexts[-1]
    assert (chat.model, chat.session_key) == (MODEL, "user:alice")


def test_capability_fetch_renews_a_due_oauth_token_first(
        serve_openai: Any, upstream_server: ServerHandle[FakeUpstream],
        clock: FakeClock) -> None:
    """The /v1/models fetch goes through the refresher: an expired token never costs the account."""
    fake = upstream_server.app
    fake.expire(CREDENTIALS["b"])
    refresh = fake.oauth.add_refresh_token()
    accounts = [a if a.name != "b" else Account(
        name="b", kind=AccountKind.OAUTH, access_token=Secret(CREDENTIALS["b"]),
        refresh_token=Secret(refresh), expires_at=time.time() - 10) for a in make_accounts()]
    pool = AccountPool(accounts, clock=clock)
    pool.disable("a")
    pool.disable("c")
    refresher = TokenRefresher(pool, None, token_url=upstream_server.url + "/v1/oauth/token",
                               client_id=Settings().oauth_client_id)
    stack: OAStack = serve_openai(pool=pool, refresher=refresher)
    out = stack.sync().chat.completions.create(model=MODEL, messages=USER)
    assert out.choices[0].message.content
    assert pool.status("b").state is AccountState.AVAILABLE
    (listing,) = fake.requests_for(path="/v1/models")
    assert listing.status == 200
    assert listing.credential != CREDENTIALS["b"]
    assert fake.oauth.refresh_count(refresh) == 1


def test_reference_server_serves_the_openai_route_under_api(
        upstream_server: ServerHandle[FakeUpstream], clock: FakeClock) -> None:
    """``create_app`` wires the route at ``/api/v1`` with aliases from the settings."""
    settings = Settings(upstream_url=upstream_server.url,
                        model_aliases={"fast": "claude-haiku-4-5"})
    pool = AccountPool(make_accounts(), clock=clock)
    app = Rotator(settings, pool=pool).app
    with serve_app(app) as server:
        client = openai.OpenAI(base_url=server.url + "/api/v1", api_key="k", max_retries=0)
        out = client.chat.completions.create(model="fast", messages=USER)
        listed = [m.id for m in client.models.list()]
    assert out.model == "fast"
    assert out.choices[0].message.content
    assert upstream_server.app.requests_for(path="/v1/messages")[-1].json["model"] \
        == "claude-haiku-4-5"
    assert listed[-1] == "fast"
    assert "claude-haiku-4-5" in listed


def test_exhausted_pool_answers_an_openai_client_in_its_shape(oa: OAStack) -> None:
    """Every account refuses: an OpenAI 429 with the last refusal's message, retry-after
    = when the first account can serve again, and x-ratelimit-* to pace the client."""
    oa.fake.script_any(RateLimited(retry_after=120, reset_after=120, message="too many"),
                       RateLimited(retry_after=90, reset_after=90, message="too many"),
                       RateLimited(retry_after=240, reset_after=240, message="too many"))
    with pytest.raises(openai.RateLimitError) as caught:
        oa.sync().chat.completions.create(model=MODEL, messages=USER)
    headers = caught.value.response.headers
    soonest = oa.pool.soonest_recovery()
    assert soonest is not None
    assert headers["retry-after"] == str(math.ceil(soonest - oa.clock.now))
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    error = caught.value.body
    assert isinstance(error, dict)
    assert (error["message"], error["type"], error["code"]) == (
        "too many", "requests", "rate_limit_exceeded")


def test_openai_429_carries_api_key_limits_as_x_ratelimit(oa: OAStack) -> None:
    """A pinned API key's 429 maps anthropic-ratelimit-requests-* onto OpenAI's names."""
    oa.fake.script(CREDENTIALS["a"], RateLimited(retry_after=30, reset_after=30))
    with pytest.raises(openai.RateLimitError) as caught:
        oa.sync().chat.completions.create(model=MODEL, messages=USER,
                                          extra_headers={"x-account-name": "a"})
    headers = caught.value.response.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-limit-requests"] == "4000"
    assert headers["x-ratelimit-reset-requests"] in {"29s", "30s", "31s"}
    assert headers["retry-after"] == "30"
