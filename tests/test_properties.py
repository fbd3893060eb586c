"""Property tests (hypothesis) of the parsers and translators that take outside input.

- the OpenAI translator: any chat-completions request gives a valid Messages request
  (checked with the anthropic SDK's types and the API's turn rules) or a clean
  ``TranslationError``; any Anthropic SSE event sequence gives valid
  ``ChatCompletionChunk``s ending in ``[DONE]`` (or one error event) with the text,
  reasoning and tool arguments reassembled equal to the input;
- the SSE parsers (``SSEScanner``, the OpenAI ``StreamTranslator``): the same stream
  split at arbitrary byte positions (inside UTF-8 characters, between ``\\r`` and
  ``\\n``) gives the same result as fed whole;
- the accounts file: any JSON gives accounts or an ``AccountsFileError``, whose message
  never repeats a credential from the input.

CI runs the ``ci`` profile (a modest number of examples, no deadline: the machine is
shared); ``HYPOTHESIS_PROFILE=thorough`` runs many more.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionChunk

from ccrotate import (
    AccountKind,
    AccountsFile,
    AccountsFileError,
    FileFormat,
    OpenAITranslator,
    TranslationError,
)
from ccrotate._proxy.dialects.openai import ModelCapabilities, TranslatedRequest
from ccrotate._wire import SSEScanner
from test_openai_translate import check_anthropic

settings.register_profile("ci", max_examples=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

MODEL = "claude-sonnet-4-6"
PNG = "iVBORw0KGgo="
PDF = "JVBERi0xLjQK"

# Short text, any Unicode (multi-byte characters, quotes, backslashes, control chars).
texts = st.text(max_size=12)
words = st.text(min_size=1, max_size=12)
# User ids reach logs and labels, so control characters are refused (a clean 400).
user_ids = st.text(alphabet=st.characters(exclude_characters=[chr(c) for c in
                                                              (*range(32), 127)]),
                   max_size=12)
names = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=16)


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


# ====================================================================== OpenAI requests

def _part(kind: str, value: Any) -> dict[str, Any]:
    return {"type": kind, kind: value}


image_urls = st.one_of(
    st.sampled_from(["image/png", "image/jpeg", "image/jpg", "image/gif", "image/webp",
                     "IMAGE/PNG"]).map(lambda t: f"data:{t};base64,{PNG}"),
    st.just("https://example.com/cat.png"),
)
supported_parts = st.one_of(
    texts.map(lambda t: _part("text", t)),
    st.builds(lambda url, detail: _part("image_url", {"url": url, "detail": detail}),
              image_urls, st.sampled_from(["auto", "low", "high"])),
    st.sampled_from([f"data:application/pdf;base64,{PDF}", PDF]).map(
        lambda data: _part("file", {"file_data": data, "filename": "a.pdf"})),
)
# Valid for OpenAI, refused by the translator (it must say so, not crash).
unsupported_parts = st.one_of(
    st.just(_part("image_url", {"url": "http://example.com/cat.png"})),
    st.just(_part("image_url", {"url": f"data:image/bmp;base64,{PNG}"})),
    st.just(_part("image_url", {"url": "data:image/png,notbase64"})),
    st.just(_part("input_audio", {"data": "AAAA", "format": "wav"})),
    st.just(_part("file", {"file_id": "file-123"})),
    st.just(_part("file", {"file_data": "data:text/plain;base64,aGk="})),
)
text_only = st.one_of(texts, st.lists(texts.map(lambda t: _part("text", t)), max_size=3))


def user_content(supported: bool) -> st.SearchStrategy[Any]:
    parts = supported_parts if supported else st.one_of(supported_parts, unsupported_parts)
    return st.one_of(texts, st.lists(parts, max_size=3))


@st.composite
def conversations(draw: st.DrawFn, *, supported: bool) -> list[dict[str, Any]]:
    """A message list OpenAI accepts: every assistant tool call answered by a tool message."""
    # Tool call ids: OpenAI's own are [A-Za-z0-9_-]; other providers' use '.' and ':'.
    id_alphabet = string.ascii_letters + string.digits + "_-" + ("" if supported else ".:")
    ids = iter(draw(st.lists(st.text(id_alphabet, min_size=1, max_size=10), unique=True,
                             min_size=12, max_size=12)))
    system_msg = st.builds(lambda role, content: {"role": role, "content": content},
                           st.sampled_from(["system", "developer"]), text_only)
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append(draw(system_msg))
    if draw(st.booleans()):  # a chat may open with an assistant greeting
        messages.append({"role": "assistant", "content": draw(words)})
    messages.append({"role": "user", "content": draw(words)})  # something to answer
    for _ in range(draw(st.integers(0, 3))):
        step = draw(st.sampled_from(["user", "assistant", "tools", "system"]))
        if step == "user":
            messages.append({"role": "user", "content": draw(user_content(supported))})
        elif step == "system":
            messages.append(draw(system_msg))
        elif step == "assistant":
            messages.append({"role": "assistant", "content": draw(st.one_of(
                st.none(), text_only,
                st.lists(st.builds(lambda r: _part("refusal", r), texts), max_size=1)))})
        else:
            calls = []
            for _ in range(draw(st.integers(1, 3))):
                args = draw(st.one_of(
                    st.just(""),
                    st.dictionaries(names, st.one_of(st.integers(), texts, st.booleans()),
                                    max_size=3).map(json.dumps)))
                calls.append({"id": next(ids), "type": "function",
                              "function": {"name": draw(names), "arguments": args}})
            message: dict[str, Any] = {"role": "assistant", "tool_calls": calls,
                                       "content": draw(st.one_of(st.none(), texts))}
            if draw(st.booleans()):
                message["refusal"] = None
            messages.append(message)
            for call in draw(st.permutations(calls)):
                messages.append({"role": "tool", "tool_call_id": call["id"],
                                 "content": draw(text_only)})
    if draw(st.booleans()):  # prefill: the answer starts with this
        messages.append({"role": "assistant", "content": draw(texts)})
    return messages


schemas = st.one_of(
    st.just({"type": "object", "properties": {}}),
    st.dictionaries(names, st.sampled_from([{"type": "string"}, {"type": "integer"}]),
                    max_size=3).map(lambda p: {"type": "object", "properties": p,
                                               "required": sorted(p)[:1]}),
)


@st.composite
def chat_requests(draw: st.DrawFn, *, supported: bool) -> dict[str, Any]:
    """A chat-completions request; ``supported`` keeps to what the translator must accept."""
    body: dict[str, Any] = {"model": draw(st.sampled_from([MODEL, "gpt-4o"])),
                            "messages": draw(conversations(supported=supported))}
    tool_names = draw(st.lists(names, unique=True, max_size=3))
    if tool_names or draw(st.booleans()):
        body["tools"] = [{"type": "function", "function": {
            "name": name,
            **({"description": draw(texts)} if draw(st.booleans()) else {}),
            **({"parameters": draw(schemas)} if draw(st.booleans()) else {}),
            **({"strict": draw(st.booleans())} if draw(st.booleans()) else {}),
        }} for name in tool_names]
    choices: list[Any] = [None, "auto", "none"]
    if tool_names:
        choices += ["required", *({"type": "function", "function": {"name": n}}
                                  for n in tool_names)]
        choices.append({"type": "allowed_tools", "allowed_tools": {
            "mode": draw(st.sampled_from(["auto", "required"])),
            "tools": [{"type": "function", "function": {"name": tool_names[0]}}]}})
    if not supported:
        choices += ["required", {"type": "function", "function": {"name": "missing"}},
                    {"type": "custom", "custom": {"name": "x"}}, "sometimes"]
    optional: dict[str, st.SearchStrategy[Any]] = {
        "tool_choice": st.sampled_from(choices),
        "parallel_tool_calls": st.booleans(),
        "stop": st.one_of(texts, st.lists(texts, max_size=4)),
        "max_tokens": st.integers(1, 200_000),
        "max_completion_tokens": st.integers(1, 200_000),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "user": user_ids,
        "safety_identifier": user_ids,
        "seed": st.integers(0, 2**31),
        "store": st.booleans(),
        "n": st.just(1),
        "logprobs": st.just(False),
        "presence_penalty": st.just(0),
        "service_tier": st.sampled_from(["auto", "default"]),
        "response_format": st.one_of(
            st.just({"type": "text"}), st.just({"type": "json_object"}),
            st.builds(lambda s: {"type": "json_schema",
                                 "json_schema": {"name": "answer", "schema": s}}, schemas)),
    }
    if not supported:
        optional |= {
            "reasoning_effort": st.sampled_from(
                ["none", "minimal", "low", "medium", "high", "xhigh", "max", "huge"]),
            "max_tokens": st.integers(-5, 200_000),
            "temperature": st.floats(0, 2),
            "top_p": st.floats(0, 1.5),
            "n": st.integers(1, 3),
            "logprobs": st.booleans(),
            "presence_penalty": st.floats(-2, 2),
            "modalities": st.sampled_from([["text"], ["text", "audio"]]),
            "functions": st.just([{"name": "f"}]),
            "verbosity": st.sampled_from(["low", "medium", "high"]),
            "not_a_parameter": st.just(1),
        }
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=8)):
        body[key] = draw(optional[key])
    # Ignored by OpenAI itself when not streaming; the translator ignores it too.
    return body


CAPABILITIES = [
    None,
    ModelCapabilities(thinking_adaptive=True, thinking_disabled=True,
                      effort_levels=frozenset({"low", "medium", "high"})),
    ModelCapabilities(thinking_enabled=True, max_tokens=64_000),
    ModelCapabilities(structured_outputs=True, image_input=False, pdf_input=False),
    ModelCapabilities(),
]
translators = st.builds(
    lambda json_mode, sampling, caps, cache: OpenAITranslator(
        model_aliases={"gpt-4o": MODEL}, json_mode=json_mode, sampling=sampling,
        capabilities=(lambda model: caps), prompt_cache=cache),
    st.sampled_from(["auto", "tool", "native"]), st.sampled_from(["forward", "drop"]),
    st.sampled_from(CAPABILITIES), st.booleans())


def check_messages_request(body: bytes, source: dict[str, Any]) -> dict[str, Any]:
    """The SDK types and turn rules, plus the API's rules across fields."""
    data = check_anthropic(body)
    assert data["model"] == MODEL
    assert data["max_tokens"] >= 1
    uses = [b["id"] for t in data["messages"] for b in t["content"] if b["type"] == "tool_use"]
    assert len(uses) == len(set(uses)), "tool_use ids must be unique"
    results = [b["tool_use_id"] for t in data["messages"] for b in t["content"]
               if b["type"] == "tool_result"]
    assert set(results) <= set(uses), "every tool_result answers a tool_use"
    tools = [t["name"] for t in data.get("tools", ())]
    assert len(tools) == len(set(tools)), "tool names must be unique"
    choice = data.get("tool_choice")
    if choice is not None:
        assert tools, "tool_choice needs tools"
        if choice["type"] == "tool":
            assert choice["name"] in tools
    thinking = data.get("thinking", {"type": "disabled"})
    if thinking["type"] == "enabled":
        assert 1024 <= thinking["budget_tokens"] < data["max_tokens"]
    if thinking["type"] != "disabled":
        assert choice is None or choice["type"] in ("auto", "none"), "no forced tools"
        assert data.get("temperature", 1) == 1
    for key in ("temperature", "top_p"):
        assert 0 <= data.get(key, 0) <= 1
    assert bool(data.get("stream")) == bool(source.get("stream"))
    return data


