"""The OpenAI chat-completions <-> Anthropic Messages translator (``_proxy.dialects.openai``).

Outputs are checked against the real SDK models: translated requests are validated with
the anthropic SDK's ``MessageCreateParams`` TypedDicts plus the API's turn rules, and
OpenAI bodies and chunks are parsed with the openai SDK's pydantic models (and, end to
end, through ``openai.OpenAI`` over a mock transport).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx2
import msgspec
import openai
import pydantic
import pytest
from anthropic.types.message_create_params import (
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)
from openai.types import Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

import ccrotate._proxy.dialects.openai as api
from ccrotate._exceptions import TranslationError, UpstreamProtocolError
from ccrotate._proxy.dialects.openai import (
    ModelCapabilities,
    OpenAITranslator,
    TranslatedRequest,
    anthropic_error_to_openai,
    models_to_openai,
    parse_model_capabilities,
    translation_error_body,
)
from ccrotate._proxy.dialects.openai.bench import bench_translator

MODEL = "claude-sonnet-4-6"
USER = {"role": "user", "content": "hi"}
ABSENT = object()

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time"}}
WEATHER_OUT = {"name": "get_weather", "description": "Weather for a city",
               "input_schema": WEATHER["function"]["parameters"]}  # type: ignore[index]
EMPTY_SCHEMA = {"type": "object", "properties": {}}
PNG = "iVBORw0KGgo="

ADAPTIVE = ModelCapabilities(thinking_adaptive=True, thinking_disabled=True,
                             effort_levels=frozenset({"low", "medium", "high"}))
BUDGET = ModelCapabilities(thinking_enabled=True)
NO_THINKING = ModelCapabilities()
ALWAYS_THINKS = ModelCapabilities(thinking_adaptive=True, thinking_disabled=False)
STRUCTURED = ModelCapabilities(structured_outputs=True)

_PARAMS: dict[bool, pydantic.TypeAdapter[Any]] = {
    False: pydantic.TypeAdapter(MessageCreateParamsNonStreaming),
    True: pydantic.TypeAdapter(MessageCreateParamsStreaming),
}


def _materialize(value: Any) -> Any:
    # pydantic validates TypedDict iterables lazily: walk them so every item is checked.
    if isinstance(value, dict):
        return {key: _materialize(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, Iterator)):
        return [_materialize(item) for item in value]
    return value


def check_anthropic(body: bytes) -> dict[str, Any]:
    """Validate a translated body as the Messages API would, and return it as a dict."""
    data: dict[str, Any] = json.loads(body)
    _materialize(_PARAMS[bool(data.get("stream"))].validate_python(data))
    turns = data["messages"]
    assert turns
    assert turns[0]["role"] == "user"
    for before, after in itertools.pairwise(turns):
        assert before["role"] != after["role"], "roles must alternate"
    for i, turn in enumerate(turns):
        kinds = [block["type"] for block in turn["content"]]
        results = kinds.count("tool_result")
        if results:
            assert turn["role"] == "user"
            assert kinds[:results] == ["tool_result"] * results, "tool results come first"
        uses = {block["id"] for block in turn["content"] if block["type"] == "tool_use"}
        if uses:
            assert turn["role"] == "assistant"
            if i + 1 < len(turns):
                answered = {block["tool_use_id"] for block in turns[i + 1]["content"]
                            if block["type"] == "tool_result"}
                assert uses <= answered, "every tool_use is answered in the next turn"
        for block in turn["content"]:
            if block["type"] == "text":
                assert block["text"], "no empty text blocks"
    for block in data.get("system", ()):
        assert block["type"] == "text"
        assert block["text"]
    return data


def req(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [USER], **fields}


def translate(body: dict[str, Any], **options: Any) -> dict[str, Any]:
    translated = OpenAITranslator(**options).translate_request(json.dumps(body).encode())
    return check_anthropic(translated.body)


def rejection(body: dict[str, Any] | bytes, **options: Any) -> TranslationError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(TranslationError) as info:
        OpenAITranslator(**options).translate_request(raw)
    return info.value


def assert_subset(data: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        if value is ABSENT:
            assert key not in data, key
        else:
            assert data.get(key) == value, key


# ====================================================================== request parameters


@pytest.mark.parametrize(("fields", "expected"), [
    pytest.param({}, {"model": MODEL, "max_tokens": 4096, "stream": ABSENT,
                      "temperature": ABSENT, "tools": ABSENT, "system": ABSENT},
                 id="minimal"),
    pytest.param({"max_tokens": 100}, {"max_tokens": 100}, id="max_tokens"),
    pytest.param({"max_completion_tokens": 300}, {"max_tokens": 300},
                 id="max_completion_tokens"),
    pytest.param({"max_tokens": 100, "max_completion_tokens": 200}, {"max_tokens": 200},
                 id="max_completion_tokens-wins"),
    pytest.param({"stop": "END"}, {"stop_sequences": ["END"]}, id="stop-string"),
    pytest.param({"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}, id="stop-list"),
    pytest.param({"stop": []}, {"stop_sequences": ABSENT}, id="stop-empty"),
    pytest.param({"temperature": 0.4}, {"temperature": 0.4}, id="temperature"),
    pytest.param({"temperature": 0}, {"temperature": 0}, id="temperature-zero"),
    pytest.param({"temperature": 1}, {"temperature": ABSENT}, id="temperature-default"),
    pytest.param({"top_p": 0.9}, {"top_p": 0.9}, id="top_p"),
    pytest.param({"top_p": 1.0}, {"top_p": ABSENT}, id="top_p-default"),
    pytest.param({"user": "u-1"}, {"metadata": {"user_id": "u-1"}}, id="user"),
    pytest.param({"safety_identifier": "s-1"}, {"metadata": {"user_id": "s-1"}},
                 id="safety_identifier"),
    pytest.param({"stream": True}, {"stream": True}, id="stream"),
    pytest.param({"stream": False}, {"stream": ABSENT}, id="stream-false"),
    pytest.param({"tools": [WEATHER]}, {"tools": [WEATHER_OUT], "tool_choice": ABSENT},
                 id="tools"),
    pytest.param({"tools": [CLOCK]},
                 {"tools": [{"name": "get_time", "input_schema": EMPTY_SCHEMA}]},
                 id="tool-without-parameters"),
    pytest.param({"tools": [WEATHER], "tool_choice": "auto"},
                 {"tool_choice": {"type": "auto"}}, id="tool_choice-auto"),
    pytest.param({"tools": [WEATHER], "tool_choice": "none"},
                 {"tool_choice": {"type": "none"}}, id="tool_choice-none"),
    pytest.param({"tools": [WEATHER], "tool_choice": "required"},
                 {"tool_choice": {"type": "any"}}, id="tool_choice-required"),
    pytest.param({"tools": [WEATHER, CLOCK],
                  "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
                 {"tool_choice": {"type": "tool", "name": "get_time"}}, id="tool_choice-named"),
    pytest.param({"tools": [WEATHER], "parallel_tool_calls": False},
                 {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
                 id="parallel-false-creates-auto"),
    pytest.param({"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False},
                 {"tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
                 id="parallel-false-on-required"),
    pytest.param({"tools": [WEATHER], "tool_choice": "none", "parallel_tool_calls": False},
                 {"tool_choice": {"type": "none"}}, id="parallel-false-on-none"),
    pytest.param({"tools": [WEATHER, CLOCK], "tool_choice": {
        "type": "allowed_tools", "allowed_tools": {
            "mode": "required",
            "tools": [{"type": "function", "function": {"name": "get_weather"}}]}}},
        {"tools": [WEATHER_OUT], "tool_choice": {"type": "any"}}, id="allowed_tools"),
    pytest.param({"tool_choice": "auto"}, {"tool_choice": ABSENT}, id="tool_choice-no-tools"),
    pytest.param({"response_format": {"type": "text"}}, {"tools": ABSENT},
                 id="response_format-text"),
])
def test_request_parameters(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    """Each OpenAI parameter lands on its Messages API counterpart."""
    assert_subset(translate(req(**fields)), expected)


@pytest.mark.parametrize(("options", "expected"), [
    pytest.param({"model_aliases": {"gpt-4o": MODEL}}, {"model": MODEL}, id="alias"),
    pytest.param({"default_max_tokens": 777}, {"max_tokens": 777}, id="default_max_tokens"),
    pytest.param({"prompt_cache": True}, {"cache_control": {"type": "ephemeral"}},
                 id="prompt_cache"),
    pytest.param({"sampling": "drop"}, {"temperature": ABSENT, "top_p": ABSENT},
                 id="sampling-drop"),
])
def test_translator_options(options: dict[str, Any], expected: dict[str, Any]) -> None:
    """Constructor options change the translation as documented."""
    body = req(model="gpt-4o", temperature=0.2, top_p=0.5)
    assert_subset(translate(body, **options), expected)


def test_translated_request_fields() -> None:
    """TranslatedRequest reports the aliased model, the client's name and stream flags."""
    translator = OpenAITranslator(model_aliases={"gpt-4o": MODEL})
    out = translator.translate_request(json.dumps(req(
        model="gpt-4o", stream=True, stream_options={"include_usage": True})).encode())
    assert (out.model, out.openai_model, out.stream, out.include_usage) == (
        MODEL, "gpt-4o", True, True)
    plain = translator.translate_request(json.dumps(req(
        stream_options={"include_usage": True})).encode())
    assert (plain.stream, plain.include_usage) == (False, False)


