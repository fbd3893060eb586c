"""Wire-level pieces of the fake upstream: ids, JSON, SSE frames, error bodies, limit headers."""

from __future__ import annotations

import random
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

ENCODER = msgspec.json.Encoder()
DECODER = msgspec.json.Decoder()
encode = ENCODER.encode

OAUTH_BETA = "oauth-2025-04-20"
CLAUDE_CODE_CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
BILLING_PREFIX = "x-anthropic-billing-header:"
IDENTITY_LINES = frozenset({
    "You are Claude Code, Anthropic's official CLI for Claude.",
    "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
})
DEFAULT_MODELS: tuple[str, ...] = (
    "claude-opus-5-5",
    "claude-sonnet-5-5",
    "claude-haiku-5-5",
    "claude-opus-4-8",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
)

_ALPHABET = string.ascii_letters + string.digits


def make_id(prefix: str) -> str:
    """An id shaped like Anthropic's (``msg_01…``, ``req_01…``, ``toolu_01…``)."""
    return prefix + "_01" + "".join(random.choices(_ALPHABET, k=22))


def mask(credential: str | None) -> str:
    """A credential safe to show: only its last four characters."""
    if not credential:
        return "<none>"
    return "…" + credential[-4:]


def sse_frame(event: str, payload: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + ENCODER.encode(payload) + b"\n\n"


def error_body(error_type: str, message: str, request_id: str,
               details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if details is not None:
        error["details"] = dict(details)
    return {"type": "error", "error": error, "request_id": request_id}


def has_identity(system: Any) -> bool:
    """Whether ``system`` opens with a Claude Code identity line (the OAuth identity rule).

    Leading text blocks holding Claude Code's billing header are skipped first.
    """
    if isinstance(system, str):
        return system in IDENTITY_LINES
    if not isinstance(system, list):
        return False
    for block in system:
        if not isinstance(block, dict) or block.get("type") != "text":
            return False
        text = block.get("text")
        if not isinstance(text, str):
            return False
        if text.startswith(BILLING_PREFIX):
            continue
        return text in IDENTITY_LINES
    return False


# Keys whose string values are structure, not prose: they would skew the estimate.
_SKIP_KEYS = frozenset({"type", "role", "id", "tool_use_id", "cache_control", "signature",
                        "media_type", "data", "url", "file_id"})


def _text_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    if isinstance(value, dict):
        return sum(_text_chars(v) for k, v in value.items() if k not in _SKIP_KEYS)
    return 0


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """A deterministic token estimate: a quarter of the prose characters, at least 1."""
    chars = sum(_text_chars(body.get(key)) for key in ("system", "messages", "tools"))
    return max(1, chars // 4)


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Rate-limit state reported for one credential in every response's headers.

    OAuth (subscription) credentials report the ``anthropic-ratelimit-unified-*`` family
    from the utilization fields (0..1 fractions); API keys report the
    ``anthropic-ratelimit-{requests,tokens,…}-*`` family from the ``*_limit`` fields.
    ``status`` left ``None`` is derived: ``rejected`` at utilization >= 1,
    ``allowed_warning`` at >= ``warning_at``, else ``allowed``. An OAuth credential whose
    status is ``rejected`` gets 429 for requests that have nothing scripted.
    Reset times left ``None`` default to 5 hours / 7 days after the fake was created.
    """

    five_hour: float = 0.0
    seven_day: float = 0.0
    five_hour_reset: float | None = None
    seven_day_reset: float | None = None
    status: str | None = None
    representative_claim: str | None = None
    warning_at: float = 0.8
    requests_limit: int = 4000
    tokens_limit: int = 2_000_000
    input_tokens_limit: int = 2_000_000
    output_tokens_limit: int = 400_000

    def window_status(self, utilization: float) -> str:
        if utilization >= 1.0:
            return "rejected"
        if utilization >= self.warning_at:
            return "allowed_warning"
        return "allowed"

    def overall_status(self) -> str:
        if self.status is not None:
            return self.status
        return self.window_status(max(self.five_hour, self.seven_day))


def _fraction(value: float) -> str:
    return f"{min(max(value, 0.0), 1.0):.2f}".rstrip("0").rstrip(".") or "0"


def unified_limit_headers(limits: Limits, started: float) -> list[tuple[bytes, bytes]]:
    reset_5h = int(limits.five_hour_reset or started + 5 * 3600)
    reset_7d = int(limits.seven_day_reset or started + 7 * 86400)
    claim = limits.representative_claim or (
        "five_hour" if limits.five_hour >= limits.seven_day else "seven_day")
    reset = reset_7d if claim.startswith("seven_day") else reset_5h
    pairs = [
        ("status", limits.overall_status()),
        ("reset", str(reset)),
        ("representative-claim", claim),
        ("5h-status", limits.window_status(limits.five_hour)),
        ("5h-reset", str(reset_5h)),
        ("5h-utilization", _fraction(limits.five_hour)),
        ("7d-status", limits.window_status(limits.seven_day)),
        ("7d-reset", str(reset_7d)),
        ("7d-utilization", _fraction(limits.seven_day)),
    ]
    return [(b"anthropic-ratelimit-unified-" + k.encode(), v.encode()) for k, v in pairs]


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_key_limit_headers(limits: Limits, *, requests_used: int, tokens_used: int,
                          reset_in: float = 60.0,
                          exhausted: bool = False) -> list[tuple[bytes, bytes]]:
    reset = rfc3339(time.time() + reset_in).encode()
    out: list[tuple[bytes, bytes]] = []
    for name, limit, used in (
        ("requests", limits.requests_limit, requests_used),
        ("tokens", limits.tokens_limit, tokens_used),
        ("input-tokens", limits.input_tokens_limit, tokens_used),
        ("output-tokens", limits.output_tokens_limit, 0),
    ):
        remaining = 0 if exhausted and name == "requests" else max(0, limit - used)
        prefix = b"anthropic-ratelimit-" + name.encode()
        out += [(prefix + b"-limit", str(limit).encode()),
                (prefix + b"-remaining", str(remaining).encode()),
                (prefix + b"-reset", reset)]
    return out


_LINES = ("opus", "sonnet", "haiku")


def model_info(model_id: str, position: int) -> dict[str, Any]:
    """A ``/v1/models`` entry; ``position`` in the list orders the made-up release dates."""
    words = model_id.removeprefix("claude-").split("-")
    family = [w for w in words if not w.isdigit()]
    version = ".".join(w for w in words if w.isdigit() and len(w) < 8)
    display = " ".join(["Claude", *(w.capitalize() for w in family), version]).strip()
    line = next((w for w in family if w in _LINES), None)
    # The real list is newest first: later positions get older dates.
    created = rfc3339(1_790_000_000 - position * 30 * 86400)
    return {"type": "model", "id": model_id, "display_name": display, "created_at": created,
            "lifecycle": "active", "line": line}