@given(translators, chat_requests(supported=False))
def test_any_chat_request_translates_or_is_refused_cleanly(
        translator: OpenAITranslator, body: dict[str, Any]) -> None:
    """Any chat request: a valid Messages request, or a TranslationError naming a param."""
    outcome = translate_or_refuse(translator, dumps(body))
    if isinstance(outcome, TranslationError):
        event(f"refused: {outcome.code}")
        assert str(outcome)
        assert outcome.code
    else:
        event("translated")
        check_messages_request(outcome.body, body)


def translate_or_refuse(translator: OpenAITranslator, body: bytes,
                        ) -> TranslatedRequest | TranslationError:
    try:
        return translator.translate_request(body)
    except TranslationError as exc:
        return exc


@given(chat_requests(supported=True))
def test_supported_chat_requests_always_translate(body: dict[str, Any]) -> None:
    """Within the documented subset nothing is refused, and the result is valid."""
    translator = OpenAITranslator(model_aliases={"gpt-4o": MODEL})
    translated = translator.translate_request(dumps(body))
    data = check_messages_request(translated.body, body)
    user_text = [m["content"] for m in body["messages"] if m["role"] == "user"
                 and isinstance(m["content"], str) and m["content"]]
    sent = [b.get("text") for t in data["messages"] for b in t["content"]]
    for text in user_text:
        assert text in sent, "user text is never dropped"


