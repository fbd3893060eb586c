"""OpenAI request parameters -> Messages API parameters (everything but ``messages``).

Each OpenAI parameter is either translated, ignored because it is a hint with no effect
on the answer (listed in ``docs/openai.md``), or rejected with a TranslationError naming
it. Nothing is dropped silently.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ccrotate._exceptions import TranslationError
from ccrotate._proxy.dialects.openai import schema_anthropic as A
from ccrotate._proxy.dialects.openai import schema_openai as O
from ccrotate._proxy.dialects.openai.caps import ModelCapabilities
from ccrotate._proxy.dialects.openai.messages import convert_messages

__all__ = ["JSON_TOOL", "JSONMode", "Sampling", "build_request"]

JSONMode = Literal["auto", "tool", "native"]
Sampling = Literal["forward", "drop"]

JSON_TOOL = "json_response"
_JSON_TOOL_DESCRIPTION = ("Give your final answer by calling this tool: its input is the "
                          "answer, as JSON.")
_ANY_OBJECT = msgspec.Raw(b'{"type":"object"}')
_EMPTY_SCHEMA = msgspec.Raw(b'{"type":"object","properties":{}}')

# reasoning_effort -> thinking budget. With adaptive thinking the budget is not sent but
# still sizes max_tokens, which covers thinking and answer alike.
_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576,
            "xhigh": 32768, "max": 49152}
_EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high",
            "xhigh": "xhigh", "max": "max"}


def _unsupported(param: str, message: str) -> TranslationError:
    return TranslationError(message, param=param, code="unsupported_parameter")


def _invalid(param: str, message: str) -> TranslationError:
    return TranslationError(message, param=param, code="invalid_value")


def _reject_unsupported(req: O.ChatRequest) -> None:
    # Fast path for the usual request that sets none of them (absent Raw has length 0).
    if (req.n is None and not (req.logprobs or req.top_logprobs or req.logit_bias
                               or req.presence_penalty or req.frequency_penalty
                               or req.modalities or req.verbosity)
            and not (len(req.audio) or len(req.prediction) or len(req.functions)
                     or len(req.function_call) or len(req.web_search_options)
                     or len(req.moderation))):
        return
    checks = (
        ("n", req.n is not None and req.n != 1,
         "only n=1 is supported: the Messages API returns one choice"),
        ("logprobs", bool(req.logprobs), "logprobs are not available from Claude"),
        ("top_logprobs", bool(req.top_logprobs), "logprobs are not available from Claude"),
        ("logit_bias", bool(req.logit_bias), "logit_bias has no Messages API equivalent"),
        ("presence_penalty", bool(req.presence_penalty),
         "presence_penalty has no Messages API equivalent"),
        ("frequency_penalty", bool(req.frequency_penalty),
         "frequency_penalty has no Messages API equivalent"),
        ("audio", O.given(req.audio), "audio output is not supported"),
        ("modalities", any(m != "text" for m in req.modalities or ()),
         "only the text modality is supported"),
        ("prediction", O.given(req.prediction), "predicted outputs are not supported"),
        ("functions", O.given(req.functions),
         "legacy functions are not supported; use tools"),
        ("function_call", O.given(req.function_call),
         "legacy function_call is not supported; use tool_choice"),
        ("web_search_options", O.given(req.web_search_options),
         "web_search_options is not supported"),
        ("moderation", O.given(req.moderation), "moderation is not supported"),
        ("verbosity", req.verbosity not in (None, "medium"),
         "verbosity has no Messages API equivalent (only 'medium' is accepted)"),
    )
    for param, bad, message in checks:
        if bad:
            raise _unsupported(param, message)


def _max_tokens(req: O.ChatRequest, default: int) -> tuple[int, bool]:
    if req.max_completion_tokens is not None:
        param, value = "max_completion_tokens", req.max_completion_tokens
    elif req.max_tokens is not None:
        param, value = "max_tokens", req.max_tokens
    else:
        return default, False
    if value < 1:
        raise _invalid(param, f"{param} must be at least 1")
    return value, True


def _tools(tools: list[O.Tool], caps: ModelCapabilities | None) -> list[A.ToolParam]:
    strict_ok = caps is not None and caps.structured_outputs
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, O.FunctionTool):
            raise _unsupported(f"tools[{i}]", "custom tools are not supported; use "
                               "function tools")
        fn = tool.function
        schema = fn.parameters if O.given(fn.parameters) else _EMPTY_SCHEMA
        # Strict schemas are only sent to models known to enforce them; elsewhere the
        # model still sees the schema, just without the guarantee.
        out.append(A.ToolParam(name=fn.name, input_schema=schema,
                               description=fn.description or None,
                               strict=True if fn.strict and strict_ok else None))
    return out


def _tool_choice(choice: O.ToolChoice | None, tools: list[A.ToolParam],
                 ) -> tuple[str, str | None, list[A.ToolParam]]:
    """(kind, tool name, tools) with kind one of unset/auto/none/any/tool."""
    if choice is None:
        return "unset", None, tools
    if isinstance(choice, str):
        kinds = {"auto": "auto", "none": "none", "required": "any"}
        if choice not in kinds:
            raise _invalid("tool_choice", f"unknown tool_choice {choice!r}")
        if choice == "required" and not tools:
            raise _invalid("tool_choice", "tool_choice 'required' needs tools")
        return kinds[choice], None, tools
    names = {tool.name for tool in tools}
    if isinstance(choice, O.NamedToolChoice):
        name = choice.function.name
        if name not in names:
            raise _invalid("tool_choice.function.name", f"no tool named {name!r} in tools")
        return "tool", name, tools
    if isinstance(choice, O.AllowedToolsChoice):
        allowed = choice.allowed_tools
        wanted = {ref.function.name for ref in allowed.tools if ref.function is not None}
        if not wanted or not wanted <= names:
            raise _invalid("tool_choice.allowed_tools.tools",
                           "allowed_tools must name function tools present in tools")
        modes = {"auto": "auto", "required": "any"}
        if allowed.mode not in modes:
            raise _invalid("tool_choice.allowed_tools.mode",
                           f"unknown allowed_tools mode {allowed.mode!r}")
        return modes[allowed.mode], None, [t for t in tools if t.name in wanted]
    raise _unsupported("tool_choice", "custom tool choice is not supported")


def _reasoning(effort: str | None, caps: ModelCapabilities | None, max_tokens: int,
               explicit: bool, tool_loop: bool,
               ) -> tuple[A.ThinkingParam | None, str | None, int]:
    if effort is None:
        return None, None, max_tokens
    if effort == "none":
        if caps is not None and not caps.thinking_disabled:
            raise _unsupported("reasoning_effort", "this model cannot turn reasoning off")
        return A.ThinkingParam("disabled"), None, max_tokens
    budget = _BUDGETS.get(effort)
    if budget is None:
        raise _invalid("reasoning_effort", f"unknown reasoning_effort {effort!r}")
    adaptive = caps is None or caps.thinking_adaptive
    if not adaptive and not (caps is not None and caps.thinking_enabled):
        raise _unsupported("reasoning_effort", "this model does not support reasoning")
    if not adaptive and tool_loop:
        # Manual-budget thinking cannot continue a tool-use turn without that turn's
        # signed thinking block, which OpenAI clients never send back: think next turn.
        return None, None, max_tokens
    answer = max_tokens
    if not (explicit and answer > budget):
        max_tokens = answer + budget
    if caps is not None and caps.max_tokens and max_tokens > caps.max_tokens:
        # Capped by the model: shrink the budget rather than the answer's share, which
        # keeps at least half of the total.
        max_tokens = caps.max_tokens
        budget = max(1024, min(budget, max_tokens - min(answer, max_tokens // 2)))
    if adaptive:
        level: str | None = _EFFORTS[effort]
        if caps is not None and level is not None:
            level = caps.effort(level)
        return A.ThinkingParam("adaptive"), level, max_tokens
    budget = max(1024, min(budget, max_tokens - 1))
    return A.ThinkingParam("enabled", budget_tokens=budget), None, max(max_tokens, budget + 1)


def _sampling(req: O.ChatRequest, mode: Sampling, thinking: bool,
              ) -> tuple[float | None, float | None]:
    if mode == "drop":
        return None, None
    temperature, top_p = req.temperature, req.top_p
    # 1 is the default of both APIs; leaving it out avoids a 400 from models that
    # reject any explicit sampling parameter.
    if temperature is not None:
        if not 0 <= temperature <= 1:
            raise _invalid("temperature", "temperature must be between 0 and 1 for Claude "
                           "(OpenAI's range above 1 has no equivalent)")
        if temperature == 1:
            temperature = None
        elif thinking:
            raise _unsupported("temperature", "temperature must be 1 or unset when "
                               "reasoning_effort is used")
    if top_p is not None:
        if not 0 <= top_p <= 1:
            raise _invalid("top_p", "top_p must be between 0 and 1")
        if top_p == 1:
            top_p = None
        elif thinking and top_p < 0.95:
            raise _unsupported("top_p", "top_p must be at least 0.95 when reasoning_effort "
                               "is used")
    return temperature, top_p


def _json_spec(fmt: O.ResponseFormat | None) -> tuple[msgspec.Raw, str | None, bool] | None:
    """(schema, description, has_schema) for a JSON response_format, else None."""
    if isinstance(fmt, O.JSONObjectFormat):
        return _ANY_OBJECT, None, False
    if isinstance(fmt, O.JSONSchemaFormat):
        spec = fmt.json_schema
        if O.given(spec.schema):
            return spec.schema, spec.description, True
        return _ANY_OBJECT, spec.description, False
    return None


def _json_mode(req: O.ChatRequest, caps: ModelCapabilities | None, json_mode: JSONMode,
               thinking_on: bool, kind: str, name: str | None, tools: list[A.ToolParam],
               ) -> tuple[str, str | None, str | None, A.JSONFormat | None]:
    """``response_format`` as native structured output or a forced JSON tool.

    Returns the tool choice kind and name (changed when a JSON tool is forced), the JSON
    tool's name when one is added to ``tools``, and the native output format.
    """
    spec = _json_spec(req.response_format)
    if spec is None or kind in ("any", "tool"):
        # With "required" or a named tool the reply is a tool call anyway, so the
        # response format cannot apply to this turn and is left out.
        return kind, name, None, None
    schema, description, has_schema = spec
    native = has_schema and (
        json_mode == "native"
        or (json_mode == "auto" and (thinking_on or (caps is not None
                                                     and caps.structured_outputs))))
    if native:
        return kind, name, None, A.JSONFormat(schema=schema)
    if thinking_on:
        raise _unsupported("response_format", "JSON mode without a json_schema cannot "
                           "be combined with reasoning_effort")
    json_tool = JSON_TOOL
    taken = {tool.name for tool in tools}
    while json_tool in taken:
        json_tool += "_"
    detail = f" {description}" if description else ""
    # Real tools stay callable ("any"); otherwise the JSON tool is forced.
    kind, name = ("any", None) if tools and kind != "none" else ("tool", json_tool)
    tools.append(A.ToolParam(name=json_tool, input_schema=schema,
                             description=_JSON_TOOL_DESCRIPTION + detail))
    return kind, name, json_tool, None


def build_request(req: O.ChatRequest, model: str, caps: ModelCapabilities | None, *,
                  default_max_tokens: int, json_mode: JSONMode, sampling: Sampling,
                  prompt_cache: bool) -> tuple[A.MessagesRequest, str | None]:
    """The Messages API request, and the name of the JSON-mode tool when one is used."""
    _reject_unsupported(req)
    conv = convert_messages(req.messages, caps)
    max_tokens, explicit = _max_tokens(req, default_max_tokens)
    tools = _tools(req.tools, caps) if req.tools else []
    kind, name, tools = _tool_choice(req.tool_choice, tools)
    thinking, effort, max_tokens = _reasoning(req.reasoning_effort, caps, max_tokens,
                                              explicit, conv.tool_loop)
    thinking_on = thinking is not None and thinking.type != "disabled"

    kind, name, json_tool, output_format = _json_mode(req, caps, json_mode, thinking_on,
                                                      kind, name, tools)
    if thinking_on and kind in ("any", "tool"):
        raise _unsupported("tool_choice", "a required or named tool_choice cannot be "
                           "combined with reasoning_effort")

    choice: A.ToolChoiceParam | None = None
    if tools:
        no_parallel = True if req.parallel_tool_calls is False and kind != "none" else None
        if kind != "unset" or no_parallel:
            choice = A.ToolChoiceParam("auto" if kind == "unset" else kind, name, no_parallel)

    temperature, top_p = _sampling(req, sampling, thinking_on)
    stops = [req.stop] if isinstance(req.stop, str) else req.stop or []
    stop_sequences = [s for s in stops if s] or None
    user = req.user or req.safety_identifier
    output = (A.OutputConfig(effort=effort, format=output_format)
              if effort is not None or output_format is not None else None)
    body = A.MessagesRequest(
        model=model,
        max_tokens=max_tokens,
        system=conv.system or None,
        messages=conv.turns,
        tools=tools or None,
        tool_choice=choice,
        thinking=thinking,
        output_config=output,
        temperature=temperature,
        top_p=top_p,
        stop_sequences=stop_sequences,
        metadata=A.MetadataParam(user) if user else None,
        cache_control=A.CacheControl() if prompt_cache else None,
        stream=True if req.stream else None,
    )
    return body, json_tool