@pytest.mark.parametrize("fields", [
    pytest.param({"store": True}, id="store"),
    pytest.param({"metadata": {"k": "v"}}, id="metadata"),
    pytest.param({"service_tier": "auto"}, id="service_tier"),
    pytest.param({"n": 1}, id="n-1"),
    pytest.param({"seed": 42}, id="seed"),
    pytest.param({"prompt_cache_key": "k"}, id="prompt_cache_key"),
    pytest.param({"prompt_cache_retention": "24h"}, id="prompt_cache_retention"),
    pytest.param({"stream_options": {"include_obfuscation": False}}, id="stream_options"),
    pytest.param({"logprobs": False, "top_logprobs": 0}, id="logprobs-off"),
    pytest.param({"presence_penalty": 0, "frequency_penalty": 0.0}, id="penalties-zero"),
    pytest.param({"logit_bias": {}}, id="logit_bias-empty"),
    pytest.param({"modalities": ["text"]}, id="modalities-text"),
    pytest.param({"verbosity": "medium"}, id="verbosity-medium"),
    pytest.param({"parallel_tool_calls": True}, id="parallel_tool_calls-true"),
    pytest.param({"temperature": None, "top_p": None, "stop": None, "tools": None,
                  "tool_choice": None, "response_format": None, "reasoning_effort": None,
                  "audio": None, "prediction": None, "functions": None},
                 id="explicit-nulls"),
])
def test_harmless_parameters_are_ignored(fields: dict[str, Any]) -> None:
    """Hints without effect on the answer leave the translated body unchanged."""
    assert translate(req(**fields)) == translate(req())


FUNCTION_MSGS = [USER, {"role": "function", "name": "f", "content": "x"}]


@pytest.mark.parametrize(("body", "param"), [
    pytest.param(req(n=2), "n", id="n"),
    pytest.param(req(logprobs=True), "logprobs", id="logprobs"),
    pytest.param(req(top_logprobs=3), "top_logprobs", id="top_logprobs"),
    pytest.param(req(logit_bias={"50256": -100}), "logit_bias", id="logit_bias"),
    pytest.param(req(presence_penalty=0.5), "presence_penalty", id="presence_penalty"),
    pytest.param(req(frequency_penalty=-1), "frequency_penalty", id="frequency_penalty"),
    pytest.param(req(audio={"voice": "alloy", "format": "wav"}), "audio", id="audio"),
    pytest.param(req(modalities=["text", "audio"]), "modalities", id="modalities"),
    pytest.param(req(prediction={"type": "content", "content": "x"}), "prediction",
                 id="prediction"),
    pytest.param(req(functions=[{"name": "f"}]), "functions", id="functions"),
    pytest.param(req(function_call="auto"), "function_call", id="function_call"),
    pytest.param(req(web_search_options={}), "web_search_options", id="web_search"),
    pytest.param(req(verbosity="high"), "verbosity", id="verbosity"),
    pytest.param(req(moderation={"model": "m"}), "moderation", id="moderation"),
    pytest.param(req(temperature=1.5), "temperature", id="temperature-above-1"),
    pytest.param(req(temperature=-0.1), "temperature", id="temperature-negative"),
    pytest.param(req(top_p=1.5), "top_p", id="top_p-above-1"),
    pytest.param(req(max_tokens=0), "max_tokens", id="max_tokens-zero"),
    pytest.param(req(max_completion_tokens=-1), "max_completion_tokens",
                 id="max_completion_tokens-negative"),
    pytest.param(req(foo=1), "foo", id="unknown-parameter"),
    pytest.param(req(stream="yes"), "stream", id="wrong-type"),
    pytest.param({"messages": [USER]}, "model", id="missing-model"),
    pytest.param({"model": MODEL}, "messages", id="missing-messages"),
    pytest.param(req(model=""), "model", id="empty-model"),
    pytest.param(req(messages=[]), "messages", id="empty-messages"),
    pytest.param(req(messages=[{"role": "system", "content": "s"}]), "messages",
                 id="only-system"),
    pytest.param(req(messages="hi"), "messages", id="messages-not-a-list"),
    pytest.param(req(messages=FUNCTION_MSGS), "messages[1].role", id="role-function"),
    pytest.param(req(messages=[{"role": "bot", "content": "x"}]), "messages[0].role",
                 id="role-unknown"),
    pytest.param(req(tools=[{"type": "custom", "custom": {"name": "c"}}]), "tools[0]",
                 id="custom-tool"),
    pytest.param(req(tools=[WEATHER], tool_choice="sometimes"), "tool_choice",
                 id="tool_choice-unknown"),
    pytest.param(req(tools=[WEATHER], tool_choice={
        "type": "function", "function": {"name": "nope"}}), "tool_choice.function.name",
        id="tool_choice-unknown-name"),
    pytest.param(req(tool_choice="required"), "tool_choice", id="required-without-tools"),
    pytest.param(req(tools=[WEATHER], tool_choice={"type": "custom", "custom": {"name": "c"}}),
                 "tool_choice", id="tool_choice-custom"),
    pytest.param(req(tools=[WEATHER], tool_choice={"type": "allowed_tools", "allowed_tools": {
        "mode": "auto", "tools": [{"type": "function", "function": {"name": "x"}}]}}),
        "tool_choice.allowed_tools.tools", id="allowed_tools-unknown"),
    pytest.param(req(reasoning_effort="extreme"), "reasoning_effort", id="reasoning-unknown"),
    pytest.param(req(reasoning_effort="low", temperature=0.5), "temperature",
                 id="reasoning-with-temperature"),
    pytest.param(req(reasoning_effort="low", top_p=0.5), "top_p", id="reasoning-with-top_p"),
    pytest.param(req(reasoning_effort="low", tools=[WEATHER], tool_choice="required"),
                 "tool_choice", id="reasoning-with-forced-tool"),
    pytest.param(req(reasoning_effort="low", response_format={"type": "json_object"}),
                 "response_format", id="reasoning-with-json_object"),
])
def test_rejected_parameters_name_themselves(body: dict[str, Any], param: str) -> None:
    """Anything without an equivalent is a 400 whose body names the parameter."""
    exc = rejection(body)
    assert exc.param == param
    error = json.loads(translation_error_body(exc))["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"]


