"""What the fake answers to ``POST /v1/messages``: scripted replies and errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from ccrotate._wire import STATUS_OF_ERROR
from ccrotate.testing._sync import Gate

# The real API's status for each error type; the proxy maps error events the same way.
STATUS_BY_ERROR_TYPE: dict[str, int] = dict(STATUS_OF_ERROR)


@dataclass(frozen=True)
class ToolUse:
    """A ``tool_use`` block; its input is streamed as ``input_json_delta`` fragments."""

    name: str
    input: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None
    json_deltas: int = 3


@dataclass(frozen=True, kw_only=True)
class Reply:
    """A successful answer (JSON or SSE, as the request asks).

    Blocks come in the real order: thinking (if ``thinking``), text (if ``text``), then
    each tool use. ``stop_reason`` defaults to ``tool_use`` when there are tool uses, else
    ``end_turn``. ``input_tokens``/``output_tokens`` left ``None`` are estimated from the
    request and the reply text.

    Timing: ``delay`` seconds pass before the response starts, ``event_gap`` seconds
    between SSE events. ``hold`` stops the reply at a :class:`Gate` until released:
    before the response starts when ``hold_after`` is ``None``, else after that many
    SSE events (non-streaming replies always hold before the response).
    """

    text: str = "Hello from the fake Anthropic upstream."
    text_deltas: int = 3
    thinking: str | None = None
    thinking_signature: str = "ErUBCkYIBRgCIkBmYWtlLXNpZ25hdHVyZS1mb3ItdGVzdHM="
    tool_use: ToolUse | Sequence[ToolUse] | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    delay: float = 0.0
    event_gap: float = 0.0
    hold: Gate | None = None
    hold_after: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def tools(self) -> tuple[ToolUse, ...]:
        if self.tool_use is None:
            return ()
        if isinstance(self.tool_use, ToolUse):
            return (self.tool_use,)
        return tuple(self.tool_use)


@dataclass(frozen=True, kw_only=True)
class StreamError(Reply):
    """A 200 stream that carries ``event: error`` after ``after`` events (0: first event).

    The stream ends right after the error event. A non-streaming request gets the same
    error as a plain HTTP error (e.g. 529 for ``overloaded_error``).
    """

    after: int = 1
    error_type: str = "overloaded_error"
    message: str = "Overloaded"


@dataclass(frozen=True, kw_only=True)
class CutStream(Reply):
    """The connection drops after ``after`` SSE events: no ``message_stop``, no clean end.

    A non-streaming request gets its headers and half of its body, then the drop.
    """

    after: int = 3


@dataclass(frozen=True, kw_only=True)
class ApiError:
    """An HTTP error answer with Anthropic's error body; any status and error type."""

    status: int = 500
    error_type: str = "api_error"
    message: str = "Internal server error"
    retry_after: float | None = None
    details: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body_extra: Mapping[str, Any] = field(default_factory=dict)
    """Extra top-level fields of the error body (what a proxy must not relay)."""
    error_extra: Mapping[str, Any] = field(default_factory=dict)
    """Extra fields inside the body's ``error`` object."""


@dataclass(frozen=True, kw_only=True)
class RateLimited(ApiError):
    """429 ``rate_limit_error``.

    OAuth credentials get unified headers with status ``rejected`` for ``claim``; API
    keys get ``requests-remaining: 0``. Either way the limit resets ``reset_after``
    seconds from now (default: ``retry_after`` when set, else an hour). ``retry-after``
    is sent only when ``retry_after`` is set (subscription 429s often have none).
    """

    status: int = 429
    error_type: str = "rate_limit_error"
    message: str = "This request would exceed your account's rate limit. Please try again later."
    reset_after: float | None = None
    claim: str = "five_hour"

    @property
    def resets_in(self) -> float:
        """Seconds until the limit resets, as the headers will say."""
        if self.reset_after is not None:
            return self.reset_after
        return self.retry_after if self.retry_after is not None else 3600.0


@dataclass(frozen=True, kw_only=True)
class SpendCapReached(ApiError):
    """429 for a reached spend cap: ``error.details.error_code`` set, no ``retry-after``."""

    status: int = 429
    error_type: str = "rate_limit_error"
    message: str = "You have reached your specified API usage limits."
    details: Mapping[str, Any] | None = field(
        default_factory=lambda: {"error_code": "enforced_spend_limit_reached"})


@dataclass(frozen=True, kw_only=True)
class Overloaded(ApiError):
    """529 ``overloaded_error``: Anthropic as a whole is busy."""

    status: int = 529
    error_type: str = "overloaded_error"
    message: str = "Overloaded"


@dataclass(frozen=True, kw_only=True)
class Unauthorized(ApiError):
    """401 ``authentication_error``."""

    status: int = 401
    error_type: str = "authentication_error"
    message: str = "invalid x-api-key"


@dataclass(frozen=True, kw_only=True)
class Forbidden(ApiError):
    """403 ``permission_error``."""

    status: int = 403
    error_type: str = "permission_error"
    message: str = ("This credential is only authorized for use with Claude Code and cannot be "
                    "used for other API requests.")


@dataclass(frozen=True, kw_only=True)
class NotEntitled(ApiError):
    """403 ``permission_error`` for one model or feature the credential may not use.

    ``status=429`` gives the variant some entitlement refusals arrive as.
    """

    status: int = 403
    error_type: str = "permission_error"
    model: str = "claude-opus-4-8"
    message: str = ""

    def __post_init__(self) -> None:
        if not self.message:
            object.__setattr__(self, "message",
                               f"Your organization does not have access to model {self.model}.")


Behaviour: TypeAlias = Reply | ApiError
