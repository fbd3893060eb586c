"""A Messages API request as the agent's prompt.

The agent keeps its own conversation, and Claude Code's input takes user turns only:
earlier turns of the client's conversation become one text block ("the conversation
so far") before the last user turn, whose blocks (text, images, documents) go to the
agent as they are. The client's system prompt becomes the agent's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec

from ccrotate._wire import valid_model_id

__all__ = ["AgentRequest", "PromptError", "parse_request"]

# Blocks Claude Code takes in a user turn as they are; anything else is shown as text.
_PASSED = frozenset({"text", "image", "document"})


class PromptError(ValueError):
    """The request cannot become a prompt (answered 400 ``invalid_request_error``)."""


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """What one SDK call asks of the agent."""

    model: str
    system: str | None
    content: list[dict[str, Any]]
    """The user turn sent to the agent: content blocks."""
    stream: bool
    last_turn: list[dict[str, Any]]
    """The last user turn alone (what a warm session is sent: it has the rest)."""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return json.dumps(content)
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            parts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            parts.append(f"[tool call {block.get('name')}: {json.dumps(block.get('input'))}]")
        elif kind == "tool_result":
            parts.append(f"[tool result: {_text_of(block.get('content', ''))}]")
        else:
            parts.append(f"[{kind} block]")
    return "\n".join(parts)


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise PromptError("messages: the last message must have content")
    blocks: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            raise PromptError("messages: content blocks must be objects")
        if block.get("type") in _PASSED:
            blocks.append({k: v for k, v in block.items() if k != "cache_control"})
        else:
            blocks.append({"type": "text", "text": _text_of([block])})
    return blocks


def _system(system: Any) -> str | None:
    if system is None:
        return None
    if isinstance(system, str):
        return system or None
    if isinstance(system, list):
        return "\n\n".join(str(b.get("text", "")) for b in system
                           if isinstance(b, dict) and b.get("type") == "text") or None
    raise PromptError("system: Input should be a string or a list of text blocks")


def _transcript(earlier: list[Any]) -> str:
    lines = ["The conversation so far (you are the assistant):"]
    for turn in earlier:
        role = "User" if turn.get("role") == "user" else "Assistant"
        lines.append(f"\n{role}: {_text_of(turn.get('content', ''))}")
    lines.append("\nThe user's new message follows.")
    return "\n".join(lines)


def parse_request(body: bytes) -> AgentRequest:
    """The agent's request for a ``/v1/messages`` body; raises :class:`PromptError`."""
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise PromptError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PromptError("request body must be a JSON object")
    model, messages, stream = doc.get("model"), doc.get("messages"), doc.get("stream", False)
    if not isinstance(model, str) or not valid_model_id(model):
        raise PromptError("model: Field required (a model id)")
    if not isinstance(messages, list) or not messages:
        raise PromptError("messages: at least one message is required")
    if not all(isinstance(m, dict) for m in messages) or messages[-1].get("role") != "user":
        raise PromptError("messages: the last message must be a user message")
    if not isinstance(stream, bool):
        raise PromptError("stream: Input should be a valid boolean")
    last = _blocks(messages[-1].get("content"))
    content = last
    if len(messages) > 1:
        content = [{"type": "text", "text": _transcript(messages[:-1])}, *last]
    return AgentRequest(model, _system(doc.get("system")), content, stream, last)