@pytest.mark.parametrize(("body", "code"), [
    pytest.param(b"{not json", "invalid_json", id="malformed"),
    pytest.param(b"", "invalid_json", id="empty"),
    pytest.param(b"[1, 2]", "invalid_value", id="array"),
])
def test_malformed_bodies(body: bytes, code: str) -> None:
    """Unparseable bodies are TranslationErrors too, with no param."""
    exc = rejection(body)
    assert (exc.param, exc.code) == (None, code)


# ====================================================================== messages


def _tool_call(call_id: str, name: str = "get_weather", args: str = '{"city":"Paris"}',
               ) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def _text(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


def _use(call_id: str, name: str = "get_weather", **args: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name,
            "input": args or {"city": "Paris"}}


def _result(call_id: str, content: str | None = "sunny") -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if content is not None:
        block["content"] = content
    return block


def _user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def _assistant(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


TOOL_TURN = {"role": "assistant", "content": None, "tool_calls": [_tool_call("call_1")]}


@pytest.mark.parametrize(("messages", "system", "turns"), [
    pytest.param(
        [{"role": "system", "content": "A"}, USER,
         {"role": "developer", "content": [_text("B"), _text("C")]},
         {"role": "assistant", "content": "ok"}, {"role": "system", "content": "D"}],
        ["A", "B", "C", "D"], [_user(_text("hi")), _assistant(_text("ok"))],
        id="system-and-developer-collected-in-order"),
    pytest.param(
        [USER, {"role": "user", "content": [_text("more")]}], [],
        [_user(_text("hi"), _text("more"))], id="consecutive-users-merged"),
    pytest.param(
        [USER, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"},
         {"role": "user", "content": "c"}], [],
        [_user(_text("hi")), _assistant(_text("a"), _text("b")), _user(_text("c"))],
        id="consecutive-assistants-merged"),
    pytest.param(
        [USER, {"role": "assistant", "content": "Let me check.",
                "tool_calls": [_tool_call("call_1"), _tool_call("call_2", "get_time", "{}")]},
         {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
         {"role": "tool", "tool_call_id": "call_2", "content": [_text("noon")]},
         {"role": "user", "content": "thanks"}], [],
        [_user(_text("hi")),
         _assistant(_text("Let me check."), _use("call_1"), {
             "type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}),
         _user(_result("call_1"), {"type": "tool_result", "tool_use_id": "call_2",
                                   "content": [_text("noon")]}, _text("thanks"))],
        id="tool-results-merged-with-following-user"),
    pytest.param(
        [USER, TOOL_TURN, {"role": "user", "content": "also"},
         {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}], [],
        [_user(_text("hi")), _assistant(_use("call_1")), _user(_result("call_1"), _text("also"))],
        id="tool-results-moved-first"),
    pytest.param(
        [USER, {"role": "assistant", "content": None, "tool_calls": [
            _tool_call("functions.get_weather:0", args="")]},
         {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": ""}], [],
        [_user(_text("hi")),
         _assistant({"type": "tool_use", "id": "functions_get_weather_0",
                     "name": "get_weather", "input": {}}),
         _user(_result("functions_get_weather_0", None))],
        id="tool-ids-sanitized-empty-args-and-result"),
    pytest.param(
        [USER, {"role": "assistant", "content": [_text("a"), {"type": "refusal",
                                                              "refusal": "no"}]},
         {"role": "user", "content": "?"}, {"role": "assistant", "refusal": "still no"},
         {"role": "user", "content": "ok"}], [],
        [_user(_text("hi")), _assistant(_text("a"), _text("no")), _user(_text("?")),
         _assistant(_text("still no")), _user(_text("ok"))],
        id="assistant-parts-and-refusal"),
    pytest.param(
        [USER, {"role": "assistant", "content": ""}, {"role": "user", "content": [_text("")]},
         {"role": "user", "content": "x"}], [], [_user(_text("hi"), _text("x"))],
        id="empty-messages-dropped"),
    pytest.param(
        [{"role": "assistant", "content": "Hello! How can I help?"}, USER], [],
        [_user(_text(".")), _assistant(_text("Hello! How can I help?")), _user(_text("hi"))],
        id="assistant-first-gets-placeholder"),
    pytest.param(
        [USER, {"role": "assistant", "content": "The answer is "}], [],
        [_user(_text("hi")), _assistant(_text("The answer is"))],
        id="prefill-trailing-space-stripped"),
    pytest.param(
        [{"role": "user", "content": [
            _text("look"),
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": f"data:image/jpg;base64,{PNG}",
                                                "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.webp"}}]}],
        [],
        [_user(_text("look"),
               {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                            "data": PNG}},
               {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                            "data": PNG}},
               {"type": "image", "source": {"type": "url",
                                            "url": "https://example.com/a.webp"}})],
        id="images"),
    pytest.param(
        [{"role": "user", "content": [
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=",
                                      "filename": "a.pdf"}},
            {"type": "file", "file": {"file_data": "JVBERi0="}}]}],
        [],
        [_user(*[{"type": "document", "source": {"type": "base64",
                                                 "media_type": "application/pdf",
                                                 "data": "JVBERi0="}}] * 2)],
        id="pdf-files"),
])
def test_messages(messages: list[dict[str, Any]], system: list[str],
                  turns: list[dict[str, Any]]) -> None:
    """Messages become alternating turns; system/developer text becomes ``system``."""
    out = translate(req(messages=messages))
    assert [block["text"] for block in out.get("system", [])] == system
    assert out["messages"] == turns


def _bad_part(part: dict[str, Any]) -> dict[str, Any]:
    return req(messages=[{"role": "user", "content": [_text("x"), part]}])


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.mark.parametrize(("body", "param"), [
    pytest.param(_bad_part({"type": "input_audio", "input_audio": {"data": "x",
                                                                   "format": "wav"}}),
                 "messages[0].content[1]", id="input_audio"),
    pytest.param(_bad_part({"type": "file", "file": {"file_id": "file-1"}}),
                 "messages[0].content[1]", id="file_id"),
    pytest.param(_bad_part({"type": "file", "file": {"file_data": "data:text/csv;base64,eA=="}}),
                 "messages[0].content[1]", id="file-not-pdf"),
    pytest.param(_bad_part({"type": "video", "video": {}}), "messages[0].content[1]",
                 id="unknown-part-type"),
    pytest.param(_bad_part({"type": "refusal", "refusal": "no"}), "messages[0].content[1]",
                 id="refusal-in-user"),
    pytest.param(_bad_part(_image("http://example.com/a.png")), "messages[0].content[1]",
                 id="image-http"),
    pytest.param(_bad_part(_image("ftp://example.com/a.png")), "messages[0].content[1]",
                 id="image-ftp"),
    pytest.param(_bad_part(_image("data:image/bmp;base64,Qk0=")), "messages[0].content[1]",
                 id="image-bmp"),
    pytest.param(_bad_part(_image("data:image/png,rawbytes")), "messages[0].content[1]",
                 id="image-not-base64"),
    pytest.param(req(messages=[{"role": "system", "content": [_image("https://x.io/a.png")]},
                               USER]),
                 "messages[0].content[0]", id="image-in-system"),
    pytest.param(req(messages=[USER, {"role": "assistant", "tool_calls": [
        _tool_call("c", args="{oops")]}]), "messages[1].tool_calls[0].function.arguments",
        id="tool-arguments-invalid-json"),
    pytest.param(req(messages=[USER, {"role": "assistant", "tool_calls": [
        _tool_call("c", args="[1]")]}]), "messages[1].tool_calls[0].function.arguments",
        id="tool-arguments-not-object"),
    pytest.param(req(messages=[USER, {"role": "assistant", "tool_calls": [_tool_call("")]}]),
                 "messages[1].tool_calls[0].id", id="tool-call-empty-id"),
    pytest.param(req(messages=[USER, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "custom", "custom": {"name": "x", "input": "y"}}]}]),
        "messages[1].tool_calls[0]", id="custom-tool-call"),
    pytest.param(req(messages=[USER, {"role": "assistant", "audio": {"id": "a"}}]),
                 "messages[1].audio", id="assistant-audio"),
    pytest.param(req(messages=[USER, {"role": "assistant", "function_call": {
        "name": "f", "arguments": "{}"}}]), "messages[1].function_call",
        id="assistant-function_call"),
    pytest.param(req(messages=[USER, TOOL_TURN, {"role": "tool", "content": "x"}]),
                 "messages[2].tool_call_id", id="tool-without-id"),
])
def test_rejected_messages_name_the_part(body: dict[str, Any], param: str) -> None:
    """Unsupported content is never dropped: the error names the message and part."""
    assert rejection(body).param == param


