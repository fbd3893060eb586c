"""The public face of the translation: ``OpenAITranslator`` and ``TranslatedRequest``."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgspec

from ccrotate._exceptions import TranslationError
from ccrotate._proxy.dialects.openai import schema_anthropic as A
from ccrotate._proxy.dialects.openai import schema_openai as O
from ccrotate._proxy.dialects.openai.caps import ModelCapabilities
from ccrotate._proxy.dialects.openai.errors import from_validation_error
from ccrotate._proxy.dialects.openai.request import JSONMode, Sampling, build_request
from ccrotate._proxy.dialects.openai.response import response_body
from ccrotate._proxy.dialects.openai.stream import StreamTranslator
from ccrotate._wire import MODEL_ID_MAX, USER_ID_MAX, valid_model_id, valid_user_id

__all__ = ["CapabilitySource", "OpenAITranslator", "TranslatedRequest"]

CapabilitySource = Mapping[str, ModelCapabilities] | Callable[[str], ModelCapabilities | None]


@dataclass(frozen=True, slots=True)
class TranslatedRequest:
    """An OpenAI request turned into a Messages API request.

    Attributes:
        body: the ``POST /v1/messages`` JSON body.
        model: the Anthropic model id (after aliasing).
        openai_model: the model name the client asked for; responses echo it back.
        stream: whether the client asked for a stream (the body asks for one too).
        include_usage: whether the stream must end with a usage chunk.
        created: the ``created`` timestamp that every response chunk carries.
        json_tool: the name of the tool that carries the JSON-mode answer, if any.
    """

    body: bytes
    model: str
    openai_model: str
    stream: bool
    include_usage: bool
    created: int
    json_tool: str | None = None


class OpenAITranslator:
    """Translate OpenAI chat-completions traffic to and from the Messages API.

    Pure functions of their inputs (no I/O); one instance serves any number of
    concurrent requests. Parameters:

    - ``model_aliases``: client model name -> Anthropic model id (``gpt-4o`` ->
      ``claude-sonnet-4-6``); other names pass through unchanged.
    - ``default_max_tokens``: ``max_tokens`` when the client sets neither
      ``max_tokens`` nor ``max_completion_tokens`` (the Messages API requires one).
    - ``json_mode``: how ``response_format`` JSON is obtained. ``"tool"`` forces a single
      tool whose input is the answer (works on every model); ``"native"`` sends a
      ``json_schema`` as ``output_config.format`` (structured outputs); ``"auto"`` uses
      native structured outputs where the model's capabilities say so, the tool otherwise.
    - ``sampling``: ``"forward"`` sends ``temperature``/``top_p`` (0..1); ``"drop"`` never
      sends them, for pools of models that reject sampling parameters (Opus 4.7 and later).
    - ``capabilities``: model id -> :class:`ModelCapabilities` (a mapping, or a callable
      returning ``None`` for unknown models), e.g. from ``parse_model_capabilities``.
    - ``prompt_cache``: add top-level ``cache_control`` so the upstream caches the prompt
      automatically, as OpenAI does.
    """

    __slots__ = ("_aliases", "_caps", "_default_max_tokens", "_json_mode", "_prompt_cache",
                 "_sampling")

    def __init__(self, *, model_aliases: Mapping[str, str] | None = None,
                 default_max_tokens: int = 4096, json_mode: JSONMode = "auto",
                 sampling: Sampling = "forward",
                 capabilities: CapabilitySource | None = None,
                 prompt_cache: bool = False) -> None:
        if default_max_tokens < 1:
            raise ValueError("default_max_tokens must be at least 1")
        if json_mode not in ("auto", "tool", "native"):
            raise ValueError(f"json_mode must be 'auto', 'tool' or 'native', not {json_mode!r}")
        if sampling not in ("forward", "drop"):
            raise ValueError(f"sampling must be 'forward' or 'drop', not {sampling!r}")
        self._aliases = dict(model_aliases or {})
        self._default_max_tokens = default_max_tokens
        self._json_mode: JSONMode = json_mode
        self._sampling: Sampling = sampling
        self._prompt_cache = prompt_cache
        self._caps: Callable[[str], ModelCapabilities | None] | None = (
            capabilities if capabilities is None or callable(capabilities)
            else capabilities.get)

    def __repr__(self) -> str:
        return (f"OpenAITranslator(model_aliases={self._aliases!r}, "
                f"default_max_tokens={self._default_max_tokens}, "
                f"json_mode={self._json_mode!r}, sampling={self._sampling!r}, "
                f"prompt_cache={self._prompt_cache})")

    def translate_request(self, body: bytes) -> TranslatedRequest:
        """Translate a ``/v1/chat/completions`` body.

        Raises TranslationError (with ``param`` naming the culprit) for malformed JSON,
        invalid values and parameters that have no Messages API equivalent; answer it
        with status 400 and :func:`translation_error_body`.
        """
        try:
            return self._translate_request(body)
        except RecursionError:
            # msgspec raises it for deep nesting (against Python's recursion limit), in
            # decoding or re-encoding; it is the client's malformed body, not a 500.
            raise TranslationError("request body is not valid JSON: it is nested too deeply",
                                   code="invalid_json") from None

    def _translate_request(self, body: bytes) -> TranslatedRequest:
        try:
            req = O.REQUEST_DECODER.decode(body)
        except msgspec.ValidationError as exc:
            raise from_validation_error(exc) from exc
        except msgspec.DecodeError as exc:
            raise TranslationError(f"request body is not valid JSON: {exc}",
                                   code="invalid_json") from exc
        if not req.model:
            raise TranslationError("model must not be empty", param="model",
                                   code="invalid_value")
        # The model and user end up in the access log, metric labels and affinity
        # keys: the same bounds as on /v1/messages (see ccrotate._wire).
        if not valid_model_id(req.model):
            raise TranslationError(
                f"model must be at most {MODEL_ID_MAX} characters of letters, digits and "
                "._:@/[]- starting with a letter or digit", param="model",
                code="invalid_value")
        for param, value in (("user", req.user), ("safety_identifier", req.safety_identifier)):
            if value is not None and not valid_user_id(value):
                raise TranslationError(
                    f"{param} must be at most {USER_ID_MAX} characters without control "
                    "characters", param=param, code="invalid_value")
        model = self._aliases.get(req.model, req.model)
        caps = self._caps(model) if self._caps is not None else None
        message, json_tool = build_request(
            req, model, caps, default_max_tokens=self._default_max_tokens,
            json_mode=self._json_mode, sampling=self._sampling,
            prompt_cache=self._prompt_cache)
        stream = bool(req.stream)
        options = req.stream_options
        return TranslatedRequest(
            body=A.REQUEST_ENCODER.encode(message),
            model=model,
            openai_model=req.model,
            stream=stream,
            include_usage=stream and options is not None and bool(options.include_usage),
            created=int(time.time()),
            json_tool=json_tool,
        )

    def translate_response(self, anthropic_body: bytes, req: TranslatedRequest) -> bytes:
        """Translate a non-streamed ``/v1/messages`` 200 body into a chat.completion body.

        Raises UpstreamProtocolError if the body is not a Messages API message.
        """
        return response_body(anthropic_body, model=req.openai_model, created=req.created,
                             json_tool=req.json_tool)

    def stream_translator(self, req: TranslatedRequest) -> StreamTranslator:
        """A fresh :class:`StreamTranslator` for one streamed response to ``req``."""
        return StreamTranslator(model=req.openai_model, created=req.created,
                                include_usage=req.include_usage, json_tool=req.json_tool)
