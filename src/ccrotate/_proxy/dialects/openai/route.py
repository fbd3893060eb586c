"""The OpenAI dialect on the shared pipeline: chat completions and OpenAI-shaped models.

A chat request is translated to the Messages API and runs through the same
attempt loop and relay as every other request; the answer is translated back
(chunk by chunk when streamed). Errors speak OpenAI's shape and keep
``retry-after`` and the rate-limit headers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from urllib.parse import quote

import anyio
import msgspec

from ccrotate._asgi import api_path
from ccrotate._exceptions import TranslationError
from ccrotate._pool.strategy import SelectionContext
from ccrotate._proxy.attempts import Attempt, Failed, Won
from ccrotate._proxy.dialects.base import ClientRequest, Headers, Prepared
from ccrotate._proxy.dialects.openai.caps import ModelCapabilities, parse_model_capabilities
from ccrotate._proxy.dialects.openai.errors import (
    anthropic_error_to_openai,
    ratelimit_headers,
    translation_error_body,
)
from ccrotate._proxy.dialects.openai.response import model_to_openai, models_to_openai
from ccrotate._proxy.dialects.openai.stream import StreamTranslator
from ccrotate._proxy.dialects.openai.translator import OpenAITranslator, TranslatedRequest
from ccrotate._proxy.headers import request_headers
from ccrotate._proxy.record import RequestRecord
from ccrotate._proxy.session import session_key
from ccrotate._upstream.providers import OutgoingRequest
from ccrotate._wire import SPEND_CAP, needs_identity, parse_error, peek_request

__all__ = ["OpenAIRoute"]

_JSON = (b"content-type", b"application/json")
_SSE = [(b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache")]
# What an OpenAI client may learn of an error: when to retry, which request, who served.
_KEEP = frozenset({b"retry-after", b"request-id", b"x-ccrotate-account"})
_NO_RETRY = (b"x-should-retry", b"false")
CAPABILITIES_TTL = 3600.0
CAPABILITIES_RETRY = 60.0


def _openai_error(failed: Failed) -> Failed:
    status, body = anthropic_error_to_openai(failed.status, failed.body)
    headers = [_JSON, *((k, v) for k, v in failed.headers if k in _KEEP)]
    if status == 429:
        # OpenAI clients pace themselves by x-ratelimit-*, not by Anthropic's headers.
        headers += ratelimit_headers(failed.headers, time.time())
        if parse_error(failed.body)[2] == SPEND_CAP:
            # insufficient_quota will not clear by retrying; the openai SDK obeys this header.
            headers.append(_NO_RETRY)
    return Failed(status, headers, body)


def _openai_refusal(failed: Failed) -> Failed:
    # ccrotate's own refusals keep their status (a 415 stays a 415): the mapping above
    # is for upstream answers, whose statuses OpenAI clients read differently.
    shown = _openai_error(failed)
    close = [(k, v) for k, v in failed.headers if k == b"connection"]  # a 408 ends the socket
    return Failed(failed.status, shown.headers + close, shown.body)


def _account(won: Won) -> tuple[bytes, bytes]:
    return (b"x-ccrotate-account", won.account.name.encode())


class _ChatStream:
    __slots__ = ("_t",)

    def __init__(self, translator: StreamTranslator) -> None:
        self._t = translator

    def feed(self, chunk: bytes) -> bytes:
        return self._t.feed(chunk)

    def finish(self, ended_early: bool) -> bytes:
        return self._t.finish()  # closes an unfinished stream with an error chunk itself

    def fail(self, message: str) -> bytes | None:
        return self._t.error(f"ccrotate: upstream stream failed: {message}")


class _ChatAdapter:
    __slots__ = ("req", "translator")

    def __init__(self, translator: OpenAITranslator, req: TranslatedRequest) -> None:
        self.translator = translator
        self.req = req

    def error(self, failed: Failed) -> Failed:
        return _openai_error(Failed(failed.status, failed.client_headers(), failed.body))

    def head(self, won: Won) -> tuple[int, Headers]:
        kept = [(k.lower(), v) for k, v in won.response.raw_headers
                if k.lower() == b"request-id"]
        base = _SSE if won.streaming else [_JSON]
        return 200, [*base, _account(won), *kept]

    def body(self, won: Won, raw: bytes) -> bytes:
        return self.translator.translate_response(raw, self.req)

    def stream(self, won: Won) -> _ChatStream:
        return _ChatStream(self.translator.stream_translator(self.req))


class _ModelsAdapter:
    __slots__ = ("aliases", "model_id")

    def __init__(self, aliases: Mapping[str, str], model_id: str | None) -> None:
        self.aliases = aliases
        self.model_id = model_id

    def error(self, failed: Failed) -> Failed:
        return _openai_error(Failed(failed.status, failed.client_headers(), failed.body))

    def head(self, won: Won) -> tuple[int, Headers]:
        return 200, [_JSON, _account(won)]

    def body(self, won: Won, raw: bytes) -> bytes:
        if self.model_id is None:
            return models_to_openai(raw, aliases=self.aliases)
        return model_to_openai(raw, model_id=self.model_id)

    def stream(self, won: Won) -> _ChatStream:  # pragma: no cover - model lists never stream
        raise TypeError("model lists are not streamed")


class _ChatRoute:
    __slots__ = ("_owner",)
    name = "chat_completions"
    method = "POST"

    def __init__(self, owner: OpenAIRoute) -> None:
        self._owner = owner

    def refusal(self, failed: Failed) -> Failed:
        return _openai_refusal(failed)

    async def prepare(self, request: ClientRequest) -> Prepared | Failed:
        owner, record = self._owner, request.record
        translator = owner.translator
        try:
            req = translator.translate_request(request.body)
            # A refused request never reaches the upstream, not even for the model list;
            # an accepted one is translated again once fresh capabilities are in.
            if await owner.refresh_capabilities(request):
                req = translator.translate_request(request.body)
        except TranslationError as exc:
            record.error_type = "invalid_request_error"
            return Failed(400, [_JSON], translation_error_body(exc))
        record.model, record.stream = req.model, req.stream
        try:
            peek = peek_request(req.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # Only a configured alias can produce this (the client's own model was
            # checked by the translator): a 400 naming it beats a bare 500.
            record.error_type = "invalid_request_error"
            return Failed(400, [_JSON], translation_error_body(TranslationError(
                f"model {req.model!r} maps to an invalid upstream model id ({exc})",
                param="model")))
        headers = request.scope["headers"]
        fwd, _, pinned = request_headers(headers)
        # ``user`` became metadata.user_id: the same session key as on /v1/messages.
        user = peek.metadata.user_id if peek.metadata is not None else None
        outgoing = OutgoingRequest("POST", "/v1/messages", fwd, None, req.body,
                                   needs_identity(peek.system))
        pool = request.loop.pool
        key = session_key(user, headers, req.body, pool.session_header) \
            if pool.affinity else None
        context = SelectionContext(model=req.model, session_key=key, headers=headers)
        return Prepared(Attempt(outgoing, pinned, context), _ChatAdapter(translator, req),
                        usage_from_body=True)


class _ModelsRoute:
    __slots__ = ("_owner",)
    name = "models"
    method = "GET"

    def __init__(self, owner: OpenAIRoute) -> None:
        self._owner = owner

    def refusal(self, failed: Failed) -> Failed:
        return _openai_refusal(failed)

    async def prepare(self, request: ClientRequest) -> Prepared | Failed:
        aliases = self._owner.aliases
        scope = request.scope
        fwd, _, pinned = request_headers(scope["headers"])
        model_id = api_path(scope).removeprefix("/v1/models").removeprefix("/") or None
        path = "/v1/models?limit=1000"
        if model_id is not None:
            path = "/v1/models/" + quote(aliases.get(model_id, model_id), safe="")
        outgoing = OutgoingRequest("GET", path, fwd)
        return Prepared(Attempt(outgoing, pinned), _ModelsAdapter(aliases, model_id))


class OpenAIRoute:
    """The OpenAI dialect: ``POST /v1/chat/completions`` and OpenAI-shaped ``/v1/models``.

    Parameters:
        translator: the :class:`OpenAITranslator` to use, with its own aliases and
            capabilities. By default one whose model capabilities come from the upstream's
            ``GET /v1/models`` (fetched before the first chat request, then hourly).
        model_aliases: client model name -> Anthropic model id, for the default translator
            and for the model list (aliases of listed models are listed too).

    Pass it as ``RotatingProxy(pool, openai=OpenAIRoute())`` (or ``openai=True``).
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
        self.chat = _ChatRoute(self)
        """The ``/v1/chat/completions`` route."""
        self.models = _ModelsRoute(self)
        """The ``/v1/models`` route for OpenAI clients."""

    async def refresh_capabilities(self, request: ClientRequest) -> bool:
        """Refresh model capabilities when due; ``True`` when they were just replaced."""
        # Which models take adaptive thinking or native JSON comes from the upstream's
        # own model list, fetched by one request an hour; the others never wait for it.
        now = time.monotonic()
        if not self._fetch_caps or self._caps_busy or now - self._caps_at < CAPABILITIES_TTL:
            return False
        self._caps_busy = True
        fetched = False
        try:
            probe = RequestRecord(request_id=request.record.request_id + "-models",
                                  started_at=time.time(), route="models", method="GET")
            outgoing = OutgoingRequest("GET", "/v1/models?limit=1000",
                                       [("anthropic-version", "2023-06-01")])
            loop = request.loop
            with anyio.move_on_after(5):
                # The loop's refresher matters: an OAuth token due for renewal must be
                # renewed first, or its 401 here would take the account out of rotation.
                outcome = await loop.run(Attempt(outgoing), probe)
                if isinstance(outcome, Won):
                    try:
                        caps = parse_model_capabilities(outcome.head[0])
                        fetched = True
                    except ValueError:  # msgspec.DecodeError: not a model list
                        caps = {}
                    finally:
                        with anyio.CancelScope(shield=True):
                            await outcome.response.aclose()
                            loop.pool.release(outcome.account.name)
                    self._caps.clear()
                    self._caps.update(caps)
        finally:
            # A failed fetch (every account cooling, say) is retried in a minute, not an hour.
            self._caps_at = now if fetched else now - CAPABILITIES_TTL + CAPABILITIES_RETRY
            self._caps_busy = False
        return fetched
