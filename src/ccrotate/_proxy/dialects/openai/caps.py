"""What a model accepts, as far as the translation needs to know.

The Messages API answers this itself: ``GET /v1/models`` carries a ``capabilities`` object
per model. Reading it beats a hard-coded model list, which the upstream outdates with every
release (Opus 4.7 dropped ``budget_tokens`` thinking and sampling parameters; Haiku 4.5
never had adaptive thinking).
"""

from __future__ import annotations

import msgspec

from ccrotate._proxy.dialects.openai import schema_anthropic as A

__all__ = ["EFFORT_LEVELS", "ModelCapabilities", "parse_model_capabilities"]

# Ordered weakest first: an unsupported level steps down to the nearest supported one.
EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")


class ModelCapabilities(msgspec.Struct, frozen=True, kw_only=True):
    """The capabilities of one model that change how a request is translated.

    Build them from the upstream's model list with :func:`parse_model_capabilities`, or by
    hand. A model the translator has no capabilities for gets the choices documented in
    ``docs/openai.md`` (adaptive thinking, forced-tool JSON mode).

    Parameters:
        thinking_adaptive: accepts ``thinking: {"type": "adaptive"}``.
        thinking_enabled: accepts ``thinking: {"type": "enabled", "budget_tokens": N}``.
        thinking_disabled: accepts ``thinking: {"type": "disabled"}``.
        effort_levels: the ``output_config.effort`` levels accepted (empty: none).
        structured_outputs: accepts ``output_config.format`` and strict tool schemas.
        image_input: accepts image blocks.
        pdf_input: accepts PDF document blocks.
        max_tokens: the largest ``max_tokens`` the model accepts, if known.
    """

    thinking_adaptive: bool = False
    thinking_enabled: bool = False
    thinking_disabled: bool = True
    effort_levels: frozenset[str] = frozenset()
    structured_outputs: bool = False
    image_input: bool = True
    pdf_input: bool = True
    max_tokens: int | None = None

    def effort(self, wanted: str) -> str | None:
        """The supported effort level nearest to ``wanted`` (stepping down first)."""
        if not self.effort_levels:
            return None
        if wanted in self.effort_levels:
            return wanted
        rank = EFFORT_LEVELS.index(wanted)
        for level in reversed(EFFORT_LEVELS[:rank]):
            if level in self.effort_levels:
                return level
        for level in EFFORT_LEVELS[rank + 1 :]:
            if level in self.effort_levels:
                return level
        return None


def _from_info(info: A.ModelInfo, caps: A.Capabilities) -> ModelCapabilities:
    effort = caps.effort
    levels = frozenset(
        name for name in EFFORT_LEVELS if effort.supported and getattr(effort, name).supported
    )
    types = caps.thinking.types
    return ModelCapabilities(
        thinking_adaptive=caps.thinking.supported and types.adaptive.supported,
        thinking_enabled=caps.thinking.supported and types.enabled.supported,
        thinking_disabled=types.disabled.supported,
        effort_levels=levels,
        structured_outputs=caps.structured_outputs.supported,
        image_input=caps.image_input.supported,
        pdf_input=caps.pdf_input.supported,
        max_tokens=info.max_tokens,
    )


def parse_model_capabilities(models_body: bytes) -> dict[str, ModelCapabilities]:
    """Read ``GET /v1/models`` (one page) into capabilities keyed by model id.

    Models listed without a ``capabilities`` object are left out, so they count as
    unknown rather than as supporting nothing. Raises ``msgspec.DecodeError`` on a body
    that is not a model list.
    """
    page = A.MODELS_DECODER.decode(models_body)
    return {
        info.id: _from_info(info, info.capabilities)
        for info in page.data
        if info.capabilities is not None
    }