@pytest.mark.parametrize(("caps", "param"), [
    pytest.param(ModelCapabilities(image_input=False), "messages[0].content[1]", id="image"),
    pytest.param(ModelCapabilities(pdf_input=False), "messages[0].content[1]", id="pdf"),
])
def test_capabilities_gate_inputs(caps: ModelCapabilities, param: str) -> None:
    """A model known not to read images or PDFs gets a 400, not an upstream error."""
    part = (_image(f"data:image/png;base64,{PNG}") if not caps.image_input
            else {"type": "file", "file": {"file_data": "JVBERi0="}})
    assert rejection(_bad_part(part), capabilities={MODEL: caps}).param == param


# ====================================================================== reasoning


LOOP = [USER, TOOL_TURN, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]


@pytest.mark.parametrize(("fields", "caps", "expected"), [
    pytest.param({"reasoning_effort": "medium"}, None,
                 {"thinking": {"type": "adaptive"}, "output_config": {"effort": "medium"},
                  "max_tokens": 4096 + 8192}, id="unknown-model-adaptive"),
    pytest.param({"reasoning_effort": "minimal"}, None,
                 {"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}},
                 id="minimal-is-low"),
    pytest.param({"reasoning_effort": "xhigh"}, ADAPTIVE,
                 {"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}},
                 id="effort-steps-down"),
    pytest.param({"reasoning_effort": "high"}, ModelCapabilities(thinking_adaptive=True),
                 {"thinking": {"type": "adaptive"}, "output_config": ABSENT},
                 id="no-effort-support"),
    pytest.param({"reasoning_effort": "low"}, BUDGET,
                 {"thinking": {"type": "enabled", "budget_tokens": 2048},
                  "max_tokens": 4096 + 2048, "output_config": ABSENT}, id="budget"),
    pytest.param({"reasoning_effort": "medium", "max_completion_tokens": 20000}, BUDGET,
                 {"thinking": {"type": "enabled", "budget_tokens": 8192},
                  "max_tokens": 20000}, id="budget-within-explicit-max"),
    pytest.param({"reasoning_effort": "high", "max_tokens": 1000}, BUDGET,
                 {"thinking": {"type": "enabled", "budget_tokens": 24576},
                  "max_tokens": 25576}, id="budget-raises-small-max"),
    pytest.param({"reasoning_effort": "high"},
                 ModelCapabilities(thinking_enabled=True, max_tokens=16000),
                 {"thinking": {"type": "enabled", "budget_tokens": 16000 - 4096},
                  "max_tokens": 16000}, id="budget-capped-by-model"),
    pytest.param({"reasoning_effort": "medium", "max_tokens": 30000},
                 ModelCapabilities(thinking_enabled=True, max_tokens=16000),
                 {"thinking": {"type": "enabled", "budget_tokens": 8000},
                  "max_tokens": 16000}, id="budget-capped-keeps-half-for-answer"),
    pytest.param({"reasoning_effort": "high", "messages": LOOP}, BUDGET,
                 {"thinking": ABSENT, "max_tokens": 4096}, id="budget-skipped-in-tool-loop"),
    pytest.param({"reasoning_effort": "high", "messages": LOOP}, None,
                 {"thinking": {"type": "adaptive"}}, id="adaptive-kept-in-tool-loop"),
    pytest.param({"reasoning_effort": "none"}, None, {"thinking": {"type": "disabled"}},
                 id="none-disables"),
    pytest.param({"reasoning_effort": "low", "temperature": 1, "top_p": 0.97}, None,
                 {"thinking": {"type": "adaptive"}, "temperature": ABSENT, "top_p": 0.97},
                 id="allowed-sampling-with-thinking"),
])
def test_reasoning_effort(fields: dict[str, Any], caps: ModelCapabilities | None,
                          expected: dict[str, Any]) -> None:
    """reasoning_effort picks adaptive or budget thinking from the model's capabilities."""
    out = translate(req(**fields), capabilities={MODEL: caps} if caps else None)
    assert_subset(out, expected)


@pytest.mark.parametrize(("effort", "caps"), [
    pytest.param("low", NO_THINKING, id="model-without-thinking"),
    pytest.param("none", ALWAYS_THINKS, id="model-that-always-thinks"),
])
def test_reasoning_effort_rejected_by_capabilities(effort: str, caps: ModelCapabilities) -> None:
    """A reasoning request the model cannot honour is refused up front."""
    assert rejection(req(reasoning_effort=effort),
                     capabilities=lambda model: caps).param == "reasoning_effort"


# ====================================================================== JSON mode

SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}},
          "required": ["answer"], "additionalProperties": False}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "result", "schema": SCHEMA,
                                                      "description": "The result."}}
FORCED = {"type": "tool", "name": "json_response"}


def _tool_names(out: dict[str, Any]) -> list[str]:
    return [tool["name"] for tool in out.get("tools", [])]


