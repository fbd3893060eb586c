"""Sending one SDK call's answer: JSON or SSE, in the Anthropic or the OpenAI dialect.

The answer is rendered in Anthropic's shape first (:mod:`ccrotate._sdk.render`); the
chat-completions endpoint passes it through the same translator as the direct proxy's
OpenAI dialect. Nothing is sent before the agent produces output, so a rate-limited
account can still be swapped for another one; after that, errors become an ``error``
event at the end of the stream.
"""

from __future__ import annotations

import time
from typing import Any

from ccrotate._asgi import Send, send_bytes
from ccrotate._proxy.dialects.openai.errors import anthropic_error_to_openai
from ccrotate._proxy.dialects.openai.stream import StreamTranslator
from ccrotate._proxy.dialects.openai.translator import OpenAITranslator, TranslatedRequest
from ccrotate._proxy.record import RequestRecord
from ccrotate._sdk.config import ToolSteps
from ccrotate._sdk.events import AgentEvent, Result
from ccrotate._sdk.render import MessageBuilder, SSEWriter, is_output
from ccrotate._wire import error_body

__all__ = ["Answer", "OpenAIDialect"]

_JSON = (b"content-type", b"application/json")
_SSE = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


class OpenAIDialect:
    """The chat-completions side of one call: its translator and translated request."""

    __slots__ = ("req", "translator")

    def __init__(self, translator: OpenAITranslator, req: TranslatedRequest) -> None:
        self.translator = translator
        self.req = req


def error_response(status: int, type_: str, message: str, *, openai: bool,
                   retry_after: float | None = None) -> tuple[int, list[tuple[bytes, bytes]],
                                                              bytes]:
    """A complete error answer in the client's shape."""
    body = error_body(type_, message)
    headers = [_JSON]
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))
    if openai:
        status, body = anthropic_error_to_openai(status, body)
    return status, headers, body


class Answer:
    """Sends one call's answer as the agent produces it.

    Parameters:
        send: the ASGI send.
        record: the call's record (status, first-byte time, error type).
        model: the model named in answers.
        stream: SSE (else one JSON body).
        steps: the ``tool_steps`` setting.
        openai: the OpenAI dialect, for ``/v1/chat/completions``.
    """

    __slots__ = ("_builder", "_chat", "_writer", "account", "done", "openai", "produced",
                 "record", "send", "started", "stream", "t0")

    def __init__(self, send: Send, record: RequestRecord, *, model: str, stream: bool,
                 steps: ToolSteps, openai: OpenAIDialect | None = None) -> None:
        self.send = send
        self.record = record
        self.stream = stream
        self.openai = openai
        self.t0 = time.perf_counter()
        self.produced = False
        """The agent produced output: the call can no longer move to another account."""
        self.started = False
        """The response has started (its status is sent)."""
        self.account: str | None = None
        self.done = False
        """The whole answer (or error) has been sent."""
        self._builder = MessageBuilder(model, steps)
        self._writer = SSEWriter(model, steps)
        self._chat: StreamTranslator | None = None
        if openai is not None and stream:
            self._chat = openai.translator.stream_translator(openai.req)

    async def event(self, event: AgentEvent) -> None:
        """Take one event of the agent's run; stream it once output has begun."""
        output = is_output(event)
        self.produced = self.produced or output
        if not self.stream:
            self._builder.feed(event)
            return
        if not self.started:
            if not output:
                return  # a text block's start: the first delta opens the block
            await self._start()
        await self._body(self._writer.feed(event))

    async def _start(self) -> None:
        self.started = True
        self.record.status = 200
        self.record.ttfb = time.perf_counter() - self.t0
        await self.send({"type": "http.response.start", "status": 200,
                         "headers": [*_SSE, *self._headers()]})
        await self._body(self._writer.start())

    def _headers(self) -> list[tuple[bytes, bytes]]:
        return [] if self.account is None else [(b"x-ccrotate-account", self.account.encode())]

    async def _body(self, data: bytes, *, last: bool = False) -> None:
        if self._chat is not None:
            data = self._chat.feed(data) if data else b""
            if last:
                data += self._chat.finish()
        if data or last:
            await self.send({"type": "http.response.body", "body": data, "more_body": not last})
            self.done = last

    async def finish(self, result: Result) -> None:
        """The agent is done: send (the rest of) the answer."""
        if self.stream:
            if not self.started:
                await self._start()
            await self._body(self._writer.finish(result), last=True)
            return
        body = self._builder.body(result)
        if self.openai is not None:
            body = self.openai.translator.translate_response(body, self.openai.req)
        headers = [_JSON, *self._headers()]
        if result.cost_usd is not None:
            headers.append((b"x-ccrotate-cost-usd", f"{result.cost_usd:.6f}".encode()))
        self.record.status = 200
        self.record.ttfb = time.perf_counter() - self.t0
        self.started = True
        await send_bytes(self.send, 200, headers, body)
        self.done = True

    async def fail(self, status: int, type_: str, message: str, *,
                   retry_after: float | None = None) -> None:
        """Answer with an error: a whole response, or an ``error`` event once started.

        ``status`` 0 (the agent itself failed, no HTTP status involved) is answered 500."""
        status = status if status >= 400 else 500
        self.record.error_type = type_
        if self.started:
            await self._stream_error(type_, message)
            return
        shown = error_response(status, type_, message, openai=self.openai is not None,
                               retry_after=retry_after)
        self.record.status = shown[0]
        self.started = True
        await send_bytes(self.send, shown[0], [*shown[1], *self._headers()], shown[2])
        self.done = True

    async def _stream_error(self, type_: str, message: str) -> None:
        if self._chat is not None:
            data = self._chat.error(message, type_)
        else:
            data = self._writer.error(type_, message)
        await self.send({"type": "http.response.body", "body": data, "more_body": False})
        self.done = True


def usage_into(record: RequestRecord, usage: dict[str, Any]) -> None:
    """Copy a run's token counts onto the call's record."""
    record.input_tokens = usage.get("input_tokens")
    record.output_tokens = usage.get("output_tokens")
    record.cache_read_tokens = usage.get("cache_read_input_tokens")
    record.cache_write_tokens = usage.get("cache_creation_input_tokens")
