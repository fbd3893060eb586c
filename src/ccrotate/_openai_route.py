"""The OpenAI-compatible routes: ``POST /v1/chat/completions`` and OpenAI-shaped ``/v1/models``.

The request is translated to the Messages API, goes through the same failover
loop as every other request, and the answer is translated back (streamed chunk
by chunk when the client asked for a stream). Errors speak OpenAI's shape,
keeping ``retry-after`` on 429s.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from ccrotate._asgi import Receive, Scope, Send, send_bytes
from ccrotate._attempts import Attempt, Failed, Won, run_attempts
from ccrotate._exceptions import TranslationError, UpstreamProtocolError
from ccrotate._headers import request_headers, response_headers
from ccrotate._observe import RequestRecord
from ccrotate._openai import (
    ModelCapabilities,
    OpenAITranslator,
    TranslatedRequest,
    anthropic_error_to_openai,
    models_to_openai,
    parse_model_capabilities,
    translation_error_body,
)
from ccrotate._strategy import SelectionContext
from ccrotate._wire import needs_identity, peek_request, usage_of_body

if TYPE_CHECKING:
    from ccrotate._proxy import RotatingProxy

__all__ = ["OpenAIRoute"]

_JSON = (b"content-type", b"application/json")
_SSE = [(b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache")]
_KEEP = frozenset({b"retry-after", b"request-id", b"x-ccrotate-account"})
CAPABILITIES_TTL = 3600.0


class OpenAIRoute:
    """Serves OpenAI chat completions through a :class:`RotatingProxy`.

    Parameters:
        translator: the :class:`OpenAITranslator` to use; by default one whose model
            capabilities come from the upstream's ``GET /v1/models`` (refreshed hourly).
        model_aliases: client model name -> Anthropic model id, for the default translator.

    Pass it as ``RotatingProxy(pool, openai=OpenAIRoute())``.
    """

    def __init__(self, translator: OpenAITranslator | None = None, *,
                 model_aliases: Mapping[str, str] | None = None) -> None:
        self._caps: dict[str, ModelCapabilities] = {}
        self._caps_at = float("-inf")
        self._caps_busy = False
        self.aliases = dict(model_aliases or {})
        self.translator = translator or OpenAITranslator(model_aliases=self.aliases,
                                                         capabilities=self._caps.get)

    async def handle(self, proxy: RotatingProxy, scope: Scope, receive: Receive, send: Send,
                     record: RequestRecord, t0: float) -> None:
        """``POST /v1/chat/completions``."""
        body = await proxy.prepare(scope, receive, send, record)
        if body is None:
            return
        await self._refresh_capabilities(proxy, record)
        try:
            req = self.translator.translate_request(body)
        except TranslationError as exc:
            record.status, record.error_type = 400, "invalid_request_error"
            await send_bytes(send, 400, [_JSON], translation_error_body(exc))
            return
        record.model, record.stream = req.model, req.stream
        peek = peek_request(req.body)
        identity = (proxy.config.identity if proxy.config.inject_identity
                    and needs_identity(peek.system) else None)
        fwd, _, pinned = request_headers(scope["headers"])
        attempt = Attempt("POST", "/v1/messages", fwd, None, req.body, pinned, identity,
                          SelectionContext(model=req.model))

        async def relay(send: Send, outcome: Won | Failed, record: RequestRecord,
                        t0: float) -> None:
            await _relay(send, outcome, record, t0, self.translator, req)

        await proxy.serve(attempt, receive, send, record, t0, relay=relay)

    async def handle_models(self, proxy: RotatingProxy, scope: Scope, receive: Receive,
                            send: Send, record: RequestRecord, t0: float) -> None:
        """``GET /v1/models`` for OpenAI clients: OpenAI's list shape."""
        if await proxy.prepare(scope, receive, send, record) is None:
            return
        fwd, _, pinned = request_headers(scope["headers"])
        attempt = Attempt("GET", "/v1/models?limit=1000", fwd, None, None, pinned, None,
                          SelectionContext())
        aliases = self.aliases

        async def relay(send: Send, outcome: Won | Failed, record: RequestRecord,
                        t0: float) -> None:
            if isinstance(outcome, Failed):
                await _error(send, outcome, record)
                return
            body = models_to_openai(outcome.head[0], aliases=aliases)
            record.status = 200
            await send_bytes(send, 200, [_JSON], body)

        await proxy.serve(attempt, receive, send, record, t0, relay=relay)

    async def _refresh_capabilities(self, proxy: RotatingProxy, record: RequestRecord) -> None:
        # Which models take adaptive thinking or native JSON comes from the upstream's
        # own model list, fetched by one request an hour; the others never wait for it.
        now = time.monotonic()
        if self._caps_busy or now - self._caps_at < CAPABILITIES_TTL:
            return
        self._caps_busy = True
        try:
            probe = RequestRecord(request_id=record.request_id + "-models",
                                  started_at=time.time(), route="models", method="GET")
            attempt = Attempt("GET", "/v1/models?limit=1000",
                              [("anthropic-version", "2023-06-01")], None, None, None, None,
                              SelectionContext())
            with anyio.move_on_after(5):
                outcome = await run_attempts(attempt, pool=proxy.pool, upstream=proxy.upstream,
                                             record=probe, config=proxy.loop_config)
                if isinstance(outcome, Won):
                    try:
                        caps = parse_model_capabilities(outcome.head[0])
                    except (UpstreamProtocolError, ValueError):
                        caps = {}
                    finally:
                        await outcome.response.aclose()
                        proxy.pool.release(outcome.account.name)
                    self._caps.clear()
                    self._caps.update(caps)
            self._caps_at = now
        finally:
            self._caps_busy = False


