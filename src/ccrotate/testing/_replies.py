"""Turn a scripted behaviour into a response :class:`Plan` for one ``/v1/messages`` request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ccrotate.testing import _wire as wire
from ccrotate.testing._asgi import Plan
from ccrotate.testing._behaviours import (
    STATUS_BY_ERROR_TYPE,
    ApiError,
    Behaviour,
    CutStream,
    RateLimited,
    StreamError,
)
from ccrotate.testing._records import RecordedRequest
from ccrotate.testing._render import render


class Upstream(Protocol):
    """What the planner needs of :class:`~ccrotate.testing.FakeUpstream` (no import cycle)."""

    def _limit_headers(self, rec: RecordedRequest, *, rate_limited: RateLimited | None = None,
                       tokens: int = 0) -> list[tuple[bytes, bytes]]: ...

    def _error_plan(self, rec: RecordedRequest, status: int, error_type: str, message: str, *,
                    details: Any = None, headers: Sequence[tuple[bytes, bytes]] = (),
                    delay: float = 0.0, limit_headers: bool = True,
                    body_extra: Mapping[str, Any] | None = None,
                    error_extra: Mapping[str, Any] | None = None) -> Plan: ...

_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache")]


def _extra(headers: Any) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def _seconds(value: float) -> bytes:
    return (str(int(value)) if float(value).is_integer() else f"{value:g}").encode()


class ReplyPlanner:
    def __init__(self, fake: Upstream) -> None:
        self._fake = fake

    def plan(self, rec: RecordedRequest, body: dict[str, Any], behaviour: Behaviour) -> Plan:
        if isinstance(behaviour, ApiError):
            return self._error(rec, behaviour)
        stream = body.get("stream") is True
        if isinstance(behaviour, StreamError) and not stream:
            status = STATUS_BY_ERROR_TYPE.get(behaviour.error_type, 500)
            return self._fake._error_plan(rec, status, behaviour.error_type, behaviour.message,
                                          delay=behaviour.delay)
        input_tokens = behaviour.input_tokens
        if input_tokens is None:
            input_tokens = wire.estimate_tokens(body)
        rendered = render(behaviour, model=body["model"], input_tokens=input_tokens)
        usage = rendered.message["usage"]
        request_id = wire.make_id("req")
        headers = [(b"request-id", request_id.encode())]
        headers += self._fake._limit_headers(
            rec, tokens=usage["input_tokens"] + usage["output_tokens"])
        headers += _extra(behaviour.headers)
        timing: dict[str, Any] = {"delay": behaviour.delay, "hold": behaviour.hold}
        if stream:
            frames = rendered.frames
            cut_after = None
            if isinstance(behaviour, StreamError):
                error = wire.error_body(behaviour.error_type, behaviour.message, request_id)
                frames = [*frames[:behaviour.after], wire.sse_frame("error", error)]
            elif isinstance(behaviour, CutStream):
                cut_after = behaviour.after
            return Plan(200, _SSE_HEADERS + headers, frames, gap=behaviour.event_gap,
                        hold_after=behaviour.hold_after, cut_after=cut_after, **timing)
        payload = wire.encode(rendered.message)
        headers.insert(0, (b"content-type", b"application/json"))
        if isinstance(behaviour, CutStream):
            half = len(payload) // 2
            headers.append((b"content-length", str(len(payload)).encode()))
            return Plan(200, headers, [payload[:half], payload[half:]], cut_after=1, **timing)
        return Plan(200, headers, [payload], **timing)

    def _error(self, rec: RecordedRequest, error: ApiError) -> Plan:
        headers: list[tuple[bytes, bytes]] = []
        if error.retry_after is not None:
            headers.append((b"retry-after", _seconds(error.retry_after)))
        rate_limited = error if isinstance(error, RateLimited) else None
        headers += self._fake._limit_headers(rec, rate_limited=rate_limited)
        headers += _extra(error.headers)
        return self._fake._error_plan(rec, error.status, error.error_type, error.message,
                                      details=error.details, headers=headers,
                                      delay=error.delay, limit_headers=False,
                                      body_extra=error.body_extra,
                                      error_extra=error.error_extra)
