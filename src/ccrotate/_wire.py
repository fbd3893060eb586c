"""The Messages API wire format as the proxy needs it: error bodies, request peeking,
the Claude Code identity rule, and a light SSE scanner for usage and errors.

Request bodies are decoded only as far as needed (``model``, ``stream``,
``system``); everything else stays raw bytes, so a 115 KB Claude Code request
costs one validating scan, not a full decode and re-encode.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

__all__ = [
    "IDENTITY_LINES",
    "MODEL_ID_MAX",
    "MODEL_ID_RULE",
    "MODEL_ID_SHAPE",
    "OAUTH_BETA",
    "SPEND_CAP",
    "STATUS_OF_ERROR",
    "USER_ID_MAX",
    "RequestPeek",
    "SSEScanner",
    "Usage",
    "error_body",
    "error_event",
    "inject_identity",
    "merge_beta",
    "needs_identity",
    "parse_error",
    "relayable_error",
    "valid_model_id",
    "valid_user_id",
    "without_beta",
]

OAUTH_BETA = "oauth-2025-04-20"
"""The beta every OAuth (subscription) request upstream must carry."""

CLAUDE_CODE_IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."
IDENTITY_LINES = (
    CLAUDE_CODE_IDENTITY,
    "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
)
_BILLING_PREFIX = "x-anthropic-billing-header:"
SPEND_CAP = "enforced_spend_limit_reached"
"""``error.details.error_code`` of a 429 that retrying will not cure."""

STATUS_OF_ERROR = {
    "invalid_request_error": 400,
    "billing_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class _ErrorDetail(msgspec.Struct):
    type: str
    message: str


class _ErrorBody(msgspec.Struct, omit_defaults=True):
    # ``type`` has no default so that omit_defaults drops only an absent request_id.
    type: str
    error: _ErrorDetail
    request_id: str | None = None


class _ErrorDetails(msgspec.Struct, omit_defaults=True):
    error_code: str | None = None


class _RelayedDetail(msgspec.Struct, omit_defaults=True):
    type: str
    message: str
    details: _ErrorDetails | None = None


class _RelayedBody(msgspec.Struct, omit_defaults=True):
    type: str
    error: _RelayedDetail
    request_id: str | None = None


class _ErrorIn(msgspec.Struct):
    type: str = "api_error"
    message: str = ""
    details: dict[str, Any] | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorIn | None = None
    request_id: Any = None


_encoder = msgspec.json.Encoder()
_error_decoder = msgspec.json.Decoder(_ErrorEnvelope)


def error_body(type_: str, message: str, request_id: str | None = None) -> bytes:
    """An Anthropic error body: ``{"type":"error","error":{"type","message"},"request_id"}``."""
    return _encoder.encode(_ErrorBody("error", _ErrorDetail(type_, message), request_id=request_id))


def error_event(type_: str, message: str) -> bytes:
    """An SSE ``event: error`` frame with the same body."""
    return b"event: error\ndata: " + error_body(type_, message) + b"\n\n"


def parse_error(body: bytes) -> tuple[str, str, str | None]:
    """(error type, message, details.error_code) of an Anthropic error body; lenient."""
    try:
        env = _error_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return "api_error", "", None
    if env.error is None:
        return "api_error", "", None
    code = env.error.details.get("error_code") if env.error.details else None
    return env.error.type, env.error.message, code if isinstance(code, str) else None


_ERROR_TYPE = re.compile(r"[a-z_]{1,64}")
_TYPE_OF_STATUS = {status: type_ for type_, status in STATUS_OF_ERROR.items()
                   if type_ != "billing_error"}


def relayable_error(status: int, body: bytes) -> bytes:
    """An upstream error body cut down to what a client may see.

    Only ``error.type``, ``error.message``, ``error.details.error_code`` (the spend
    cap lives there) and ``request_id`` survive, re-serialised; anything else the
    upstream (or a CDN in front of it) put in the body stays behind. A body that is
    not an Anthropic error gets a type from ``status`` and an empty message.
    """
    try:
        env = _error_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        env = _ErrorEnvelope()
    fallback = _TYPE_OF_STATUS.get(status, "api_error")
    if env.error is None:
        detail = _RelayedDetail(fallback, f"upstream answered {status}")
    else:
        code = env.error.details.get("error_code") if env.error.details else None
        detail = _RelayedDetail(
            env.error.type if _ERROR_TYPE.fullmatch(env.error.type) else fallback,
            env.error.message,
            _ErrorDetails(code) if isinstance(code, str) else None)
    rid = env.request_id if isinstance(env.request_id, str) else None
    return _encoder.encode(_RelayedBody("error", detail, request_id=rid))


# -- client-derived strings --------------------------------------------------------------------
# Everything a client names that ccrotate keeps (the access log, metric labels, affinity
# keys) is bounded here, at the one place the body is peeked. A model id is 1-128 of
# letters, digits and ``. _ : @ / [ ] -`` starting with a letter or digit: that admits
# Anthropic ids (claude-sonnet-4-6, claude-3-5-sonnet-20241022), Bedrock ids and ARNs
# (anthropic.claude-3-5-sonnet-20241022-v2:0, arn:aws:bedrock:...:inference-profile/us.x),
# Vertex ids (claude-3-5-sonnet-v2@20241022), Claude Code's ``[1m]`` suffix and OpenAI
# names (gpt-4o, ft:gpt-4o-mini:org::id).
MODEL_ID_MAX = 128
MODEL_ID_RULE = r"^[A-Za-z0-9][A-Za-z0-9._:@/\[\]-]*$"
MODEL_ID_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/\[\]-]{0,127}")  # 128 in all
"""``MODEL_ID_RULE`` with its length bound, for ``fullmatch``."""
# metadata.user_id is opaque (Claude Code puts a JSON string of ~200 characters there):
# any text without control characters, up to 512.
USER_ID_MAX = 512
_USER_ID_RULE = r"^[^\x00-\x1f\x7f]*$"
_USER_ID_RE = re.compile(_USER_ID_RULE)

ModelId = Annotated[str, msgspec.Meta(min_length=1, max_length=MODEL_ID_MAX,
                                      pattern=MODEL_ID_RULE)]
UserId = Annotated[str, msgspec.Meta(max_length=USER_ID_MAX, pattern=_USER_ID_RULE)]


def valid_model_id(value: str) -> bool:
    """Whether ``value`` is an acceptable model id (see ``MODEL_ID_RULE``)."""
    return len(value) <= MODEL_ID_MAX and MODEL_ID_SHAPE.fullmatch(value) is not None


def valid_user_id(value: str) -> bool:
    """Whether ``value`` is an acceptable ``metadata.user_id`` (or OpenAI ``user``)."""
    return len(value) <= USER_ID_MAX and _USER_ID_RE.match(value) is not None


class _Metadata(msgspec.Struct):
    user_id: UserId | None = None


class RequestPeek(msgspec.Struct):
    """The few fields of a Messages request the proxy looks at."""

    model: ModelId | None = None
    stream: bool = False
    # msgspec cannot decode ``Raw | None`` (it accepts only null), so absence is an
    # empty Raw instead.
    system: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    metadata: _Metadata | None = None


_peek_decoder = msgspec.json.Decoder(RequestPeek)
_raw_object_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])


def peek_request(body: bytes) -> RequestPeek:
    """Decode just enough of a request.

    Raises ``msgspec.DecodeError`` if it is not JSON (or nests too deeply), and
    ``msgspec.ValidationError`` if a peeked field breaks its rule (a model id of
    more than 128 characters, say).
    """
    try:
        return _peek_decoder.decode(body)
    except RecursionError:
        # msgspec counts nesting against Python's recursion limit (skipped fields
        # too) and raises RecursionError, which would surface as a bare 500. Catching
        # it here costs nothing on the hot path, unlike a depth pre-scan of 115 KB.
        raise msgspec.DecodeError("JSON is nested too deeply") from None


def _first_real_block(system: Any) -> str | None:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        for block in system:
            if not isinstance(block, dict) or block.get("type") != "text":
                return None
            text = block.get("text")
            if isinstance(text, str) and text.startswith(_BILLING_PREFIX):
                continue
            return text if isinstance(text, str) else None
    return None


def needs_identity(system_raw: msgspec.Raw | None) -> bool:
    """Whether the first real system block is not one of Claude Code's identity lines."""
    if not system_raw:
        return True
    try:
        system = msgspec.json.decode(system_raw)
    except RecursionError:
        # Only a pathological body gets here (its peek barely passed): leave it alone
        # and let the upstream refuse it rather than fail with a 500.
        return False
    first = _first_real_block(system)
    return first is None or first.strip() not in IDENTITY_LINES


