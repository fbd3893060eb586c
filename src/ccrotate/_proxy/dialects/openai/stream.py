"""Anthropic SSE -> OpenAI ``chat.completion.chunk`` SSE, incrementally.

This runs once per upstream chunk, so the per-event work is kept to: one ``bytes.find``
for the event boundary, one msgspec decode into a flat struct, and a join of byte
pieces. Every chunk shares a prefix (id, object, created, model) that is encoded once
at ``message_start``; delta strings arrive as raw JSON literals and are copied into the
output without being unescaped and re-escaped.
"""

from __future__ import annotations

import uuid

import msgspec

from ccrotate._proxy.dialects.openai import schema_anthropic as A
from ccrotate._proxy.dialects.openai import schema_openai as O
from ccrotate._proxy.dialects.openai.errors import error_detail
from ccrotate._proxy.dialects.openai.response import chat_id, finish_reason, openai_usage

__all__ = ["StreamTranslator"]

_OPEN, _DONE, _FAILED = 0, 1, 2
_JSON = -1  # block kind of the JSON-mode tool; real tools store their chunk prefix

_DONE_LINE = b"data: [DONE]\n\n"
_ROLE = b'{"role":"assistant","content":""}'
_CONTENT = b'{"content":'
_REASONING = b'{"reasoning_content":'
_CLOSE = b"}"
_TOOL_CLOSE = b"}}]}"
_CUT_OFF = "upstream stream ended before message_stop"


def _merge_usage(into: A.Usage, new: A.Usage) -> None:
    # message_delta carries cumulative counts; any field it has replaces the old one.
    for field in A.Usage.__struct_fields__:
        value = getattr(new, field)
        if value is not None:
            setattr(into, field, value)