@pytest.mark.parametrize(("fields", "options", "tools", "choice", "output_config"), [
    pytest.param({"response_format": {"type": "json_object"}}, {}, ["json_response"], FORCED,
                 ABSENT, id="json_object"),
    pytest.param({"response_format": JSON_SCHEMA}, {}, ["json_response"], FORCED, ABSENT,
                 id="json_schema-tool"),
    pytest.param({"response_format": JSON_SCHEMA}, {"capabilities": {MODEL: STRUCTURED}},
                 ABSENT, ABSENT, {"format": {"type": "json_schema", "schema": SCHEMA}},
                 id="json_schema-native-by-capability"),
    pytest.param({"response_format": JSON_SCHEMA}, {"json_mode": "native"}, ABSENT, ABSENT,
                 {"format": {"type": "json_schema", "schema": SCHEMA}}, id="json_mode-native"),
    pytest.param({"response_format": JSON_SCHEMA}, {"json_mode": "tool",
                                                    "capabilities": {MODEL: STRUCTURED}},
                 ["json_response"], FORCED, ABSENT, id="json_mode-tool"),
    pytest.param({"response_format": {"type": "json_object"}}, {"json_mode": "native"},
                 ["json_response"], FORCED, ABSENT, id="json_object-always-tool"),
    pytest.param({"response_format": JSON_SCHEMA, "tools": [WEATHER]}, {},
                 ["get_weather", "json_response"], {"type": "any"}, ABSENT,
                 id="with-tools-any"),
    pytest.param({"response_format": JSON_SCHEMA, "tools": [WEATHER], "tool_choice": "none"},
                 {}, ["get_weather", "json_response"], FORCED, ABSENT, id="tool_choice-none"),
    pytest.param({"response_format": JSON_SCHEMA, "tools": [WEATHER],
                  "tool_choice": "required"}, {}, ["get_weather"], {"type": "any"}, ABSENT,
                 id="tool_choice-required-wins"),
    pytest.param({"response_format": JSON_SCHEMA, "tools": [
        {"type": "function", "function": {"name": "json_response"}}]}, {},
        ["json_response", "json_response_"], {"type": "any"}, ABSENT, id="name-collision"),
    pytest.param({"response_format": JSON_SCHEMA, "reasoning_effort": "low"}, {}, ABSENT,
                 ABSENT, {"effort": "low", "format": {"type": "json_schema", "schema": SCHEMA}},
                 id="with-reasoning-native"),
])
def test_json_mode_request(fields: dict[str, Any], options: dict[str, Any], tools: Any,
                           choice: Any, output_config: Any) -> None:
    """response_format JSON becomes a forced tool or native structured output."""
    out = translate(req(**fields), **options)
    assert (_tool_names(out) if "tools" in out else ABSENT) == tools
    assert out.get("tool_choice", ABSENT) == choice
    assert out.get("output_config", ABSENT) == output_config


def test_json_tool_carries_schema() -> None:
    """The forced tool's input_schema is the client's schema, byte-faithful."""
    translator = OpenAITranslator()
    out = translator.translate_request(json.dumps(req(response_format=JSON_SCHEMA)).encode())
    assert out.json_tool == "json_response"
    tool = json.loads(out.body)["tools"][0]
    assert tool["input_schema"] == SCHEMA
    assert tool["description"].endswith("The result.")


def test_json_mode_tool_rejected_with_reasoning() -> None:
    """The forced tool cannot coexist with thinking, so that pairing is a 400."""
    exc = rejection(req(response_format=JSON_SCHEMA, reasoning_effort="low"), json_mode="tool")
    assert exc.param == "response_format"


# ====================================================================== responses


def message(*content: dict[str, Any], stop: str | None = "end_turn",
            usage: dict[str, Any] | None = None) -> bytes:
    return json.dumps({
        "id": "msg_01ABC", "type": "message", "role": "assistant", "model": MODEL,
        "content": list(content), "stop_reason": stop, "stop_sequence": None,
        "usage": usage or {"input_tokens": 10, "output_tokens": 5}}).encode()


def request_for(**fields: Any) -> TranslatedRequest:
    return OpenAITranslator().translate_request(json.dumps(req(model="gpt-4o", **fields))
                                                .encode())


def completion(body: bytes, translated: TranslatedRequest | None = None) -> ChatCompletion:
    translated = translated or request_for()
    out = OpenAITranslator().translate_response(body, translated)
    parsed = ChatCompletion.model_validate_json(out)
    assert parsed.id == "chatcmpl-01ABC"
    assert parsed.model == "gpt-4o"
    assert parsed.created == translated.created
    return parsed


@pytest.mark.parametrize(("stop", "finish"), [
    pytest.param("end_turn", "stop", id="end_turn"),
    pytest.param("stop_sequence", "stop", id="stop_sequence"),
    pytest.param("pause_turn", "stop", id="pause_turn"),
    pytest.param("max_tokens", "length", id="max_tokens"),
    pytest.param("model_context_window_exceeded", "length", id="context-window"),
    pytest.param("refusal", "content_filter", id="refusal"),
    pytest.param(None, "stop", id="null"),
    pytest.param("something_new", "stop", id="unknown"),
])
def test_finish_reasons(stop: str | None, finish: str) -> None:
    """Every Anthropic stop_reason maps to an OpenAI finish_reason."""
    parsed = completion(message(_text("x"), stop=stop))
    assert parsed.choices[0].finish_reason == finish


def test_response_text_tools_and_reasoning() -> None:
    """Text, tool calls and thinking land in content, tool_calls and reasoning_content."""
    body = message({"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
                   {"type": "redacted_thinking", "data": "xx"},
                   _text("Let me look "), _text("that up."),
                   {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                    "input": {"city": "Paris"}},
                   {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
                   stop="tool_use")
    parsed = completion(body)
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look that up."
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments))  # type: ignore[union-attr]
            for c in calls] == [("toolu_1", "get_weather", {"city": "Paris"}),
                                ("toolu_2", "get_time", {})]
    assert choice.message.model_extra == {"reasoning_content": "Hmm."}


def test_response_without_text_has_null_content() -> None:
    """No text blocks -> content null and no tool_calls/reasoning keys."""
    raw = OpenAITranslator().translate_response(message(), request_for())
    msg = json.loads(raw)["choices"][0]["message"]
    assert msg == {"role": "assistant", "content": None, "refusal": None}


@pytest.mark.parametrize(("usage", "expected"), [
    pytest.param({"input_tokens": 10, "output_tokens": 5},
                 {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                  "prompt_tokens_details": {"cached_tokens": 0}}, id="plain"),
    pytest.param({"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 20,
                  "output_tokens_details": {"thinking_tokens": 3}},
                 {"prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135,
                  "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20},
                  "completion_tokens_details": {"reasoning_tokens": 3}}, id="cache-and-thinking"),
])
def test_usage(usage: dict[str, Any], expected: dict[str, Any]) -> None:
    """Prompt tokens include cache reads and writes; cached_tokens is the read part."""
    completion(message(_text("x"), usage=usage))  # shape check
    raw = OpenAITranslator().translate_response(message(_text("x"), usage=usage),
                                                request_for())
    assert json.loads(raw)["usage"] == expected


def test_json_mode_response_round_trip() -> None:
    """The JSON tool's input comes back as parseable message content, finish 'stop'."""
    translated = request_for(response_format=JSON_SCHEMA)
    body = message({"type": "tool_use", "id": "toolu_9", "name": "json_response",
                    "input": {"answer": 42}}, stop="tool_use")
    parsed = completion(body, translated)
    choice = parsed.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert json.loads(choice.message.content or "") == {"answer": 42}


@pytest.mark.parametrize("body", [
    pytest.param(b"", id="empty"), pytest.param(b"<html>", id="html"),
    pytest.param(b'{"type": "error"}', id="error-body"),
])
def test_malformed_response_is_protocol_error(body: bytes) -> None:
    """A non-message upstream body raises UpstreamProtocolError (a 502, not a 400)."""
    with pytest.raises(UpstreamProtocolError):
        OpenAITranslator().translate_response(body, request_for())