@given(st.one_of(
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | texts,
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(texts, inner, max_size=3), max_leaves=10),
    st.binary(max_size=40).map(lambda b: {"raw": b.decode("latin-1")}),
))
def test_arbitrary_json_is_refused_cleanly(value: Any) -> None:
    """Any JSON document at all: translated or refused, never another exception."""
    try:
        translated = OpenAITranslator().translate_request(dumps(value))
    except TranslationError:
        return
    check_messages_request(translated.body, value)


# ====================================================================== Anthropic streams

def sse(event: dict[str, Any], ascii_only: bool = False) -> bytes:
    data = json.dumps(event, ensure_ascii=ascii_only)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


@st.composite
def pieces(draw: st.DrawFn, whole: str) -> list[str]:
    """``whole`` cut at arbitrary character positions (empty pieces allowed)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(whole)), max_size=4)))
    bounds = [0, *cuts, len(whole)]
    return [whole[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def anthropic_streams(draw: st.DrawFn) -> dict[str, Any]:
    """A Messages SSE stream and what it says: text, reasoning, tool calls, end."""
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {
        "id": "msg_01" + draw(st.text(string.ascii_letters, min_size=1, max_size=8)),
        "type": "message", "role": "assistant", "model": MODEL, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": draw(st.integers(0, 10**6)), "output_tokens": 1,
                  "cache_read_input_tokens": draw(st.integers(0, 1000)),
                  "cache_creation_input_tokens": 0}}}]
    text, reasoning, tools = "", "", []
    order: list[tuple[str, str]] = []  # (tool name or "", its text) of text and tool blocks
    kinds = draw(st.lists(st.sampled_from(["text", "thinking", "tool_use"]), max_size=4))
    for index, kind in enumerate(kinds):
        if kind == "text":
            block: dict[str, Any] = {"type": "text", "text": ""}
            whole = draw(texts)
            deltas = [{"type": "text_delta", "text": p} for p in draw(pieces(whole))]
            text += whole
            order.append(("", whole))
        elif kind == "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
            whole = draw(texts)
            deltas = [{"type": "thinking_delta", "thinking": p} for p in draw(pieces(whole))]
            deltas.append({"type": "signature_delta", "signature": "c2ln"})
            reasoning += whole
        else:
            call_id = "toolu_" + draw(names)
            name = draw(names)
            block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
            whole = json.dumps(draw(st.dictionaries(names, st.one_of(
                st.integers(), texts, st.lists(st.booleans(), max_size=2)), max_size=3)),
                ensure_ascii=False)
            # The real API opens every tool input with an empty fragment.
            deltas = [{"type": "input_json_delta", "partial_json": p}
                      for p in ["", *draw(pieces(whole))]]
            tools.append((call_id, name, whole))
            order.append((name, whole))
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        events += ({"type": "content_block_delta", "index": index, "delta": d} for d in deltas)
        events.append({"type": "content_block_stop", "index": index})
    stop = draw(st.sampled_from(["end_turn", "max_tokens", "stop_sequence", "tool_use",
                                 "pause_turn", "refusal"]))
    events.append({"type": "message_delta", "delta": {"stop_reason": stop,
                                                      "stop_sequence": None},
                   "usage": {"output_tokens": draw(st.integers(1, 10**5))}})
    events.append({"type": "message_stop"})
    # Pings anywhere between message_start and message_stop.
    for _ in range(draw(st.integers(0, 3))):
        events.insert(draw(st.integers(1, len(events) - 1)), {"type": "ping"})
    error_at = draw(st.one_of(st.none(), st.integers(1, len(events) - 1)))
    error = None
    if error_at is not None:
        error = draw(st.sampled_from(["overloaded_error", "api_error", "rate_limit_error"]))
        events = [*events[:error_at], {"type": "error", "error": {
            "type": error, "message": draw(texts)}}]
    ascii_only = draw(st.booleans())
    stream = b"".join(sse(e, ascii_only) for e in events)
    if draw(st.booleans()):
        stream = stream.replace(b"\n", b"\r\n")
    return {"stream": stream, "events": events, "text": text, "reasoning": reasoning,
            "tools": tools, "order": order, "stop": stop, "error": error}


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary byte positions: mid-UTF-8, between \\r and \\n, anywhere.

    Half the cuts fall right after a line-end or non-ASCII byte, where the bugs live.
    """
    tricky = [i + 1 for i, byte in enumerate(data) if byte in b"\r\n" or byte >= 0x80]
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=6))
    if tricky:
        cuts += draw(st.lists(st.sampled_from(tricky), max_size=10))
    cuts = sorted(set(cuts))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def stream_translator(include_usage: bool, json_tool: str | None = None) -> Any:
    req = TranslatedRequest(body=b"{}", model=MODEL, openai_model="gpt-4o", stream=True,
                            include_usage=include_usage, created=1_790_000_000,
                            json_tool=json_tool)
    return OpenAITranslator().stream_translator(req)


