"""The OpenAI chat-completions wire shapes that the translator reads and writes.

Request structs are decode-only: every optional field defaults to ``None`` so that an
explicit JSON ``null`` (which many clients send for "not set") means the same as an absent
key. The top-level request forbids unknown fields, as OpenAI does ("Unrecognized request
argument supplied"): a parameter this module does not know cannot be silently dropped.
Structs below the top level ignore unknown keys, because clients decorate messages with
extras (``name``, vendor hints) that carry no meaning here.

``gc=False`` is safe on decode-only structs (they never form reference cycles) and makes
decoding large message lists cheaper.

Response structs are encode-only; ``UNSET`` fields are left out of the JSON.
"""

from __future__ import annotations

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType

# msgspec cannot put Raw in a union, so an absent raw field is this empty Raw, and an
# explicit JSON null is Raw(b"null"): use ``given()`` to test for a real value.
NO_RAW = Raw()
_NULL = b"null"


def given(raw: Raw) -> bool:
    """Whether a raw field holds a value (neither absent nor JSON ``null``)."""
    size = len(raw)
    return size > 0 and not (size == 4 and bytes(raw) == _NULL)

# ---------------------------------------------------------------- request: content parts


class ImageURL(Struct, gc=False):
    url: str
    detail: str | None = None


class FileRef(Struct, gc=False):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class TextPart(Struct, tag_field="type", tag="text", gc=False):
    text: str


class ImagePart(Struct, tag_field="type", tag="image_url", gc=False):
    image_url: ImageURL


class AudioPart(Struct, tag_field="type", tag="input_audio", gc=False):
    pass


class FilePart(Struct, tag_field="type", tag="file", gc=False):
    file: FileRef


class RefusalPart(Struct, tag_field="type", tag="refusal", gc=False):
    refusal: str


# Every part type is accepted by the decoder so that the translator can name the
# unsupported ones itself (``messages[i].content[j]``) instead of a decoder message.
Part = TextPart | ImagePart | AudioPart | FilePart | RefusalPart

# ---------------------------------------------------------------- request: messages


class FunctionCall(Struct, gc=False):
    name: str
    arguments: str = ""


class ToolCall(Struct, gc=False):
    # Not a tagged union: some clients omit ``type`` on echoed tool calls.
    id: str
    type: str = "function"
    function: FunctionCall | None = None


class SystemMessage(Struct, tag_field="role", tag="system", gc=False):
    content: str | list[Part]


class DeveloperMessage(Struct, tag_field="role", tag="developer", gc=False):
    content: str | list[Part]


class UserMessage(Struct, tag_field="role", tag="user", gc=False):
    content: str | list[Part]


class AssistantMessage(Struct, tag_field="role", tag="assistant", gc=False):
    content: str | list[Part] | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None
    audio: Raw = NO_RAW
    function_call: Raw = NO_RAW


class ToolMessage(Struct, tag_field="role", tag="tool", gc=False):
    tool_call_id: str
    content: str | list[Part] = ""


class FunctionMessage(Struct, tag_field="role", tag="function", gc=False):
    # Legacy role: decoded only so that the error can name it.
    pass


Message = (
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage
    | FunctionMessage
)

# ---------------------------------------------------------------- request: tools


class FunctionDef(Struct, gc=False):
    name: str
    description: str | None = None
    # Kept as raw JSON: the schema is copied byte for byte into ``input_schema``.
    parameters: Raw = NO_RAW
    strict: bool | None = None


class FunctionTool(Struct, tag_field="type", tag="function", gc=False):
    function: FunctionDef


class CustomTool(Struct, tag_field="type", tag="custom", gc=False):
    pass


Tool = FunctionTool | CustomTool


class ToolName(Struct, gc=False):
    name: str


class NamedToolChoice(Struct, tag_field="type", tag="function", gc=False):
    function: ToolName


class AllowedToolRef(Struct, gc=False):
    type: str = "function"
    function: ToolName | None = None


class AllowedTools(Struct, gc=False):
    mode: str
    tools: list[AllowedToolRef]


class AllowedToolsChoice(Struct, tag_field="type", tag="allowed_tools", gc=False):
    allowed_tools: AllowedTools


class CustomToolChoice(Struct, tag_field="type", tag="custom", gc=False):
    pass


ToolChoice = str | NamedToolChoice | AllowedToolsChoice | CustomToolChoice

# ---------------------------------------------------------------- request: formats


class JSONSchemaSpec(Struct, gc=False):
    name: str = "json_response"
    description: str | None = None
    schema: Raw = NO_RAW
    strict: bool | None = None


class TextFormat(Struct, tag_field="type", tag="text", gc=False):
    pass


class JSONObjectFormat(Struct, tag_field="type", tag="json_object", gc=False):
    pass


class JSONSchemaFormat(Struct, tag_field="type", tag="json_schema", gc=False):
    json_schema: JSONSchemaSpec


ResponseFormat = TextFormat | JSONObjectFormat | JSONSchemaFormat


class StreamOptions(Struct, gc=False):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatRequest(Struct, forbid_unknown_fields=True, gc=False):
    """``POST /v1/chat/completions`` body; fields sorted as in the OpenAI reference."""

    model: str
    messages: list[Message]
    audio: Raw = NO_RAW
    frequency_penalty: float | None = None
    function_call: Raw = NO_RAW
    functions: Raw = NO_RAW
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    max_completion_tokens: int | None = None
    max_tokens: int | None = None
    metadata: Raw = NO_RAW
    modalities: list[str] | None = None
    moderation: Raw = NO_RAW
    n: int | None = None
    parallel_tool_calls: bool | None = None
    prediction: Raw = NO_RAW
    presence_penalty: float | None = None
    prompt_cache_key: str | None = None
    prompt_cache_options: Raw = NO_RAW
    prompt_cache_retention: str | None = None
    reasoning_effort: str | None = None
    response_format: ResponseFormat | None = None
    safety_identifier: str | None = None
    seed: int | None = None
    service_tier: str | None = None
    stop: str | list[str] | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    tool_choice: ToolChoice | None = None
    tools: list[Tool] | None = None
    top_logprobs: int | None = None
    top_p: float | None = None
    user: str | None = None
    verbosity: str | None = None
    web_search_options: Raw = NO_RAW


REQUEST_DECODER = msgspec.json.Decoder(ChatRequest)

# ---------------------------------------------------------------- response (encode only)


class OutFunction(Struct):
    name: str
    arguments: str


class OutToolCall(Struct, kw_only=True):
    id: str
    type: str = "function"
    function: OutFunction


class OutMessage(Struct, kw_only=True):
    role: str = "assistant"
    content: str | None
    refusal: None = None
    tool_calls: list[OutToolCall] | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET


class OutChoice(Struct, kw_only=True):
    index: int = 0
    message: OutMessage
    logprobs: None = None
    finish_reason: str


class PromptDetails(Struct):
    cached_tokens: int
    cache_write_tokens: int | UnsetType = UNSET


class CompletionDetails(Struct):
    reasoning_tokens: int


class OutUsage(Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptDetails
    completion_tokens_details: CompletionDetails | UnsetType = UNSET


class ChatCompletion(Struct, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[OutChoice]
    usage: OutUsage


class OutModel(Struct, kw_only=True):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "anthropic"


class ModelList(Struct, kw_only=True):
    object: str = "list"
    data: list[OutModel]


class ErrorDetail(Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(Struct):
    error: ErrorDetail


ENCODER = msgspec.json.Encoder()