# ====================================================================== streaming


def sse(event: dict[str, Any]) -> bytes:
    return (f"event: {event['type']}\ndata: ".encode() + json.dumps(event).encode()
            + b"\n\n")


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": fields}


def stop_block(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


START = {"type": "message_start", "message": {
    "id": "msg_01Stream", "type": "message", "role": "assistant", "content": [],
    "model": MODEL, "stop_reason": None, "stop_sequence": None,
    "usage": {"input_tokens": 30, "cache_read_input_tokens": 100, "output_tokens": 1}}}
PING = {"type": "ping"}


def finish_events(stop: str, output_tokens: int = 42) -> list[dict[str, Any]]:
    return [{"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
             "usage": {"output_tokens": output_tokens}}, {"type": "message_stop"}]


# The wire doc's sequence: message_start, blocks (thinking, text, two tool uses) with
# pings in between, message_delta, message_stop. Multi-byte text exercises UTF-8 splits.
FULL_EVENTS: list[dict[str, Any]] = [
    START, PING,
    block_start(0, {"type": "thinking", "thinking": ""}),
    delta(0, type="thinking_delta", thinking="Let me think… "),
    delta(0, type="thinking_delta", thinking="ok."),
    delta(0, type="signature_delta", signature="EqQBCgIYAhIM"),
    stop_block(0),
    block_start(1, {"type": "text", "text": ""}),
    delta(1, type="text_delta", text="Héllo 🌍, "),
    PING,
    delta(1, type="text_delta", text="世界 \"quoted\"\n"),
    stop_block(1),
    block_start(2, {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {}}),
    delta(2, type="input_json_delta", partial_json=""),
    delta(2, type="input_json_delta", partial_json='{"city": '),
    delta(2, type="input_json_delta", partial_json='"Zürich"}'),
    stop_block(2),
    block_start(3, {"type": "tool_use", "id": "toolu_B", "name": "get_time", "input": {}}),
    delta(3, type="input_json_delta", partial_json="{}"),
    stop_block(3),
    *finish_events("tool_use"),
]
TRANSCRIPT = b"".join(sse(event) for event in FULL_EVENTS)


def stream_request(include_usage: bool = True, **fields: Any) -> TranslatedRequest:
    options = {"include_usage": True} if include_usage else {}
    return request_for(stream=True, stream_options=options, **fields)


def run_stream(pieces: list[bytes], translated: TranslatedRequest | None = None) -> bytes:
    translated = translated or stream_request()
    stream = OpenAITranslator().stream_translator(translated)
    return b"".join(stream.feed(piece) for piece in pieces) + stream.finish()


def data_lines(output: bytes) -> list[str]:
    """The SSE data payloads, asserting the framing is exactly ``data: ...\\n\\n``."""
    assert output.endswith(b"\n\n")
    events = output.decode().split("\n\n")[:-1]
    assert all(event.startswith("data: ") and "\n" not in event for event in events)
    return [event[6:] for event in events]


def chunks(output: bytes) -> list[ChatCompletionChunk]:
    lines = data_lines(output)
    assert lines[-1] == "[DONE]"
    return [ChatCompletionChunk.model_validate_json(line) for line in lines[:-1]]


WHOLE = run_stream([TRANSCRIPT])


def test_stream_translation() -> None:
    """Role first, then reasoning, content, tool calls, finish, usage, [DONE]."""
    parsed = chunks(WHOLE)
    assert {(c.id, c.model, c.object) for c in parsed} == {
        ("chatcmpl-01Stream", "gpt-4o", "chat.completion.chunk")}
    assert len({c.created for c in parsed}) == 1
    first = parsed[0].choices[0].delta
    assert (first.role, first.content) == ("assistant", "")
    body = [c for c in parsed if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in body)
    assert text == "Héllo 🌍, 世界 \"quoted\"\n"
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content", "")
                        for c in body)
    assert reasoning == "Let me think… ok."
    assert [c.choices[0].finish_reason for c in body] == [None] * (len(body) - 1) + [
        "tool_calls"]
    assert body[-1].choices[0].delta.model_dump(exclude_none=True) == {}
    usage_chunk = parsed[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 130, "completion_tokens": 42, "total_tokens": 172,
        "prompt_tokens_details": {"cached_tokens": 100}}
    assert all(c.usage is None for c in parsed[:-1])


def test_stream_tool_call_order() -> None:
    """Each tool call opens with id+name+'' and then streams argument fragments."""
    calls = [(call.index, call.id, call.type, call.function.name if call.function else None,
              call.function.arguments if call.function else None)
             for c in chunks(WHOLE) if c.choices
             for call in c.choices[0].delta.tool_calls or ()]
    assert calls == [
        (0, "toolu_A", "function", "get_weather", ""),
        (0, None, None, None, '{"city": '),
        (0, None, None, None, '"Zürich"}'),
        (1, "toolu_B", "function", "get_time", ""),
        (1, None, None, None, "{}"),
    ]


@pytest.mark.parametrize("variant", ["lf", "crlf"])
def test_stream_every_split_point(variant: str) -> None:
    """Splitting the transcript at any byte (mid-line, mid-UTF-8) changes nothing."""
    transcript = TRANSCRIPT if variant == "lf" else TRANSCRIPT.replace(b"\n", b"\r\n")
    translated = stream_request()
    whole = run_stream([TRANSCRIPT], translated)
    assert run_stream([transcript], translated) == whole
    for cut in range(1, len(transcript)):
        assert run_stream([transcript[:cut], transcript[cut:]], translated) == whole, cut


def test_stream_byte_by_byte() -> None:
    """One byte per feed, CRLF line ends, gives the same output as one feed."""
    translated = stream_request()
    crlf = TRANSCRIPT.replace(b"\n", b"\r\n")
    assert (run_stream([crlf[i:i + 1] for i in range(len(crlf))], translated)
            == run_stream([TRANSCRIPT], translated))


def _reframe(event: dict[str, Any], style: str) -> bytes:
    data = json.dumps(event)
    if style == "data-only":
        return f"data: {data}\n\n".encode()
    if style == "no-space":
        return f"event:{event['type']}\ndata:{data}\n\n".encode()
    if style == "comments":
        return f": hi\nevent: {event['type']}\n: there\ndata: {data}\nid: 7\n\n".encode()
    if style == "multi-line-data":
        # Split between two JSON tokens: SSE joins the lines with "\n", valid whitespace.
        data = data.replace(", ", ",\ndata: ", 1)
        return f"event: {event['type']}\ndata: {data}\n\n".encode()
    assert style == "cr-only"
    return f"event: {event['type']}\rdata: {data}\r\r".encode()


@pytest.mark.parametrize("style", ["data-only", "no-space", "comments", "multi-line-data",
                                   "cr-only"])
def test_stream_sse_framing_variants(style: str) -> None:
    """Any valid SSE framing of the same events gives the same output."""
    translated = stream_request()
    framed = b"".join(_reframe(event, style) for event in FULL_EVENTS)
    expected = run_stream([TRANSCRIPT], translated)
    assert run_stream([framed], translated) == expected
    assert run_stream([framed[i:i + 7] for i in range(0, len(framed), 7)], translated) == expected


