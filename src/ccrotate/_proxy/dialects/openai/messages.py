"""OpenAI ``messages`` -> Anthropic ``system`` + alternating ``messages``.

The Messages API wants strictly alternating user/assistant turns, a user turn first,
tool results as ``tool_result`` blocks at the *start* of the next user turn, and no empty
text blocks. OpenAI allows all of that to vary, so this module merges, reorders and drops
empties; it never drops content that carries meaning.
"""

from __future__ import annotations

import re

import msgspec

from ccrotate._exceptions import TranslationError
from ccrotate._proxy.dialects.openai import schema_anthropic as A
from ccrotate._proxy.dialects.openai import schema_openai as O
from ccrotate._proxy.dialects.openai.caps import ModelCapabilities

__all__ = ["Conversation", "convert_messages"]

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_ARGS_DECODER = msgspec.json.Decoder(dict[str, msgspec.Raw])
_EMPTY_OBJECT = msgspec.Raw(b"{}")
# Anthropic wants a user turn first; this stands in when a chat opens with an assistant
# greeting (the same placeholder LiteLLM uses).
OPENING_PLACEHOLDER = "."


class Conversation(msgspec.Struct):
    system: list[A.TextBlock]
    turns: list[A.MessageParam]
    # The last assistant turn called tools: manual-budget thinking cannot continue
    # such a turn without its signed thinking block, which OpenAI clients do not keep.
    tool_loop: bool = False


def _unsupported(message: str, param: str) -> TranslationError:
    return TranslationError(message, param=param, code="unsupported_value")


def _safe_id(raw: str) -> str:
    # The Messages API wants ^[A-Za-z0-9_-]+$; other providers' ids (e.g.
    # "functions.get_weather:0") are mapped the same way on both sides of the pair.
    return _BAD_ID_CHARS.sub("_", raw) if _BAD_ID_CHARS.search(raw) else raw


def _empty_id(param: str) -> TranslationError:
    return TranslationError("tool call id must not be empty", param=param,
                            code="invalid_value")


def _data_url(url: str, param: str) -> tuple[str, str]:
    header, sep, data = url[5:].partition(",")
    media_type, _, params = header.partition(";")
    if not sep or "base64" not in params.split(";"):
        raise _unsupported("data URLs must be base64 encoded ('data:<type>;base64,...')",
                           param)
    return media_type.strip().lower(), data


def _image(part: O.ImagePart, caps: ModelCapabilities | None, param: str) -> A.ImageBlock:
    if caps is not None and not caps.image_input:
        raise _unsupported("this model does not accept images", param)
    url = part.image_url.url
    if url.startswith("data:"):
        media_type, data = _data_url(url, param)
        if media_type == "image/jpg":
            media_type = "image/jpeg"
        if media_type not in _IMAGE_TYPES:
            raise _unsupported(
                f"image type {media_type!r} is not supported; use image/jpeg, image/png, "
                "image/gif or image/webp", param)
        return A.ImageBlock(A.Base64Source(media_type=media_type, data=data))
    if url.startswith("https://"):
        return A.ImageBlock(A.URLSource(url))
    raise _unsupported("image_url must be an https:// URL or a base64 data: URL", param)


def _document(part: O.FilePart, caps: ModelCapabilities | None, param: str) -> A.DocumentBlock:
    ref = part.file
    if ref.file_data is None:
        raise _unsupported("only inline PDF files (file.file_data) are supported; "
                           "uploaded files (file_id) are not", param)
    if caps is not None and not caps.pdf_input:
        raise _unsupported("this model does not accept PDF documents", param)
    data = ref.file_data
    if data.startswith("data:"):
        media_type, data = _data_url(data, param)
        if media_type != "application/pdf":
            raise _unsupported(f"file type {media_type!r} is not supported; only "
                               "application/pdf", param)
    return A.DocumentBlock(A.Base64Source(media_type="application/pdf", data=data))


# Parameter paths such as ``messages[3].content[1]`` are only formatted when an error
# is raised: building them for every message would be most of the translation's cost.


def _text_parts(content: str | list[O.Part], i: int, *, refusal: bool = False,
                ) -> list[A.TextBlock]:
    if isinstance(content, str):
        return [A.TextBlock(content)] if content else []
    blocks = []
    for j, part in enumerate(content):
        if isinstance(part, O.TextPart):
            text = part.text
        elif refusal and isinstance(part, O.RefusalPart):
            text = part.refusal
        else:
            raise _unsupported("only text content parts are allowed here",
                               f"messages[{i}].content[{j}]")
        if text:
            blocks.append(A.TextBlock(text))
    return blocks


def _user_parts(content: str | list[O.Part], caps: ModelCapabilities | None, i: int,
                ) -> list[A.Block]:
    if isinstance(content, str):
        return [A.TextBlock(content)] if content else []
    blocks: list[A.Block] = []
    for j, part in enumerate(content):
        if isinstance(part, O.TextPart):
            if part.text:
                blocks.append(A.TextBlock(part.text))
        elif isinstance(part, O.ImagePart):
            blocks.append(_image(part, caps, f"messages[{i}].content[{j}]"))
        elif isinstance(part, O.FilePart):
            blocks.append(_document(part, caps, f"messages[{i}].content[{j}]"))
        else:
            kind = type(part).__struct_config__.tag
            raise _unsupported(f"content part type {kind!r} is not supported",
                               f"messages[{i}].content[{j}]")
    return blocks