def translate_stream(parts: Iterable[bytes], include_usage: bool,
                     json_tool: str | None = None) -> bytes:
    translator = stream_translator(include_usage, json_tool)
    out = b"".join(translator.feed(part) for part in parts)
    return out + translator.finish()


def data_lines(output: bytes) -> list[str]:
    assert output.endswith(b"\n\n")
    frames = output[:-2].split(b"\n\n")
    assert all(f.startswith(b"data: ") for f in frames), frames
    return [f[6:].decode() for f in frames]


@given(anthropic_streams(), st.booleans(), st.data())
def test_stream_translation_reassembles_the_input(
        sample: dict[str, Any], include_usage: bool, data: st.DataObject) -> None:
    """Valid chunks, [DONE] last (or one error event), text and arguments equal the input.

    In JSON mode (``response_format``) the answer tool's arguments are the content.
    """
    json_tool = data.draw(st.sampled_from([None, *(name for _, name, _ in sample["tools"])]))
    output = translate_stream(data.draw(splits(sample["stream"])), include_usage, json_tool)
    lines = data_lines(output)
    if sample["error"] is not None:
        error = json.loads(lines.pop())["error"]
        assert error["message"] == (sample["events"][-1]["error"]["message"]
                                    or "upstream error")
        assert "[DONE]" not in lines
    else:
        assert lines.pop() == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(line) for line in lines]
    assert {(c.id, c.model, c.created) for c in chunks} <= {
        ("chatcmpl-" + sample["events"][0]["message"]["id"][4:], "gpt-4o", 1_790_000_000)}
    body = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in body)
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content", "")
                        for c in body)
    calls: dict[int, list[str]] = {}
    for c in body:
        for call in c.choices[0].delta.tool_calls or ():
            if call.id is not None:
                assert call.index == len(calls)
                assert call.function is not None
                calls[call.index] = [call.id, call.function.name or "", ""]
            assert call.function is not None
            calls[call.index][2] += call.function.arguments or ""
    expected_text = "".join(piece for name, piece in sample["order"]
                            if not name or name == json_tool)
    expected_tools = [t for t in sample["tools"] if t[1] != json_tool]
    if sample["error"] is None:
        assert text == expected_text
        assert reasoning == sample["reasoning"]
        assert [tuple(v) for _, v in sorted(calls.items())] == expected_tools
        finishes = [c.choices[0].finish_reason for c in body]
        assert finishes[:-1] == [None] * (len(finishes) - 1)
        expected = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
                    "max_tokens": "length", "refusal": "content_filter",
                    "tool_use": "tool_calls" if expected_tools else "stop"}
        assert finishes[-1] == expected[sample["stop"]]
        usage = [c.usage for c in chunks if c.usage is not None]
        assert len(usage) == int(include_usage)
    else:  # what arrived before the error is a prefix of the whole
        assert expected_text.startswith(text)
        assert sample["reasoning"].startswith(reasoning)
        for index, (call_id, name, args) in calls.items():
            assert expected_tools[index][:2] == (call_id, name)
            assert expected_tools[index][2].startswith(args)


