"""Micro-benchmark of the translator (not a test): ``bench_translator(n)``.

Run ``python -m ccrotate._proxy.dialects.openai.bench [n]`` for a quick look.
"""

from __future__ import annotations

import sys
import time

import msgspec

from ccrotate._proxy.dialects.openai.translator import OpenAITranslator

__all__ = ["bench_translator"]

_SCHEMA_WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city"],
}
_SCHEMA_TIME = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "description": "IANA zone name"}},
    "required": ["timezone"],
}

REQUEST = msgspec.json.encode({
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are a concise travel assistant."},
        {"role": "user", "content": "What's the weather in Paris and the time in Tokyo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b2", "type": "function",
             "function": {"name": "get_time", "arguments": '{"timezone":"Asia/Tokyo"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_a1", "content": '{"temp_c": 18, "sky": "cloudy"}'},
        {"role": "tool", "tool_call_id": "call_b2", "content": "2026-11-03T21:14:00+09:00"},
        {"role": "assistant", "content": "Paris: 18 °C and cloudy. Tokyo: 21:14."},
        {"role": "user", "content": "Thanks! Should I pack an umbrella for Paris?"},
    ],
    "tools": [
        {"type": "function", "function": {"name": "get_weather",
                                          "description": "Current weather for a city",
                                          "parameters": _SCHEMA_WEATHER}},
        {"type": "function", "function": {"name": "get_time",
                                          "description": "Current time in a timezone",
                                          "parameters": _SCHEMA_TIME}},
    ],
    "temperature": 0.3,
    "max_completion_tokens": 1024,
    "stream": True,
    "stream_options": {"include_usage": True},
})

RESPONSE = msgspec.json.encode({
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
    "model": "claude-sonnet-4-6",
    "content": [
        {"type": "text", "text": "Probably yes: showers are likely this evening. "
                                 "Let me double-check the forecast."},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9",
         "name": "get_weather", "input": {"city": "Paris", "unit": "celsius"}},
    ],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 512, "output_tokens": 64, "cache_read_input_tokens": 2048,
              "cache_creation_input_tokens": 0},
})


def _sse(event: dict[str, object]) -> bytes:
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + msgspec.json.encode(
        event) + b"\n\n"


def text_stream(deltas: int) -> list[bytes]:
    """An Anthropic SSE transcript with ``deltas`` text deltas, one event per item."""
    events = [_sse({"type": "message_start", "message": {
        "id": "msg_01Bench", "type": "message", "role": "assistant", "content": [],
        "model": "claude-sonnet-4-6", "stop_reason": None,
        "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        _sse({"type": "content_block_start", "index": 0,
              "content_block": {"type": "text", "text": ""}})]
    events += [_sse({"type": "content_block_delta", "index": 0,
                     "delta": {"type": "text_delta", "text": f"word{i} and more, "}})
               for i in range(deltas)]
    events += [_sse({"type": "content_block_stop", "index": 0}),
               _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                     "usage": {"output_tokens": deltas * 4}}),
               _sse({"type": "message_stop"})]
    return events


def bench_translator(n: int = 10_000) -> dict[str, float]:
    """Microseconds per operation, best of three runs of ``n`` each.

    ``request_us``: translate a 3-turn request with 2 tools. ``response_us``: translate a
    non-streamed response (text + tool call). ``stream_chunk_us``: translate one streamed
    text-delta event, fed as its own chunk.
    """
    translator = OpenAITranslator()
    req = translator.translate_request(REQUEST)
    events = text_stream(100)

    def best(run: object, count: int) -> float:
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            run()  # type: ignore[operator]
            timings.append(time.perf_counter() - start)
        return min(timings) / count * 1e6

    def requests() -> None:
        for _ in range(n):
            translator.translate_request(REQUEST)

    def responses() -> None:
        for _ in range(n):
            translator.translate_response(RESPONSE, req)

    rounds = max(1, n // len(events))

    def streams() -> None:
        for _ in range(rounds):
            stream = translator.stream_translator(req)
            for chunk in events:
                stream.feed(chunk)

    return {
        "request_us": best(requests, n),
        "response_us": best(responses, n),
        "stream_chunk_us": best(streams, rounds * len(events)),
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    for name, value in bench_translator(count).items():
        print(f"{name:>16}: {value:7.2f} µs")