class StreamTranslator:
    """Translate one streamed response; create it with ``OpenAITranslator.stream_translator``.

    Feed it the upstream bytes as they come (any chunk boundaries, ``\\n`` or ``\\r\\n``
    line ends) and send what it returns to the client. After a clean ``message_stop`` the
    output ends with ``data: [DONE]``. After an upstream error it ends with one
    ``data: {"error": {...}}`` event and no ``[DONE]``: the openai SDK raises ``APIError``
    on that event, and a raw client sees the stream end without its success marker.
    """

    __slots__ = (
        "_blocks",
        "_buf",
        "_cr",
        "_created",
        "_head",
        "_include_usage",
        "_json_tool",
        "_model",
        "_prefix",
        "_scan",
        "_state",
        "_stop_reason",
        "_suffix",
        "_tools",
        "_usage",
    )

    def __init__(self, *, model: str, created: int, include_usage: bool,
                 json_tool: str | None) -> None:
        self._model = O.ENCODER.encode(model)
        self._created = created
        self._include_usage = include_usage
        self._json_tool = json_tool
        self._suffix = (b',"logprobs":null,"finish_reason":null}]'
                        + (b',"usage":null}\n\n' if include_usage else b"}\n\n"))
        self._head = b""
        self._prefix = b""
        self._buf = b""
        self._scan = 0
        self._cr = False
        self._state = _OPEN
        self._blocks: dict[int, bytes | int] = {}
        self._tools = 0
        self._stop_reason: str | None = None
        self._usage = A.Usage()

    # ------------------------------------------------------------------ public API

    def feed(self, chunk: bytes) -> bytes:
        """Translate the next piece of upstream SSE bytes; returns b"" when nothing is due."""
        if self._state or not chunk:
            return b""
        if self._cr:
            chunk = b"\r" + chunk
            self._cr = False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                # Could be half of a CRLF split across chunks: decide with the next one.
                chunk = chunk[:-1]
                self._cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf + chunk if self._buf else chunk
        end = buf.find(b"\n\n", self._scan)
        if end < 0:
            self._buf = buf
            self._scan = max(len(buf) - 1, 0)
            return b""
        out: list[bytes | msgspec.Raw] = []
        start = 0
        while end >= 0:
            self._block(buf[start:end], out)
            if self._state:
                self._buf = b""
                return b"".join(out)
            start = end + 2
            end = buf.find(b"\n\n", start)
        if start < len(buf):
            self._buf = rest = buf[start:]
            self._scan = len(rest) - 1
        else:
            self._buf = b""
            self._scan = 0
        return b"".join(out)

    def finish(self) -> bytes:
        """Call when the upstream body ends; reports a cut-off stream as an error event."""
        if self._state:
            return b""
        out: list[bytes | msgspec.Raw] = []
        rest = self._buf.strip()
        self._buf = b""
        if rest:  # a last event without its blank line: accept it
            self._block(rest, out)
        if not self._state:
            out.append(self._error_line(_CUT_OFF, "api_error"))
        return b"".join(out)

    def error(self, message: str, type_: str = "api_error") -> bytes:
        """The error event for an upstream that failed mid-stream (``type_`` is an
        Anthropic error type); returns b"" if the stream already ended."""
        if self._state:
            return b""
        return self._error_line(message, type_)

    # ------------------------------------------------------------------ internals

    def _error_line(self, message: str, type_: str) -> bytes:
        self._state = _FAILED
        body = O.ENCODER.encode(O.ErrorBody(error_detail(message, type_)))
        return b"data: " + body + b"\n\n"

    def _start(self, message_id: str) -> None:
        self._head = (b'data: {"id":' + O.ENCODER.encode(chat_id(message_id))
                      + b',"object":"chat.completion.chunk","created":'
                      + str(self._created).encode() + b',"model":' + self._model + b",")
        self._prefix = self._head + b'"choices":[{"index":0,"delta":'

    def _block(self, block: bytes, out: list[bytes | msgspec.Raw]) -> None:
        # Anthropic's shape is "event: NAME\ndata: JSON"; anything else takes the general
        # path (several data lines are joined with "\n", comments are skipped).
        data: bytes | None = None
        if block.startswith(b"event:"):
            cut = block.find(b"\ndata: ")
            if cut > 0 and block.find(b"\n", cut + 1) < 0:
                data = block[cut + 7:]
        if data is None:
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    value = line[6:] if line[5:6] == b" " else line[5:]
                    data = value if data is None else data + b"\n" + value
            if data is None:
                return  # comment or event-name-only block
        try:
            event = A.EVENT_DECODER.decode(data)
        except msgspec.DecodeError:
            out.append(self._error_line("malformed event from upstream", "api_error"))
            return
        kind = event.type
        if kind == "content_block_delta":
            self._delta(event, out)
        elif kind == "content_block_start":
            self._block_start(event, out)
        elif kind == "message_start":
            message = event.message or A.StreamMessage()
            self._start(message.id or uuid.uuid4().hex)
            if message.usage is not None:
                _merge_usage(self._usage, message.usage)
            out += (self._prefix, _ROLE, self._suffix)
        elif kind == "message_delta":
            if event.delta is not None and event.delta.stop_reason is not None:
                self._stop_reason = event.delta.stop_reason
            if event.usage is not None:
                _merge_usage(self._usage, event.usage)
        elif kind == "message_stop":
            self._stop(out)
        elif kind == "error":
            info = event.error or A.ErrorInfo()
            out.append(self._error_line(info.message, info.type))
        # ping, content_block_stop and event types added later need nothing

    def _delta(self, event: A.StreamEvent, out: list[bytes | msgspec.Raw]) -> None:
        delta = event.delta
        if delta is None:
            return
        if not self._prefix:
            self._start(uuid.uuid4().hex)
        kind = delta.type
        if kind == "text_delta":
            if len(delta.text) > 2:  # skip ""
                out += (self._prefix, _CONTENT, delta.text, _CLOSE, self._suffix)
        elif kind == "input_json_delta":
            target = self._blocks.get(event.index)
            if target is None or len(delta.partial_json) <= 2:
                return
            if target == _JSON:
                out += (self._prefix, _CONTENT, delta.partial_json, _CLOSE, self._suffix)
            elif isinstance(target, bytes):
                out += (self._prefix, target, delta.partial_json, _TOOL_CLOSE, self._suffix)
        elif kind == "thinking_delta" and len(delta.thinking) > 2:
            out += (self._prefix, _REASONING, delta.thinking, _CLOSE, self._suffix)
        # signature_delta and citations_delta have no OpenAI counterpart

    def _block_start(self, event: A.StreamEvent, out: list[bytes | msgspec.Raw]) -> None:
        block = event.content_block
        if block is None:
            return
        if not self._prefix:
            self._start(uuid.uuid4().hex)
        kind = block.type
        if kind == "tool_use":
            if self._json_tool is not None and block.name == self._json_tool:
                self._blocks[event.index] = _JSON
                return
            index = str(self._tools).encode()
            self._tools += 1
            self._blocks[event.index] = (b'{"tool_calls":[{"index":' + index
                                         + b',"function":{"arguments":')
            out += (self._prefix, b'{"tool_calls":[{"index":', index, b',"id":',
                    O.ENCODER.encode(block.id or ""), b',"type":"function","function":'
                    b'{"name":', O.ENCODER.encode(block.name or ""),
                    b',"arguments":""}}]}', self._suffix)
        elif kind == "text" and len(block.text) > 2:
            out += (self._prefix, _CONTENT, block.text, _CLOSE, self._suffix)
        elif kind == "thinking" and len(block.thinking) > 2:
            out += (self._prefix, _REASONING, block.thinking, _CLOSE, self._suffix)

    def _stop(self, out: list[bytes | msgspec.Raw]) -> None:
        if not self._prefix:
            self._start(uuid.uuid4().hex)
        reason = finish_reason(self._stop_reason, self._tools > 0).encode()
        tail = b',"usage":null}\n\n' if self._include_usage else b"}\n\n"
        out += (self._prefix, b'{},"logprobs":null,"finish_reason":"', reason, b'"}]', tail)
        if self._include_usage:
            out += (self._head, b'"choices":[],"usage":',
                    O.ENCODER.encode(openai_usage(self._usage)), b"}\n\n")
        out.append(_DONE_LINE)
        self._state = _DONE
