"""The agent's run as a Messages API answer: one JSON message, or an SSE stream.

Which of the agent's steps the client sees is the ``tool_steps`` setting:

* ``ignore``: only text. A JSON answer holds the final turn's text; a stream forwards
  text as the agent writes it, the narration of earlier turns included.
* ``formatted``: tool calls and results as text (``[Bash] {"command": …}``) between
  the agent's own text, and the whole run's text in a JSON answer.
* ``forward``: tool calls as ``tool_use`` blocks and results as ``tool_result``
  blocks, in order with the text. They are what the agent already ran: a client must
  not run them again (``stop_reason`` stays ``end_turn``).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from ccrotate._sdk.config import ToolSteps
from ccrotate._sdk.events import (
    AgentEvent,
    BlockStart,
    BlockStop,
    Result,
    TextDelta,
    ToolCall,
    ToolOutput,
    TurnText,
)

__all__ = ["MessageBuilder", "SSEWriter", "is_output", "sdk_info", "usage_of"]

RESULT_LIMIT = 4000
"""Characters of a tool result shown as text (``formatted``); the rest is cut."""


def is_output(event: AgentEvent) -> bool:
    """Whether ``event`` is the agent producing something (no failover after it)."""
    return isinstance(event, TextDelta | TurnText | ToolCall)


def _message_id() -> str:
    return "msg_sdk_" + secrets.token_hex(12)


def usage_of(result: Result | None) -> dict[str, int]:
    """The Messages API ``usage`` of a run (zeros before its result)."""
    usage = result.usage if result is not None else {}
    return {key: int(usage.get(key) or 0) for key in (
        "input_tokens", "output_tokens", "cache_creation_input_tokens",
        "cache_read_input_tokens")}


def sdk_info(result: Result | None) -> dict[str, Any]:
    """What SDK mode adds to an answer (``"sdk"``): session, cost, turns, duration."""
    if result is None:
        return {}
    return {"session_id": result.session_id, "cost_usd": result.cost_usd,
            "num_turns": result.num_turns, "duration_ms": result.duration_ms}


def _call_text(call: ToolCall) -> str:
    return f"\n[{call.name}] {json.dumps(call.input, ensure_ascii=False)}\n"


def _output_text(output: ToolOutput) -> str:
    content = output.content
    if len(content) > RESULT_LIMIT:
        content = content[:RESULT_LIMIT] + f"… ({len(output.content) - RESULT_LIMIT} more)"
    return f"[{'error' if output.is_error else 'result'}] {content}\n\n"


def _tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}


def _tool_result(output: ToolOutput) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": output.tool_use_id,
            "content": output.content, "is_error": output.is_error}


class MessageBuilder:
    """Collects a run into one Messages API message (a JSON answer)."""

    __slots__ = ("_blocks", "_last_turn", "_turn", "model", "steps")

    def __init__(self, model: str, steps: ToolSteps) -> None:
        self.model = model
        self.steps = steps
        self._blocks: list[dict[str, Any]] = []
        self._turn: str | None = None
        self._last_turn: list[dict[str, Any]] = []

    def feed(self, event: AgentEvent) -> None:
        """Take one event of the run."""
        if isinstance(event, TurnText):
            if event.turn != self._turn:
                self._turn, self._last_turn = event.turn, []
            self._last_turn.append({"type": "text", "text": event.text})
            self._add_text(event.text)
        elif isinstance(event, ToolCall):
            self._turn, self._last_turn = None, []
            if self.steps == "forward":
                self._blocks.append(_tool_use(event))
            elif self.steps == "formatted":
                self._add_text(_call_text(event))
        elif isinstance(event, ToolOutput):
            if self.steps == "forward":
                self._blocks.append(_tool_result(event))
            elif self.steps == "formatted":
                self._add_text(_output_text(event))

    def _add_text(self, text: str) -> None:
        if self.steps == "ignore":
            return
        last = self._blocks[-1] if self._blocks else None
        if self.steps == "formatted" and last is not None and last["type"] == "text":
            last["text"] += text  # one text answer, steps woven in
        else:
            self._blocks.append({"type": "text", "text": text})

    def body(self, result: Result | None) -> bytes:
        """The whole answer."""
        content = self._last_turn if self.steps == "ignore" else self._blocks
        message = {"id": _message_id(), "type": "message", "role": "assistant",
                   "model": self.model, "content": content,
                   "stop_reason": (result.stop_reason if result else None) or "end_turn",
                   "stop_sequence": None, "usage": usage_of(result), "sdk": sdk_info(result)}
        return json.dumps(message, ensure_ascii=False).encode()


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class SSEWriter:
    """Renders a run as a Messages API stream, event by event."""

    __slots__ = ("_index", "_open", "model", "steps")

    def __init__(self, model: str, steps: ToolSteps) -> None:
        self.model = model
        self.steps = steps
        self._index = -1
        self._open = False

    def start(self) -> bytes:
        """``message_start``."""
        message: dict[str, Any] = {
                   "id": _message_id(), "type": "message", "role": "assistant",
                   "model": self.model, "content": [], "stop_reason": None,
                   "stop_sequence": None, "usage": usage_of(None)}
        return _event("message_start", {"type": "message_start", "message": message})

    def feed(self, event: AgentEvent) -> bytes:
        """The events for one agent event (often none)."""
        if isinstance(event, BlockStart):
            return self._close() + self._open_text()
        if isinstance(event, TextDelta):
            head = b"" if self._open else self._open_text()
            return head + _event("content_block_delta", {
                "type": "content_block_delta", "index": self._index,
                "delta": {"type": "text_delta", "text": event.text}})
        if isinstance(event, BlockStop):
            return self._close()
        if isinstance(event, ToolCall | ToolOutput) and self.steps != "ignore":
            return self._close() + self._step(event)
        return b""

    def _open_text(self) -> bytes:
        self._index += 1
        self._open = True
        return _event("content_block_start", {"type": "content_block_start",
                                              "index": self._index,
                                              "content_block": {"type": "text", "text": ""}})

    def _close(self) -> bytes:
        if not self._open:
            return b""
        self._open = False
        return _event("content_block_stop", {"type": "content_block_stop",
                                             "index": self._index})

    def _step(self, event: ToolCall | ToolOutput) -> bytes:
        if self.steps == "formatted":
            text = _call_text(event) if isinstance(event, ToolCall) else _output_text(event)
            return self._open_text() + self.feed(TextDelta(text)) + self._close()
        self._index += 1
        if isinstance(event, ToolOutput):
            block = _tool_result(event)
            return _event("content_block_start", {
                "type": "content_block_start", "index": self._index,
                "content_block": block}) + _event("content_block_stop", {
                    "type": "content_block_stop", "index": self._index})
        start = {**_tool_use(event), "input": {}}
        return b"".join((
            _event("content_block_start", {"type": "content_block_start",
                                           "index": self._index, "content_block": start}),
            _event("content_block_delta", {
                "type": "content_block_delta", "index": self._index,
                "delta": {"type": "input_json_delta", "partial_json": json.dumps(event.input)}}),
            _event("content_block_stop", {"type": "content_block_stop",
                                          "index": self._index})))

    def finish(self, result: Result | None) -> bytes:
        """``message_delta`` (stop reason, usage, the ``sdk`` facts) and ``message_stop``."""
        usage = usage_of(result)
        delta = {"type": "message_delta",
                 "delta": {"stop_reason": (result.stop_reason if result else None)
                           or "end_turn", "stop_sequence": None},
                 "usage": usage, "sdk": sdk_info(result)}
        return self._close() + _event("message_delta", delta) + _event(
            "message_stop", {"type": "message_stop"})

    def error(self, type_: str, message: str) -> bytes:
        """An ``error`` event (the stream ends after it)."""
        return self._close() + _event("error", {"type": "error", "error": {
            "type": type_, "message": message}})
