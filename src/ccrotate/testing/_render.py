"""Turn a :class:`Reply` into the Messages API's JSON message and its SSE frames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ccrotate.testing._behaviours import Reply
from ccrotate.testing._wire import ENCODER, make_id, sse_frame

_PING = sse_frame("ping", {"type": "ping"})
_STOP = sse_frame("message_stop", {"type": "message_stop"})


@dataclass(frozen=True)
class Rendered:
    message: dict[str, Any]
    frames: list[bytes]


def split(text: str, parts: int) -> list[str]:
    """``text`` cut into at most ``parts`` consecutive non-empty pieces."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    size = -(-len(text) // parts)
    return [text[i:i + size] for i in range(0, len(text), size)]


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return sse_frame("content_block_delta",
                     {"type": "content_block_delta", "index": index, "delta": delta})


def _start(index: int, block: dict[str, Any]) -> bytes:
    return sse_frame("content_block_start",
                     {"type": "content_block_start", "index": index, "content_block": block})


def _stop(index: int) -> bytes:
    return sse_frame("content_block_stop", {"type": "content_block_stop", "index": index})


def _blocks(reply: Reply) -> tuple[list[dict[str, Any]], list[bytes], int]:
    """Final content blocks, their SSE frames and the reply's character count."""
    content: list[dict[str, Any]] = []
    frames: list[bytes] = []
    chars = 0
    if reply.thinking is not None:
        i = len(content)
        frames.append(_start(i, {"type": "thinking", "thinking": "", "signature": ""}))
        for piece in split(reply.thinking, reply.text_deltas):
            frames.append(_delta(i, {"type": "thinking_delta", "thinking": piece}))
        frames.append(_delta(i, {"type": "signature_delta", "signature": reply.thinking_signature}))
        frames.append(_stop(i))
        content.append({"type": "thinking", "thinking": reply.thinking,
                        "signature": reply.thinking_signature})
        chars += len(reply.thinking)
    if reply.text:
        i = len(content)
        frames.append(_start(i, {"type": "text", "text": ""}))
        for piece in split(reply.text, reply.text_deltas):
            frames.append(_delta(i, {"type": "text_delta", "text": piece}))
        frames.append(_stop(i))
        content.append({"type": "text", "text": reply.text})
        chars += len(reply.text)
    for tool in reply.tools:
        i = len(content)
        tool_id = tool.id or make_id("toolu")
        raw = ENCODER.encode(dict(tool.input)).decode()
        frames.append(_start(i, {"type": "tool_use", "id": tool_id, "name": tool.name,
                                 "input": {}}))
        # The real API opens every tool input with an empty fragment.
        for piece in ["", *split(raw, tool.json_deltas)]:
            frames.append(_delta(i, {"type": "input_json_delta", "partial_json": piece}))
        frames.append(_stop(i))
        content.append({"type": "tool_use", "id": tool_id, "name": tool.name,
                        "input": dict(tool.input)})
        chars += len(raw) + len(tool.name)
    return content, frames, chars


def render(reply: Reply, *, model: str, input_tokens: int) -> Rendered:
    content, block_frames, chars = _blocks(reply)
    inp = reply.input_tokens if reply.input_tokens is not None else input_tokens
    out = reply.output_tokens if reply.output_tokens is not None else max(1, chars // 4)
    stop_reason = reply.stop_reason or ("tool_use" if reply.tools else "end_turn")
    model = reply.model or model
    cache_write, cache_read = reply.cache_creation_input_tokens, reply.cache_read_input_tokens
    usage: dict[str, Any] = {
        "input_tokens": inp,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": cache_write,
                           "ephemeral_1h_input_tokens": 0},
        "output_tokens": out,
        "service_tier": "standard",
    }
    message: dict[str, Any] = {
        "id": make_id("msg"), "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": reply.stop_sequence,
        "usage": usage,
    }
    # The real message_start reports a token or so of output; message_delta has the total.
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": min(out, 1)}}
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": reply.stop_sequence},
        "usage": {"input_tokens": inp, "cache_creation_input_tokens": cache_write,
                  "cache_read_input_tokens": cache_read, "output_tokens": out},
    }
    frames = [
        sse_frame("message_start", {"type": "message_start", "message": start}),
        _PING,
        *block_frames,
        sse_frame("message_delta", delta),
        _STOP,
    ]
    return Rendered(message, frames)