def test_stream_without_usage() -> None:
    """Without include_usage there is no usage chunk and no usage key."""
    out = run_stream([TRANSCRIPT], stream_request(include_usage=False))
    assert b'"usage"' not in out
    assert chunks(out)[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(("stop", "finish"), [
    pytest.param("end_turn", "stop", id="end_turn"),
    pytest.param("max_tokens", "length", id="max_tokens"),
    pytest.param("refusal", "content_filter", id="refusal"),
    pytest.param("tool_use", "stop", id="tool_use-without-calls"),
])
def test_stream_finish_reason(stop: str, finish: str) -> None:
    """The final chunk carries the mapped finish_reason."""
    events = [START, block_start(0, {"type": "text", "text": ""}),
              delta(0, type="text_delta", text="x"), stop_block(0), *finish_events(stop)]
    parsed = chunks(run_stream([b"".join(map(sse, events))]))
    assert [c for c in parsed if c.choices][-1].choices[0].finish_reason == finish


def test_stream_json_mode() -> None:
    """JSON-mode tool input streams as content and ends with finish_reason 'stop'."""
    events = [START, block_start(0, {"type": "tool_use", "id": "toolu_J",
                                     "name": "json_response", "input": {}}),
              delta(0, type="input_json_delta", partial_json='{"answer"'),
              delta(0, type="input_json_delta", partial_json=": 42}"),
              stop_block(0), *finish_events("tool_use")]
    parsed = chunks(run_stream([b"".join(map(sse, events))],
                               stream_request(response_format=JSON_SCHEMA)))
    body = [c for c in parsed if c.choices]
    assert all(c.choices[0].delta.tool_calls is None for c in body)
    content = "".join(c.choices[0].delta.content or "" for c in body)
    assert json.loads(content) == {"answer": 42}
    assert body[-1].choices[0].finish_reason == "stop"


def test_stream_ignores_unknown_events_and_comments() -> None:
    """Comments, unknown events and blocks, and empty deltas produce nothing."""
    extra = (b": keep-alive comment\n\n" + sse({"type": "brand_new_event", "x": 1})
             + sse(block_start(5, {"type": "server_tool_use", "id": "s", "name": "web"}))
             + sse(delta(5, type="input_json_delta", partial_json='{"q": 1}'))
             + sse(delta(1, type="citations_delta", citation={})))
    translated = stream_request()
    assert (run_stream([TRANSCRIPT.replace(sse(PING), extra, 1)], translated)
            == run_stream([TRANSCRIPT], translated))


def _error_of(output: bytes) -> dict[str, Any]:
    lines = data_lines(output)
    assert "[DONE]" not in lines
    error: dict[str, Any] = json.loads(lines[-1])["error"]
    return error


def test_stream_error_event() -> None:
    """An upstream ``event: error`` ends the stream with an OpenAI error event, no [DONE]."""
    events = [START, block_start(0, {"type": "text", "text": ""}),
              delta(0, type="text_delta", text="partial")]
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    translated = stream_request()
    stream = OpenAITranslator().stream_translator(translated)
    out = stream.feed(b"".join(map(sse, events)) + sse(error) + sse(delta(0, type="text_delta",
                                                                              text="late")))
    assert _error_of(out) == {"message": "Overloaded", "type": "server_error", "param": None,
                              "code": "overloaded"}
    assert b"late" not in out
    assert stream.feed(sse({"type": "message_stop"})) == b""
    assert stream.finish() == b""
    assert stream.error("again") == b""


@pytest.mark.parametrize("cut", [
    pytest.param(TRANSCRIPT.index(b"event: message_delta"), id="before-message_delta"),
    pytest.param(TRANSCRIPT.index(b"event: message_stop"), id="before-message_stop"),
    pytest.param(0, id="empty"),
])
def test_stream_cut_off_reports_error(cut: int) -> None:
    """An upstream that ends without message_stop gets an error event from finish()."""
    out = run_stream([TRANSCRIPT[:cut]])
    assert _error_of(out)["type"] == "server_error"
    assert "message_stop" in _error_of(out)["message"]


def test_stream_last_event_without_blank_line() -> None:
    """A final message_stop missing its blank line is still honoured."""
    out = run_stream([TRANSCRIPT.rstrip(b"\n")])
    assert data_lines(out)[-1] == "[DONE]"


@pytest.mark.parametrize(("type_", "expected_type", "code"), [
    pytest.param("api_error", "server_error", None, id="api_error"),
    pytest.param("rate_limit_error", "requests", "rate_limit_exceeded", id="rate_limit"),
])
def test_stream_error_method(type_: str, expected_type: str, code: str | None) -> None:
    """error() emits one OpenAI error event for a connection that died mid-stream."""
    stream = OpenAITranslator().stream_translator(stream_request())
    stream.feed(sse(START))
    error = _error_of(stream.error("connection reset", type_))
    assert (error["message"], error["type"], error["code"]) == ("connection reset",
                                                               expected_type, code)
    assert stream.finish() == b""


def test_stream_malformed_event() -> None:
    """Garbage in a data line becomes an error event rather than an exception."""
    out = run_stream([sse(START) + b"event: content_block_delta\ndata: {oops\n\n"])
    assert _error_of(out)["type"] == "server_error"


def test_stream_after_done_ignores_input() -> None:
    """Bytes after message_stop are ignored; finish() adds nothing."""
    stream = OpenAITranslator().stream_translator(stream_request())
    assert stream.feed(TRANSCRIPT).endswith(b"data: [DONE]\n\n")
    assert stream.feed(TRANSCRIPT) == b""
    assert stream.finish() == b""


# ====================================================================== openai SDK end to end

SDK_MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def sdk_client(status: int, body: bytes, content_type: str = "application/json",
               ) -> openai.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=body, headers={"content-type": content_type})

    return openai.OpenAI(api_key="sk-test", base_url="http://proxy.test/api/v1",
                         max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def test_sdk_reads_streams() -> None:
    """The openai SDK iterates the translated stream and rebuilds text and tool calls."""
    client = sdk_client(200, WHOLE, "text/event-stream")
    stream = client.chat.completions.create(model="gpt-4o", messages=SDK_MESSAGES,
                                            stream=True)
    parsed = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in parsed if c.choices).startswith(
        "Héllo")


def test_sdk_raises_on_stream_error() -> None:
    """The SDK raises APIError on the error event the translator emits."""
    stream_tr = OpenAITranslator().stream_translator(stream_request())
    out = stream_tr.feed(sse(START)) + stream_tr.error("Overloaded", "overloaded_error")
    client = sdk_client(200, out, "text/event-stream")
    stream = client.chat.completions.create(model="gpt-4o", messages=SDK_MESSAGES,
                                            stream=True)
    with pytest.raises(openai.APIError, match="Overloaded"):
        list(stream)


def test_sdk_reads_completion() -> None:
    """The openai SDK parses a translated non-streamed response."""
    body = OpenAITranslator().translate_response(message(_text("hello")), request_for())
    result = sdk_client(200, body).chat.completions.create(
        model="gpt-4o", messages=SDK_MESSAGES)
    assert result.choices[0].message.content == "hello"


# ====================================================================== errors


def anthropic_error(type_: str, message: str = "boom", **extra: Any) -> bytes:
    return json.dumps({"type": "error", "error": {"type": type_, "message": message, **extra},
                       "request_id": "req_1"}).encode()