def inject_identity(body: bytes, identity: str = CLAUDE_CODE_IDENTITY, *,
                    relocate: bool = False) -> bytes:
    """Put ``identity`` first among the real system blocks, keeping the client's after it.

    With ``relocate``, the client's own system blocks move to the start of the first
    user turn instead, and ``system`` holds only the identity: subscription tokens
    answer a long third-party system prompt with a 400 ("out of extra usage").
    """
    try:
        return _inject_identity(body, identity, relocate)
    except RecursionError:
        return body  # as in needs_identity: the upstream refuses it, no 500 from us


def _inject_identity(body: bytes, identity: str, relocate: bool) -> bytes:
    doc = _raw_object_decoder.decode(body)
    raw = doc.get("system")
    system: Any = msgspec.json.decode(raw) if raw is not None else None
    ident = {"type": "text", "text": identity}
    if system is None or system == "" or system == []:
        blocks: list[Any] = []
    elif isinstance(system, str):
        blocks = [{"type": "text", "text": system}]
    elif isinstance(system, list):
        blocks = list(system)
    else:
        return body  # not a system prompt at all: the upstream's 400 says so
    at = 0
    while at < len(blocks) and isinstance(blocks[at], dict) and str(
            blocks[at].get("text", "")).startswith(_BILLING_PREFIX):
        at += 1
    if relocate and blocks[at:] and _prepend_to_first_user_turn(doc, blocks[at:]):
        blocks = blocks[:at]
    blocks.insert(at, ident)
    doc["system"] = msgspec.Raw(_encoder.encode(blocks))
    return _encoder.encode(doc)