def _tool_use(call: O.ToolCall, i: int, k: int) -> A.ToolUseBlock:
    fn = call.function
    if call.type != "function" or fn is None:
        raise _unsupported(f"tool call type {call.type!r} is not supported",
                           f"messages[{i}].tool_calls[{k}]")
    raw = _EMPTY_OBJECT
    if fn.arguments and not fn.arguments.isspace():
        encoded = fn.arguments.encode()
        try:
            _ARGS_DECODER.decode(encoded)
        except msgspec.DecodeError as exc:
            raise TranslationError(
                "function.arguments must be a JSON object encoded as a string",
                param=f"messages[{i}].tool_calls[{k}].function.arguments",
                code="invalid_value") from exc
        raw = msgspec.Raw(encoded)
    if not call.id:
        raise _empty_id(f"messages[{i}].tool_calls[{k}].id")
    return A.ToolUseBlock(id=_safe_id(call.id), name=fn.name, input=raw)


def _assistant_blocks(msg: O.AssistantMessage, i: int) -> list[A.Block]:
    if O.given(msg.audio):
        raise _unsupported("assistant audio is not supported", f"messages[{i}].audio")
    if O.given(msg.function_call):
        raise _unsupported("legacy function_call is not supported; use tool_calls",
                           f"messages[{i}].function_call")
    blocks: list[A.Block] = []
    if msg.content is not None:
        blocks.extend(_text_parts(msg.content, i, refusal=True))
    elif msg.refusal:
        blocks.append(A.TextBlock(msg.refusal))
    if msg.tool_calls:
        blocks.extend(_tool_use(call, i, k) for k, call in enumerate(msg.tool_calls))
    return blocks


def _tool_result(msg: O.ToolMessage, i: int) -> A.ToolResultBlock:
    content: str | list[A.TextBlock | A.ImageBlock] | None
    if isinstance(msg.content, str):
        content = msg.content or None
    else:
        content = list(_text_parts(msg.content, i)) or None
    if not msg.tool_call_id:
        raise _empty_id(f"messages[{i}].tool_call_id")
    return A.ToolResultBlock(tool_use_id=_safe_id(msg.tool_call_id), content=content)


def convert_messages(messages: list[O.Message], caps: ModelCapabilities | None,
                     ) -> Conversation:
    """Convert the OpenAI message list; raises TranslationError naming the bad part."""
    system: list[A.TextBlock] = []
    turns: list[A.MessageParam] = []
    reorder: set[int] = set()  # user turns where a tool_result follows other blocks
    for i, msg in enumerate(messages):
        blocks: list[A.Block]
        if isinstance(msg, O.UserMessage):
            role, blocks = "user", _user_parts(msg.content, caps, i)
        elif isinstance(msg, O.AssistantMessage):
            role, blocks = "assistant", _assistant_blocks(msg, i)
        elif isinstance(msg, O.ToolMessage):
            role, blocks = "user", [_tool_result(msg, i)]
        elif isinstance(msg, (O.SystemMessage, O.DeveloperMessage)):
            system.extend(_text_parts(msg.content, i))
            continue
        else:
            raise _unsupported("the legacy 'function' role is not supported; use 'tool' "
                               "messages with tool_call_id", f"messages[{i}].role")
        if not blocks:
            continue
        if turns and turns[-1].role == role:
            last = turns[-1].content
            if (isinstance(blocks[0], A.ToolResultBlock) and last
                    and not isinstance(last[-1], A.ToolResultBlock)):
                reorder.add(len(turns) - 1)
            last.extend(blocks)
        else:
            turns.append(A.MessageParam(role=role, content=blocks))
    for index in reorder:
        # Stable: tool results first, in their order, then everything else.
        turns[index].content.sort(key=lambda b: not isinstance(b, A.ToolResultBlock))
    if not turns:
        raise TranslationError("messages must contain at least one user or assistant "
                               "message with content", param="messages",
                               code="invalid_value")
    if turns[0].role != "user":
        turns.insert(0, A.MessageParam("user", [A.TextBlock(OPENING_PLACEHOLDER)]))
    tool_loop = False
    if turns[-1].role == "assistant":
        _strip_prefill(turns)
    else:
        last_assistant = turns[-2] if len(turns) > 1 else None
        tool_loop = last_assistant is not None and any(
            isinstance(b, A.ToolUseBlock) for b in last_assistant.content)
    return Conversation(system=system, turns=turns, tool_loop=tool_loop)


def _strip_prefill(turns: list[A.MessageParam]) -> None:
    # The API rejects a final assistant turn whose text ends in whitespace.
    content = turns[-1].content
    last = content[-1]
    if isinstance(last, A.TextBlock):
        text = last.text.rstrip()
        if text:
            content[-1] = A.TextBlock(text)
        else:
            content.pop()
            if not content:
                turns.pop()