ERROR_CASES = [
    pytest.param(400, anthropic_error("invalid_request_error"), 400, "invalid_request_error",
                 None, openai.BadRequestError, id="invalid_request"),
    pytest.param(401, anthropic_error("authentication_error"), 401, "authentication_error",
                 "invalid_api_key", openai.AuthenticationError, id="authentication"),
    pytest.param(403, anthropic_error("permission_error"), 403, "permission_error",
                 "permission_denied", openai.PermissionDeniedError, id="permission"),
    pytest.param(404, anthropic_error("not_found_error"), 404, "invalid_request_error",
                 "not_found", openai.NotFoundError, id="not_found"),
    pytest.param(413, anthropic_error("request_too_large"), 413, "invalid_request_error",
                 "request_too_large", openai.APIStatusError, id="too_large"),
    pytest.param(429, anthropic_error("rate_limit_error"), 429, "requests",
                 "rate_limit_exceeded", openai.RateLimitError, id="rate_limit"),
    pytest.param(429, anthropic_error("rate_limit_error", details={
        "error_code": "enforced_spend_limit_reached"}), 429, "insufficient_quota",
        "insufficient_quota", openai.RateLimitError, id="spend_cap"),
    pytest.param(500, anthropic_error("api_error"), 500, "server_error", None,
                 openai.InternalServerError, id="api_error"),
    pytest.param(529, anthropic_error("overloaded_error"), 503, "server_error", "overloaded",
                 openai.InternalServerError, id="overloaded"),
    pytest.param(529, b"", 503, "server_error", "overloaded", openai.InternalServerError,
                 id="overloaded-empty-body"),
    pytest.param(502, b"<html>Bad Gateway</html>", 502, "server_error", None,
                 openai.InternalServerError, id="html-502"),
    pytest.param(418, anthropic_error("teapot_error"), 418, "invalid_request_error",
                 "teapot_error", openai.APIStatusError, id="unknown-type"),
    pytest.param(200, b"nonsense", 502, "server_error", None, openai.InternalServerError,
                 id="non-error-status"),
]


@pytest.mark.parametrize(("status", "body", "out_status", "type_", "code", "exc_class"),
                         ERROR_CASES)
def test_anthropic_errors(status: int, body: bytes, out_status: int, type_: str,
                          code: str | None, exc_class: type[openai.APIStatusError]) -> None:
    """Anthropic errors map to OpenAI status, type and code; the SDK picks the right class."""
    new_status, new_body = anthropic_error_to_openai(status, body)
    error = json.loads(new_body)["error"]
    assert (new_status, error["type"], error["code"], error["param"]) == (
        out_status, type_, code, None)
    assert error["message"]
    with pytest.raises(exc_class) as info:
        sdk_client(new_status, new_body).chat.completions.create(
            model="gpt-4o", messages=SDK_MESSAGES)
    assert type(info.value) is exc_class
    assert info.value.type == type_
    assert info.value.code == code


def test_translation_error_body_with_sdk() -> None:
    """A refused request reaches the SDK as BadRequestError naming the parameter."""
    exc = rejection(req(n=3))
    with pytest.raises(openai.BadRequestError) as info:
        sdk_client(400, translation_error_body(exc)).chat.completions.create(
            model="gpt-4o", messages=SDK_MESSAGES)
    assert (info.value.param, info.value.code) == ("n", "unsupported_parameter")


# ====================================================================== models


MODELS_BODY = json.dumps({"data": [
    {"type": "model", "id": "claude-opus-4-8", "display_name": "Claude Opus 4.8",
     "created_at": "2026-05-28T00:00:00Z", "max_tokens": 128000, "capabilities": {
         "thinking": {"supported": True, "types": {
             "adaptive": {"supported": True}, "enabled": {"supported": False},
             "disabled": {"supported": True}, "between_tools": {"supported": True}}},
         "effort": {"supported": True, "low": {"supported": True},
                    "medium": {"supported": True}, "high": {"supported": True},
                    "max": {"supported": True}, "xhigh": {"supported": True}},
         "structured_outputs": {"supported": True}, "image_input": {"supported": True},
         "pdf_input": {"supported": True}, "batch": {"supported": True}}},
    {"type": "model", "id": "claude-haiku-4-5", "display_name": "Claude Haiku 4.5",
     "created_at": "2025-10-01T00:00:00Z", "capabilities": {
         "thinking": {"supported": True, "types": {
             "adaptive": {"supported": False}, "enabled": {"supported": True},
             "disabled": {"supported": True}}},
         "effort": {"supported": False, "low": {"supported": False},
                    "medium": {"supported": False}, "high": {"supported": False},
                    "max": {"supported": False}}}},
    {"type": "model", "id": "claude-legacy", "display_name": "Old",
     "created_at": "2024-01-01T00:00:00Z"},
], "has_more": False, "first_id": "claude-opus-4-8", "last_id": "claude-legacy"}).encode()


def test_models_to_openai() -> None:
    """The model list keeps ids and release times and lists aliases of listed models."""
    out = json.loads(models_to_openai(MODELS_BODY, aliases={
        "gpt-4o": "claude-opus-4-8", "gpt-x": "claude-missing"}))
    assert out["object"] == "list"
    models = [Model.model_validate(item) for item in out["data"]]
    assert [(m.id, m.owned_by) for m in models] == [
        ("claude-opus-4-8", "anthropic"), ("claude-haiku-4-5", "anthropic"),
        ("claude-legacy", "anthropic"), ("gpt-4o", "anthropic")]
    assert models[0].created == 1779926400 == models[3].created
    with pytest.raises(UpstreamProtocolError):
        models_to_openai(b"{}")


def test_parse_model_capabilities() -> None:
    """Capabilities come from /v1/models; models without them stay unknown."""
    caps = parse_model_capabilities(MODELS_BODY)
    assert set(caps) == {"claude-opus-4-8", "claude-haiku-4-5"}
    assert caps["claude-opus-4-8"] == ModelCapabilities(
        thinking_adaptive=True, thinking_enabled=False, thinking_disabled=True,
        effort_levels=frozenset({"low", "medium", "high", "xhigh", "max"}),
        structured_outputs=True, max_tokens=128000)
    haiku = caps["claude-haiku-4-5"]
    assert (haiku.thinking_adaptive, haiku.thinking_enabled, haiku.effort_levels) == (
        False, True, frozenset())
    out = translate(req(model="claude-haiku-4-5", reasoning_effort="low"), capabilities=caps)
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 2048}


# ====================================================================== module surface


def test_public_surface() -> None:
    """__all__ is sorted and every name in it exists."""
    assert api.__all__ == sorted(api.__all__)
    assert all(hasattr(api, name) for name in api.__all__)


@pytest.mark.parametrize(("options", "match"), [
    pytest.param({"default_max_tokens": 0}, "default_max_tokens", id="max_tokens"),
    pytest.param({"json_mode": "magic"}, "json_mode", id="json_mode"),
    pytest.param({"sampling": "maybe"}, "sampling", id="sampling"),
])
def test_bad_options(options: dict[str, Any], match: str) -> None:
    """Bad constructor options fail at construction, naming the option."""
    with pytest.raises(ValueError, match=match):
        OpenAITranslator(**options)


def test_bench_runs() -> None:
    """The micro-benchmark runs and reports the three figures."""
    result = bench_translator(5)
    assert set(result) == {"request_us", "response_us", "stream_chunk_us"}
    assert all(value > 0 for value in result.values())


def test_request_is_plain_msgspec_roundtrip() -> None:
    """The translated body is compact JSON that msgspec and json agree on."""
    body = OpenAITranslator().translate_request(json.dumps(req(tools=[WEATHER])).encode()).body
    assert msgspec.json.decode(body) == json.loads(body)