def _prepend_to_first_user_turn(doc: dict[str, msgspec.Raw], blocks: list[Any]) -> bool:
    raw = doc.get("messages")
    messages: Any = msgspec.json.decode(raw) if raw is not None else None
    if not isinstance(messages, list) or not messages:
        return False
    first = messages[0]
    if not isinstance(first, dict) or first.get("role") != "user":
        return False
    content = first.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        return False
    first["content"] = [*blocks, *content]
    doc["messages"] = msgspec.Raw(_encoder.encode(messages))
    return True


# -- SSE scanning ------------------------------------------------------------------------------

class Usage(msgspec.Struct):
    """Token counts as the Messages API reports them."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Message(msgspec.Struct):
    usage: Usage | None = None


class _Event(msgspec.Struct):
    type: str = ""
    message: _Message | None = None
    usage: Usage | None = None
    error: _ErrorIn | None = None


class _Body(msgspec.Struct):
    usage: Usage | None = None
    stop_reason: str | None = None


_event_decoder = msgspec.json.Decoder(_Event)
_body_decoder = msgspec.json.Decoder(_Body)

_WATCHED = (b"event: message_start", b"event: message_delta", b"event: error",
            b"event: message_stop")


def usage_of_body(body: bytes) -> Usage | None:
    """The usage block of a non-streamed Messages response, if any."""
    try:
        return _body_decoder.decode(body).usage
    except msgspec.DecodeError:
        return None


class SSEScanner:
    """Watches a relayed Anthropic SSE stream without altering it.

    It keeps only the tail of an unfinished event, decodes only the few event
    types it cares about (usage, errors, the end), and so costs a byte search
    per chunk on the hot path.
    """

    __slots__ = ("_buf", "error", "error_data", "events", "finished", "usage")

    def __init__(self) -> None:
        self._buf = b""
        self.usage = Usage()
        self.error: tuple[str, str] | None = None
        self.error_data: bytes | None = None
        """The error event's JSON as sent (it may carry ``details``, e.g. a spend cap)."""
        self.finished = False
        self.events = 0

    def feed(self, chunk: bytes) -> None:
        """Scan one chunk as it passes through."""
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            # Most events (the deltas) are not watched: counted without a slice or a call.
            if buf.startswith(_WATCHED, start, end):
                self._event(buf[start:end])
            else:
                self.events += 1
            start = end + 2
        self._buf = buf[start:] if start < len(buf) else b""

    def first_event_complete(self) -> bool:
        """Whether at least one whole event has been seen."""
        return self.events > 0

    def _event(self, frame: bytes) -> None:
        self.events += 1
        if not frame.startswith(_WATCHED):
            return
        if frame.startswith(b"event: message_stop"):
            self.finished = True
            return
        at = frame.find(b"data:")
        if at < 0:
            return
        data = frame[at + 5:].strip()
        try:
            event = _event_decoder.decode(data)
        except msgspec.DecodeError:
            return
        if event.type == "error" and event.error is not None:
            self.error = (event.error.type, event.error.message)
            self.error_data = data
            return
        usage = event.message.usage if event.message is not None else event.usage
        if usage is not None:
            _merge_usage(self.usage, usage)


def _merge_usage(into: Usage, new: Usage) -> None:
    # message_delta repeats cumulative counts; later values win when present.
    if new.input_tokens is not None:
        into.input_tokens = new.input_tokens
    if new.output_tokens is not None:
        into.output_tokens = new.output_tokens
    if new.cache_creation_input_tokens is not None:
        into.cache_creation_input_tokens = new.cache_creation_input_tokens
    if new.cache_read_input_tokens is not None:
        into.cache_read_input_tokens = new.cache_read_input_tokens


def merge_beta(client: str | None, extra: str) -> str:
    """The client's beta list with ``extra`` added once, order kept."""
    if not client:
        return extra
    parts = [p.strip() for p in client.split(",") if p.strip()]
    if extra not in parts:
        parts.append(extra)
    return ",".join(parts)


def without_beta(client: str | None, name: str) -> str | None:
    """The client's beta list without ``name`` (``None`` when nothing is left)."""
    if not client or name not in client:
        return client
    parts = [p.strip() for p in client.split(",") if p.strip() and p.strip() != name]
    return ",".join(parts) or None
