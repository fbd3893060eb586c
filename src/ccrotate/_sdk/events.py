"""What the agent process reports, reduced to what SDK mode shows its clients.

:mod:`ccrotate._sdk.agent` turns the Agent SDK's messages into these plain values, so
rendering (and its tests) never touch ``claude_agent_sdk``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AgentError", "AgentEvent", "BlockStart", "BlockStop", "Failure", "Result", "TextDelta",
           "ToolCall", "ToolOutput", "TurnText"]


@dataclass(frozen=True, slots=True)
class BlockStart:
    """The agent's model started a text block (streamed runs only)."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of text, as the agent's model produced it (streamed runs only)."""

    text: str


@dataclass(frozen=True, slots=True)
class BlockStop:
    """The agent's model finished a text block (streamed runs only)."""


@dataclass(frozen=True, slots=True)
class TurnText:
    """A complete text block of one agent turn (``turn``: the model message id)."""

    turn: str
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The agent called a tool."""

    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """A tool's result, as the agent got it."""

    tool_use_id: str
    content: str
    is_error: bool


@dataclass(frozen=True, slots=True)
class Failure:
    """A model call of the agent failed (``kind``: the SDK's ``AssistantMessage.error``)."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Result:
    """The agent's run is over: its usage, cost and session."""

    session_id: str
    is_error: bool
    num_turns: int
    duration_ms: int
    stop_reason: str | None = None
    cost_usd: float | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    api_error_status: int | None = None
    text: str | None = None
    subtype: str = "success"


class AgentError(Exception):
    """The agent process failed outside the Messages API (it would not start, it died)."""


AgentEvent = BlockStart | TextDelta | BlockStop | TurnText | ToolCall | ToolOutput | Failure \
    | Result