async def _error(send: Send, failed: Failed, record: RequestRecord) -> None:
    status, body = anthropic_error_to_openai(failed.status, failed.body)
    record.status = status
    headers = [_JSON, *((k, v) for k, v in failed.headers if k in _KEEP)]
    if failed.account is not None:
        headers.append((b"x-ccrotate-account", failed.account.encode()))
    await send_bytes(send, status, headers, body)


async def _relay(send: Send, outcome: Won | Failed, record: RequestRecord, t0: float,
                 translator: OpenAITranslator, req: TranslatedRequest) -> None:
    if isinstance(outcome, Failed):
        record.error_type = "upstream_error"
        await _error(send, outcome, record)
        return
    resp = outcome.response
    account = (b"x-ccrotate-account", outcome.account.name.encode())
    kept = [(k, v) for k, v in response_headers(resp.raw_headers) if k == b"request-id"]
    if not outcome.streaming:
        raw = outcome.head[0]
        try:
            body = translator.translate_response(raw, req)
        except UpstreamProtocolError as exc:
            await _error(send, Failed.of(502, "api_error", f"ccrotate: {exc}"), record)
            return
        _usage(record, usage_of_body(raw))
        record.status = 200
        record.ttfb = anyio.current_time() - t0
        await send_bytes(send, 200, [_JSON, account, *kept], body)
        return
    record.status = 200
    await send({"type": "http.response.start", "status": 200,
                "headers": [*_SSE, account, *kept]})
    record.ttfb = anyio.current_time() - t0
    stream = translator.stream_translator(req)
    scanner = outcome.scanner

    async def out(chunk: bytes) -> None:
        if scanner is not None:
            scanner.feed(chunk)
        data = stream.feed(chunk)
        if data:
            await send({"type": "http.response.body", "body": data, "more_body": True})

    for chunk in outcome.head:
        data = stream.feed(chunk)  # the scanner has already seen the head
        if data:
            await send({"type": "http.response.body", "body": data, "more_body": True})
    try:
        async for chunk in resp.chunks():
            await out(chunk)
    except Exception as exc:  # UpstreamError: the upstream died mid-stream
        record.error_type = "api_error"
        tail = stream.error(f"ccrotate: upstream stream failed: {exc}")
    else:
        tail = stream.finish()
        if scanner is not None and scanner.error is not None:
            record.error_type = scanner.error[0]
    if scanner is not None:
        _usage(record, scanner.usage)
    await send({"type": "http.response.body", "body": tail, "more_body": False})


def _usage(record: RequestRecord, usage: Any) -> None:
    if usage is None:
        return
    record.input_tokens = usage.input_tokens
    record.output_tokens = usage.output_tokens
    record.cache_read_tokens = usage.cache_read_input_tokens
    record.cache_write_tokens = usage.cache_creation_input_tokens
