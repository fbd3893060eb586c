"""The Anthropic Messages API wire shapes that the translator writes and reads.

Request structs are encode-only. Content blocks are tagged on ``type`` so msgspec writes
the tag itself; ``omit_defaults`` leaves every ``None`` option out of the body, which
matters because the API rejects some keys even at their default (sampling parameters on
newer models).

Response and stream structs are decode-only and deliberately flat: one ``StreamEvent``
with optional fields instead of a tagged union, so an event or block type added by
Anthropic later decodes fine and is skipped instead of failing the stream. Text-like
delta fields are ``Raw``: the JSON string literal is copied into the OpenAI chunk as is,
never unescaped and re-escaped.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from msgspec import Raw, Struct

EMPTY_RAW = Raw()

# ---------------------------------------------------------------- request (encode only)


class Base64Source(Struct, tag_field="type", tag="base64"):
    media_type: str
    data: str


class URLSource(Struct, tag_field="type", tag="url"):
    url: str


class TextBlock(Struct, tag_field="type", tag="text"):
    text: str


class ImageBlock(Struct, tag_field="type", tag="image"):
    source: Base64Source | URLSource


class DocumentBlock(Struct, tag_field="type", tag="document"):
    source: Base64Source


class ToolUseBlock(Struct, tag_field="type", tag="tool_use"):
    id: str
    name: str
    input: Raw


class ToolResultBlock(Struct, tag_field="type", tag="tool_result", omit_defaults=True):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] | None = None


Block = TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock


class MessageParam(Struct):
    role: str
    content: list[Block]


class ToolParam(Struct, omit_defaults=True):
    name: str
    input_schema: Raw
    description: str | None = None
    strict: bool | None = None


class ToolChoiceParam(Struct, omit_defaults=True):
    type: str
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingParam(Struct, omit_defaults=True):
    type: str
    budget_tokens: int | None = None


class JSONFormat(Struct):
    schema: Raw
    type: str = "json_schema"


class OutputConfig(Struct, omit_defaults=True):
    effort: str | None = None
    format: JSONFormat | None = None


class MetadataParam(Struct):
    user_id: str


class CacheControl(Struct):
    type: str = "ephemeral"


class MessagesRequest(Struct, omit_defaults=True, kw_only=True):
    model: str
    max_tokens: int
    system: list[TextBlock] | None = None
    messages: list[MessageParam]
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingParam | None = None
    output_config: OutputConfig | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: list[str] | None = None
    metadata: MetadataParam | None = None
    cache_control: CacheControl | None = None
    stream: bool | None = None


REQUEST_ENCODER = msgspec.json.Encoder()

# ---------------------------------------------------------------- response (decode only)


class OutputTokensDetails(Struct, gc=False):
    thinking_tokens: int = 0


class Usage(Struct, gc=False):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    output_tokens_details: OutputTokensDetails | None = None


class ResponseBlock(Struct, gc=False):
    type: str
    text: str | None = None
    thinking: str | None = None
    id: str | None = None
    name: str | None = None
    input: Raw = EMPTY_RAW


class Message(Struct, gc=False):
    id: str
    content: list[ResponseBlock]
    stop_reason: str | None = None
    usage: Usage | None = None


MESSAGE_DECODER = msgspec.json.Decoder(Message)

# ---------------------------------------------------------------- stream (decode only)


class StreamDelta(Struct, gc=False):
    type: str | None = None
    text: Raw = EMPTY_RAW
    partial_json: Raw = EMPTY_RAW
    thinking: Raw = EMPTY_RAW
    stop_reason: str | None = None


class StreamBlock(Struct, gc=False):
    type: str
    id: str | None = None
    name: str | None = None
    text: Raw = EMPTY_RAW
    thinking: Raw = EMPTY_RAW


class StreamMessage(Struct, gc=False):
    id: str = ""
    usage: Usage | None = None


class ErrorInfo(Struct, gc=False):
    type: str = "api_error"
    message: str = ""


class StreamEvent(Struct, gc=False):
    type: str
    index: int = 0
    delta: StreamDelta | None = None
    content_block: StreamBlock | None = None
    message: StreamMessage | None = None
    usage: Usage | None = None
    error: ErrorInfo | None = None


EVENT_DECODER = msgspec.json.Decoder(StreamEvent)

# ---------------------------------------------------------------- errors and models


class ErrorDetails(Struct, gc=False):
    error_code: str | None = None


class ErrorPayload(Struct, gc=False):
    type: str | None = None
    message: str | None = None
    details: ErrorDetails | None = None


class ErrorEnvelope(Struct, gc=False):
    error: ErrorPayload | None = None


ERROR_DECODER = msgspec.json.Decoder(ErrorEnvelope)


class Support(Struct, frozen=True, gc=False):
    supported: bool = False


class ThinkingTypes(Struct, frozen=True, gc=False):
    adaptive: Support = Support()
    enabled: Support = Support()
    disabled: Support = Support(supported=True)


class ThinkingCap(Struct, frozen=True, gc=False):
    supported: bool = False
    types: ThinkingTypes = ThinkingTypes()


class EffortCap(Struct, frozen=True, gc=False):
    supported: bool = False
    low: Support = Support()
    medium: Support = Support()
    high: Support = Support()
    xhigh: Support = Support()
    max: Support = Support()


class Capabilities(Struct, frozen=True, gc=False):
    thinking: ThinkingCap = ThinkingCap()
    effort: EffortCap = EffortCap()
    structured_outputs: Support = Support()
    image_input: Support = Support(supported=True)
    pdf_input: Support = Support(supported=True)


class ModelInfo(Struct, gc=False):
    id: str
    created_at: datetime | None = None
    max_tokens: int | None = None
    capabilities: Capabilities | None = None


class ModelsPage(Struct, gc=False):
    data: list[ModelInfo]


MODELS_DECODER = msgspec.json.Decoder(ModelsPage)