@given(anthropic_streams(), st.data())
def test_parsers_ignore_chunk_boundaries(sample: dict[str, Any], data: st.DataObject) -> None:
    """SSEScanner and StreamTranslator: any split gives what the whole stream gives."""
    stream = sample["stream"]
    parts = data.draw(splits(stream))
    whole, split = SSEScanner(), SSEScanner()
    whole.feed(stream)
    for part in parts:
        split.feed(part)
    assert (split.usage, split.error, split.error_data, split.finished, split.events) == (
        whole.usage, whole.error, whole.error_data, whole.finished, whole.events)
    assert translate_stream(parts, True) == translate_stream([stream], True)
    one_byte = [stream[i:i + 1] for i in range(len(stream))]
    assert translate_stream(one_byte, False) == translate_stream([stream], False)


@given(anthropic_streams())
def test_scanner_reads_usage_error_and_end(sample: dict[str, Any]) -> None:
    """The scanner's usage, error and end agree with the events that were sent."""
    scanner = SSEScanner()
    scanner.feed(sample["stream"])
    events = sample["events"]
    assert scanner.events == len(events)
    start = events[0]["message"]["usage"]
    assert scanner.usage.input_tokens == start["input_tokens"]
    if sample["error"] is None:
        assert scanner.finished
        assert scanner.error is None
        delta = next(e for e in events if e["type"] == "message_delta")
        assert scanner.usage.output_tokens == delta["usage"]["output_tokens"]
    else:
        assert not scanner.finished
        assert scanner.error == (sample["error"], events[-1]["error"]["message"])
        assert scanner.error_data is not None
        assert json.loads(scanner.error_data) == events[-1]


