"""The OpenAI-compatible routes: ``POST /v1/chat/completions`` and OpenAI-shaped ``/v1/models``.

The request is translated to the Messages API, goes through the same failover
loop as every other request, and the answer is translated back (streamed chunk
by chunk when the client asked for a stream). Errors speak OpenAI's shape,
keeping ``retry-after`` on 429s.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote

import anyio

from ccrotate._asgi import Receive, Scope, Send, api_path, send_bytes
from ccrotate._exceptions import TranslationError, UpstreamError, UpstreamProtocolError
from ccrotate._pool.strategy import SelectionContext
from ccrotate._proxy.attempts import Attempt, Failed, Won, run_attempts
from ccrotate._proxy.dialects.openai import (
    ModelCapabilities,
    OpenAITranslator,
    TranslatedRequest,
    anthropic_error_to_openai,
    model_to_openai,
    models_to_openai,
    parse_model_capabilities,
    translation_error_body,
)
from ccrotate._proxy.headers import request_headers, response_headers
from ccrotate._proxy.record import RequestRecord, apply_usage
from ccrotate._wire import SPEND_CAP, needs_identity, parse_error, peek_request, usage_of_body

if TYPE_CHECKING:
    from ccrotate._proxy.app import RotatingProxy

__all__ = ["OpenAIRoute"]

_JSON = (b"content-type", b"application/json")
_SSE = [(b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache")]
_KEEP = frozenset({b"retry-after", b"request-id", b"x-ccrotate-account"})
_NO_RETRY = (b"x-should-retry", b"false")
CAPABILITIES_TTL = 3600.0
CAPABILITIES_RETRY = 60.0


class OpenAIRoute:
    """Serves OpenAI chat completions through a :class:`RotatingProxy`.

    Parameters:
        translator: the :class:`OpenAITranslator` to use, with its own aliases and
            capabilities. By default one whose model capabilities come from the upstream's
            ``GET /v1/models`` (fetched before the first chat request, then hourly).
        model_aliases: client model name -> Anthropic model id, for the default translator
            and for the model list (aliases of listed models are listed too).

    Pass it as ``RotatingProxy(pool, openai=OpenAIRoute())``.
    """

    def __init__(self, translator: OpenAITranslator | None = None, *,
                 model_aliases: Mapping[str, str] | None = None) -> None:
        self._caps: dict[str, ModelCapabilities] = {}
        self._caps_at = float("-inf")
        self._caps_busy = False
        self._fetch_caps = translator is None
        self.aliases = dict(model_aliases or {})
        self.translator = translator or OpenAITranslator(model_aliases=self.aliases,
                                                         capabilities=self._caps.get)

    async def handle(self, proxy: RotatingProxy, scope: Scope, receive: Receive, send: Send,
                     record: RequestRecord, t0: float) -> None:
        """``POST /v1/chat/completions``."""
        body = await proxy.prepare(scope, receive, send, record)
        if body is None:
            return
        try:
            req = self.translator.translate_request(body)
            # A refused request never reaches the upstream, not even for the model list;
            # an accepted one is translated again once fresh capabilities are in.
            if await self._refresh_capabilities(proxy, record):
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
        # ``user`` became metadata.user_id: the same session key as on /v1/messages.
        user = peek.metadata.user_id if peek.metadata is not None else None
        attempt = Attempt("POST", "/v1/messages", fwd, None, req.body, pinned, identity,
                          SelectionContext(model=req.model, session_key=user),
                          relocate_system=proxy.config.relocate_system)

        async def relay(send: Send, outcome: Won | Failed, record: RequestRecord,
                        t0: float) -> None:
            await _relay(send, outcome, record, t0, self.translator, req)

        await proxy.serve(attempt, receive, send, record, t0, relay=relay)

    async def handle_models(self, proxy: RotatingProxy, scope: Scope, receive: Receive,
                            send: Send, record: RequestRecord, t0: float) -> None:
        """``GET /v1/models`` and ``/v1/models/{id}`` for OpenAI clients, in OpenAI's shape."""
        if proxy.authenticate is not None and not proxy.authenticate(scope["headers"]):
            # The proxy's own refusal speaks Anthropic's shape on this shared path.
            record.error_type = "authentication_error"
            await _error(send, Failed.of(401, "authentication_error",
                                         "ccrotate: invalid or missing client key"), record)
            return
        if await proxy.prepare(scope, receive, send, record) is None:
            return
        fwd, _, pinned = request_headers(scope["headers"])
        model_id = api_path(scope).removeprefix("/v1/models").removeprefix("/") or None
        aliases = self.aliases
        path = "/v1/models?limit=1000"
        if model_id is not None:
            path = "/v1/models/" + quote(aliases.get(model_id, model_id), safe="")
        attempt = Attempt("GET", path, fwd, None, None, pinned, None, SelectionContext())

        async def relay(send: Send, outcome: Won | Failed, record: RequestRecord,
                        t0: float) -> None:
            if isinstance(outcome, Failed):
                record.error_type = parse_error(outcome.body)[0]
                await _error(send, outcome, record)
                return
            try:
                body = (models_to_openai(outcome.head[0], aliases=aliases) if model_id is None
                        else model_to_openai(outcome.head[0], model_id=model_id))
            except UpstreamProtocolError as exc:
                record.error_type = "api_error"
                await _error(send, Failed.of(502, "api_error", f"ccrotate: {exc}"), record)
                return
            record.status = 200
            record.ttfb = time.perf_counter() - t0
            await send_bytes(send, 200, [_JSON, (b"x-ccrotate-account",
                                                 outcome.account.name.encode())], body)

        await proxy.serve(attempt, receive, send, record, t0, relay=relay)

    async def _refresh_capabilities(self, proxy: RotatingProxy, record: RequestRecord) -> bool:
        # Which models take adaptive thinking or native JSON comes from the upstream's
        # own model list, fetched by one request an hour; the others never wait for it.
        # True when the capabilities were just replaced.
        now = time.monotonic()
        if not self._fetch_caps or self._caps_busy or now - self._caps_at < CAPABILITIES_TTL:
            return False
        self._caps_busy = True
        fetched = False
        try:
            probe = RequestRecord(request_id=record.request_id + "-models",
                                  started_at=time.time(), route="models", method="GET")
            attempt = Attempt("GET", "/v1/models?limit=1000",
                              [("anthropic-version", "2023-06-01")], None, None, None, None,
                              SelectionContext())
            with anyio.move_on_after(5):
                # The refresher matters: an OAuth token due for renewal must be renewed
                # first, or its 401 here would take the account out of rotation.
                outcome = await run_attempts(attempt, pool=proxy.pool, upstream=proxy.upstream,
                                             record=probe, config=proxy.loop_config,
                                             refresher=proxy.refresher)
                if isinstance(outcome, Won):
                    try:
                        caps = parse_model_capabilities(outcome.head[0])
                        fetched = True
                    except ValueError:  # msgspec.DecodeError: not a model list
                        caps = {}
                    finally:
                        with anyio.CancelScope(shield=True):
                            await outcome.response.aclose()
                            proxy.pool.release(outcome.account.name)
                    self._caps.clear()
                    self._caps.update(caps)
        finally:
            # A failed fetch (every account cooling, say) is retried in a minute, not an hour.
            self._caps_at = now if fetched else now - CAPABILITIES_TTL + CAPABILITIES_RETRY
            self._caps_busy = False
        return fetched


