"""Anthropic responses -> OpenAI ``chat.completion`` and model list bodies."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from msgspec import UNSET

from ccrotate._exceptions import UpstreamProtocolError
from ccrotate._proxy.dialects.openai import schema_anthropic as A
from ccrotate._proxy.dialects.openai import schema_openai as O

__all__ = ["chat_id", "finish_reason", "model_to_openai", "models_to_openai", "openai_usage",
           "response_body"]

_MODEL_DECODER = msgspec.json.Decoder(A.ModelInfo)

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def chat_id(message_id: str) -> str:
    """``msg_01Ab…`` -> ``chatcmpl-01Ab…``: stable, and traceable to the upstream id."""
    return "chatcmpl-" + message_id.removeprefix("msg_")


def finish_reason(stop_reason: str | None, tool_calls: bool) -> str:
    """OpenAI's finish_reason; a JSON-mode tool call alone finishes with ``stop``."""
    reason = FINISH_REASONS.get(stop_reason or "end_turn", "stop")
    if reason == "tool_calls" and not tool_calls:
        return "stop"
    return reason


def openai_usage(usage: A.Usage | None) -> O.OutUsage:
    """OpenAI usage: prompt tokens include cache reads and writes, as OpenAI counts them."""
    if usage is None:
        usage = A.Usage()
    read = usage.cache_read_input_tokens or 0
    write = usage.cache_creation_input_tokens or 0
    prompt = (usage.input_tokens or 0) + read + write
    completion = usage.output_tokens or 0
    details = usage.output_tokens_details
    return O.OutUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=O.PromptDetails(cached_tokens=read,
                                              cache_write_tokens=write or UNSET),
        completion_tokens_details=(O.CompletionDetails(details.thinking_tokens)
                                   if details is not None else UNSET),
    )


def _arguments(raw: msgspec.Raw) -> str:
    return bytes(raw).decode() if len(raw) else "{}"


def response_body(body: bytes, *, model: str, created: int, json_tool: str | None) -> bytes:
    """Translate a non-streamed Messages API response into a chat.completion body."""
    try:
        message = A.MESSAGE_DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise UpstreamProtocolError(f"upstream response is not a message: {exc}") from exc
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[O.OutToolCall] = []
    json_answer: str | None = None
    for block in message.content:
        kind = block.type
        if kind == "text" and block.text:
            texts.append(block.text)
        elif kind == "thinking" and block.thinking:
            thoughts.append(block.thinking)
        elif kind == "tool_use":
            name = block.name or ""
            if json_tool is not None and name == json_tool:
                json_answer = _arguments(block.input)
            else:
                calls.append(O.OutToolCall(
                    id=block.id or "", function=O.OutFunction(name, _arguments(block.input))))
    # In JSON mode the answer is the tool input alone: any text around it would make the
    # content unparseable.
    content = json_answer if json_answer is not None else ("".join(texts) or None)
    out = O.ChatCompletion(
        id=chat_id(message.id),
        created=created,
        model=model,
        choices=[O.OutChoice(
            message=O.OutMessage(
                content=content,
                tool_calls=calls or UNSET,
                reasoning_content="".join(thoughts) or UNSET,
            ),
            finish_reason=finish_reason(message.stop_reason, bool(calls)),
        )],
        usage=openai_usage(message.usage),
    )
    return O.ENCODER.encode(out)


def models_to_openai(anthropic_models_body: bytes, *,
                     aliases: Mapping[str, str] | None = None) -> bytes:
    """Translate ``GET /v1/models`` into OpenAI's model list.

    Aliases whose target is in the list are listed too, under the alias name, so a client
    that picks from ``/v1/models`` can find them. Raises UpstreamProtocolError on a body
    that is not a model list.
    """
    try:
        page = A.MODELS_DECODER.decode(anthropic_models_body)
    except msgspec.DecodeError as exc:
        raise UpstreamProtocolError(f"upstream model list is malformed: {exc}") from exc
    created = {info.id: int(info.created_at.timestamp()) if info.created_at else 0
               for info in page.data}
    data = [O.OutModel(id=model_id, created=when) for model_id, when in created.items()]
    for alias, target in (aliases or {}).items():
        if target in created and alias not in created:
            data.append(O.OutModel(id=alias, created=created[target]))
    return O.ENCODER.encode(O.ModelList(data=data))


def model_to_openai(anthropic_model_body: bytes, *, model_id: str | None = None) -> bytes:
    """Translate ``GET /v1/models/{id}`` into OpenAI's model object.

    ``model_id`` replaces the upstream id (the alias the client asked for). Raises
    UpstreamProtocolError on a body that is not a model.
    """
    try:
        info = _MODEL_DECODER.decode(anthropic_model_body)
    except msgspec.DecodeError as exc:
        raise UpstreamProtocolError(f"upstream model is malformed: {exc}") from exc
    created = int(info.created_at.timestamp()) if info.created_at else 0
    return O.ENCODER.encode(O.OutModel(id=model_id or info.id, created=created))