# ====================================================================== the accounts file

TOKEN_PREFIXES = ("sk-ant-oat01-", "sk-ant-ort01-", "sk-ant-api03-")
secrets = st.builds(lambda prefix, tail: prefix + tail, st.sampled_from(TOKEN_PREFIXES),
                    st.text(string.ascii_letters + string.digits + "_-", min_size=12,
                            max_size=24))

# Tokens pasted where they do not belong: alone, or with text around them.
pasted = secrets | st.builds(lambda a, s, b: a + s + b, texts, secrets, texts)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                           allow_infinity=False)
    | texts | pasted,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts | pasted, inner,
                                                                 max_size=3),
    max_leaves=12)


@st.composite
def valid_files(draw: st.DrawFn) -> dict[str, Any]:
    accounts: dict[str, Any] = {}
    for name in draw(st.lists(names.filter(lambda n: n[0].isalnum()), unique=True,
                              min_size=1, max_size=3)):
        if draw(st.booleans()):
            entry: dict[str, Any] = {"apiKey": "sk-ant-api03-" + draw(names) * 2}
        else:
            entry = {"accessToken": "sk-ant-oat01-" + draw(names) * 2,
                     "refreshToken": "sk-ant-ort01-" + draw(names) * 2,
                     "expiresAt": draw(st.integers(1, 2 * 10**12))}
        for key, value in (("weight", st.integers(0, 9)), ("priority", st.integers(-3, 3)),
                           ("disabled", st.booleans()), ("email", texts)):
            if draw(st.booleans()):
                entry[key] = draw(value)
        accounts[name] = entry
    doc: dict[str, Any] = {"accounts": accounts}
    if draw(st.booleans()):
        doc["version"] = 1
    return doc


_FIELDS = ("accessToken", "refreshToken", "expiresAt", "apiKey", "weight", "priority",
           "disabled", "version", "accounts")


@st.composite
def mutated_files(draw: st.DrawFn) -> dict[str, Any]:
    """A valid file with a few wrong types, missing fields, extra keys or pasted tokens."""
    doc = draw(valid_files())
    for _ in range(draw(st.integers(1, 3))):
        accounts = doc.get("accounts")
        if isinstance(accounts, dict) and accounts and draw(st.booleans()):
            name = draw(st.sampled_from(sorted(accounts)))
            target = accounts[name]
            if not isinstance(target, dict):
                continue
        else:
            target = doc
        action = draw(st.sampled_from(["wrong", "drop", "extra", "token", "rename"]))
        key = draw(st.sampled_from(_FIELDS))
        if action == "wrong":
            target[key] = draw(json_values)
        elif action == "drop":
            target.pop(key, None)
        elif action == "extra":
            target[draw(texts | pasted)] = draw(json_values)
        elif action == "token":
            target[key] = draw(pasted)
        elif target is not doc and isinstance(accounts, dict):
            accounts[draw(texts | pasted)] = accounts.pop(name)
    return doc