async def _error(send: Send, failed: Failed, record: RequestRecord) -> None:
    status, body = anthropic_error_to_openai(failed.status, failed.body)
    record.status = status
    headers = [_JSON, *((k, v) for k, v in failed.client_headers() if k in _KEEP)]
    if status == 429 and parse_error(failed.body)[2] == SPEND_CAP:
        # insufficient_quota will not clear by retrying; the openai SDK obeys this header.
        headers.append(_NO_RETRY)
    await send_bytes(send, status, headers, body)


async def _relay(send: Send, outcome: Won | Failed, record: RequestRecord, t0: float,
                 translator: OpenAITranslator, req: TranslatedRequest) -> None:
    if isinstance(outcome, Failed):
        record.error_type = parse_error(outcome.body)[0]
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
            record.error_type = "api_error"
            await _error(send, Failed.of(502, "api_error", f"ccrotate: {exc}"), record)
            return
        apply_usage(record, usage_of_body(raw))
        record.status = 200
        record.ttfb = time.perf_counter() - t0
        await send_bytes(send, 200, [_JSON, account, *kept], body)
        return
    record.status = 200
    await send({"type": "http.response.start", "status": 200,
                "headers": [*_SSE, account, *kept]})
    record.ttfb = time.perf_counter() - t0
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
    except UpstreamError as exc:  # the upstream died mid-stream
        # (An OSError from send() is the client leaving: it goes up to the proxy, a 499.)
        record.error_type = "api_error"
        tail = stream.error(f"ccrotate: upstream stream failed: {exc}")
    else:
        tail = stream.finish()
        if scanner is not None and scanner.error is not None:
            record.error_type = scanner.error[0]
        elif scanner is not None and not scanner.finished:
            record.error_type = "api_error"  # ended without message_stop: an error event
    if scanner is not None:
        apply_usage(record, scanner.usage)
    await send({"type": "http.response.body", "body": tail, "more_body": False})

