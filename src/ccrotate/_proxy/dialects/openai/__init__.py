"""OpenAI chat-completions <-> Anthropic Messages API translation (pure, no I/O).

``OpenAITranslator`` turns a ``POST /v1/chat/completions`` body into a ``/v1/messages``
body and turns the answer back, streamed or not. See ``docs/openai.md`` for every
mapping and every parameter that is ignored or refused.
"""

from __future__ import annotations

from ccrotate._proxy.dialects.openai.caps import ModelCapabilities, parse_model_capabilities
from ccrotate._proxy.dialects.openai.errors import anthropic_error_to_openai, translation_error_body
from ccrotate._proxy.dialects.openai.response import model_to_openai, models_to_openai
from ccrotate._proxy.dialects.openai.stream import StreamTranslator
from ccrotate._proxy.dialects.openai.translator import (
    CapabilitySource,
    OpenAITranslator,
    TranslatedRequest,
)

__all__ = [
    "CapabilitySource",
    "ModelCapabilities",
    "OpenAITranslator",
    "StreamTranslator",
    "TranslatedRequest",
    "anthropic_error_to_openai",
    "model_to_openai",
    "models_to_openai",
    "parse_model_capabilities",
    "translation_error_body",
]