_TOKEN_RE = re.compile(r"sk-ant-[A-Za-z0-9_-]*")


def secret_strings(value: Any) -> Iterable[str]:
    """Every credential-like piece (``sk-ant-…``) of ``value``'s keys and strings, at any depth."""
    if isinstance(value, str):
        yield from (m for m in _TOKEN_RE.findall(value) if len(m) > len("sk-ant-oat01-"))
    elif isinstance(value, list):
        for item in value:
            yield from secret_strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from secret_strings(key)
            yield from secret_strings(item)


def load_accounts(tmp_path: Path, raw: bytes, file_format: FileFormat = FileFormat.ACCOUNTS,
                  ) -> list[Any] | AccountsFileError:
    path = tmp_path / "accounts.json"
    path.write_bytes(raw)
    try:
        return AccountsFile(path, format=file_format).load()
    except AccountsFileError as exc:
        return exc


def check_accounts_outcome(outcome: list[Any] | AccountsFileError, doc: Any,
                           file_format: FileFormat = FileFormat.ACCOUNTS) -> None:
    if isinstance(outcome, AccountsFileError):
        message = str(outcome)
        assert message.startswith(str(outcome.path))
        for secret in secret_strings(doc):
            assert secret not in message, "a credential leaked into the error message"
        return
    assert isinstance(doc, dict)
    if file_format is FileFormat.CLAUDE_CLI:
        entries = {"default": doc["claudeAiOauth"]}
    else:
        entries = doc["accounts"]
    assert [a.name for a in outcome] == list(entries)
    for account in outcome:
        entry = entries[account.name]
        assert account.credential.reveal() == (entry.get("apiKey")
                                               or entry["accessToken"]).strip()
        assert account.kind is (AccountKind.API_KEY if "apiKey" in entry
                                else AccountKind.OAUTH)
        if account.kind is AccountKind.OAUTH:
            assert account.expires_at == entry["expiresAt"] / 1000
        assert account.weight >= 0
        assert "sk-ant-" not in repr(account)


@pytest.fixture(scope="module")
def tmp_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("accounts")


@given(value=st.one_of(json_values, valid_files(), mutated_files()))
# Found while writing these properties: a version field holding a pasted token was
# echoed in the error, as was a name with a token after a space; an expiresAt too
# large for a float raised OverflowError.
@example(value={"accounts": {"a": {"apiKey": "sk-ant-api03-x"}},
                "version": "sk-ant-api03-secretsecret"})
@example(value={"accounts": {" sk-ant-api03-secretsecret": {"apiKey": "sk-ant-api03-x"}}})
@example(value={"accounts": {"a": {"accessToken": "sk-ant-oat01-a", "refreshToken": "r",
                                   "expiresAt": 10**400}}})
def test_accounts_file_accepts_or_refuses_cleanly(value: Any, tmp_dirs: Path) -> None:
    """Any JSON: a list of accounts or an AccountsFileError, never a credential in it."""
    check_accounts_outcome(load_accounts(tmp_dirs, dumps(value)), value)


@given(entry=st.one_of(json_values, valid_files().map(
    lambda doc: next(iter(doc["accounts"].values())))), extra=json_values)
def test_claude_cli_login_accepts_or_refuses_cleanly(entry: Any, extra: Any,
                                                    tmp_dirs: Path) -> None:
    """The Claude CLI's credentials file: the same promise."""
    doc = {"claudeAiOauth": entry, "other": extra}
    outcome = load_accounts(tmp_dirs, dumps(doc), FileFormat.CLAUDE_CLI)
    check_accounts_outcome(outcome, doc, FileFormat.CLAUDE_CLI)


@given(raw=st.binary(max_size=60) | st.text(max_size=60).map(str.encode))
def test_accounts_file_bytes_that_are_not_json(raw: bytes, tmp_dirs: Path) -> None:
    """Bytes that are not JSON (or not UTF-8) are an AccountsFileError too."""
    outcome = load_accounts(tmp_dirs, raw)
    try:
        doc = json.loads(raw)
    except ValueError:
        assert isinstance(outcome, AccountsFileError)
        return
    check_accounts_outcome(outcome, doc)
