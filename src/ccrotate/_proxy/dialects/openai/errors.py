"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

The openai SDK picks its exception class from the HTTP status alone (400 BadRequestError,
401 AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 429 RateLimitError,
>= 500 InternalServerError) and retries 408/409/429/5xx, so the status is what must be
right; ``type`` and ``code`` follow what OpenAI itself sends where it has an equivalent.
"""

from __future__ import annotations

import math
from datetime import datetime

import msgspec

from ccrotate._exceptions import TranslationError
from ccrotate._proxy.dialects.openai import schema_anthropic as A
from ccrotate._proxy.dialects.openai.schema_openai import ENCODER, ErrorBody, ErrorDetail
from ccrotate._wire import SPEND_CAP

__all__ = [
    "anthropic_error_to_openai",
    "error_detail",
    "from_validation_error",
    "ratelimit_headers",
    "translation_error_body",
]

# Anthropic error type -> (HTTP status, OpenAI type, OpenAI code).
_ERRORS: dict[str, tuple[int, str, str | None]] = {
    "invalid_request_error": (400, "invalid_request_error", None),
    "authentication_error": (401, "authentication_error", "invalid_api_key"),
    "permission_error": (403, "permission_error", "permission_denied"),
    "not_found_error": (404, "invalid_request_error", "not_found"),
    "request_too_large": (413, "invalid_request_error", "request_too_large"),
    # OpenAI reports rate limits as type "requests"/"tokens", code "rate_limit_exceeded".
    "rate_limit_error": (429, "requests", "rate_limit_exceeded"),
    "api_error": (500, "server_error", None),
    # 529 is Anthropic-only; 503 is what OpenAI sends for "engine overloaded", and what
    # HTTP clients and load balancers understand. The SDK retries both.
    "overloaded_error": (503, "server_error", "overloaded"),
}

_BY_STATUS = {status: name for name, (status, _, _) in _ERRORS.items()}
_BY_STATUS[529] = "overloaded_error"


def _classify(status: int, anthropic_type: str | None) -> tuple[int, str, str | None]:
    if anthropic_type in _ERRORS:
        mapped = _ERRORS[anthropic_type]
        if mapped[0] == 500 and 500 < status < 529:
            # A generic api_error sent as 502/503/504 (the upstream unreachable, no account
            # left to serve) keeps that status: it says more than 500 does.
            return status, mapped[1], mapped[2]
        return mapped
    known = _BY_STATUS.get(status)
    if known is not None:
        return _ERRORS[known]
    if not 400 <= status <= 599:
        status = 502
    category = "server_error" if status >= 500 else "invalid_request_error"
    return status, category, anthropic_type


def error_detail(message: str, anthropic_type: str | None) -> ErrorDetail:
    """The OpenAI error object for an Anthropic error type (used inside streams too)."""
    _, type_, code = _classify(500, anthropic_type)
    return ErrorDetail(message=message or "upstream error", type=type_, code=code)


def anthropic_error_to_openai(status: int, body: bytes) -> tuple[int, bytes]:
    """Translate an Anthropic error response into OpenAI's status and error body.

    ``body`` may be anything, including HTML from a gateway or an empty string: the
    status then decides the mapping and the text (cut to 500 characters) becomes the
    message. A spend-cap 429 becomes OpenAI's ``insufficient_quota``, which clients know
    not to retry in a loop.
    """
    anthropic_type: str | None = None
    message = ""
    spend_cap = False
    try:
        envelope = A.ERROR_DECODER.decode(body)
    except msgspec.DecodeError:
        envelope = None
    if envelope is not None and envelope.error is not None:
        anthropic_type = envelope.error.type
        message = envelope.error.message or ""
        details = envelope.error.details
        spend_cap = details is not None and details.error_code == SPEND_CAP
    elif body:
        message = body[:500].decode("utf-8", "replace").strip()
    out_status, type_, code = _classify(status, anthropic_type)
    if spend_cap:
        type_ = code = "insufficient_quota"
    if not message:
        message = f"upstream returned HTTP {status}"
    detail = ErrorDetail(message=message, type=type_, code=code)
    return out_status, ENCODER.encode(ErrorBody(detail))


def _duration(seconds: float) -> bytes:
    # OpenAI writes resets as Go durations: "20s", "6m0s", "1h2m3s".
    total = max(0, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s".encode()
    if minutes:
        return f"{minutes}m{secs}s".encode()
    return f"{secs}s".encode()


def _reset_in(value: bytes, now: float) -> float | None:
    try:
        return datetime.fromisoformat(value.decode("latin-1").replace("Z", "+00:00")
                                      ).timestamp() - now
    except ValueError:
        return None


def ratelimit_headers(headers: list[tuple[bytes, bytes]], now: float
                      ) -> list[tuple[bytes, bytes]]:
    """OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for a 429.

    From an API key's ``anthropic-ratelimit-{requests,tokens}-*`` when the upstream sent
    them; otherwise (subscription accounts, an exhausted pool) ``remaining-requests: 0``
    with the reset at ``retry-after``, which is what an OpenAI client needs to wait right.
    """
    got = dict(headers)
    out: list[tuple[bytes, bytes]] = []
    for bucket in (b"requests", b"tokens"):
        prefix = b"anthropic-ratelimit-" + bucket
        limit, remaining = got.get(prefix + b"-limit"), got.get(prefix + b"-remaining")
        if limit is not None and remaining is not None:
            out += [(b"x-ratelimit-limit-" + bucket, limit),
                    (b"x-ratelimit-remaining-" + bucket, remaining)]
            reset = got.get(prefix + b"-reset")
            seconds = _reset_in(reset, now) if reset is not None else None
            if seconds is not None:
                out.append((b"x-ratelimit-reset-" + bucket, _duration(seconds)))
    retry_after = got.get(b"retry-after")
    if not out and retry_after is not None:
        try:
            seconds = float(retry_after)
        except ValueError:
            return out
        out += [(b"x-ratelimit-remaining-requests", b"0"),
                (b"x-ratelimit-reset-requests", _duration(seconds))]
    return out


def translation_error_body(exc: TranslationError) -> bytes:
    """The OpenAI-shaped 400 body for a request the translator refused."""
    detail = ErrorDetail(
        message=str(exc), type="invalid_request_error", param=exc.param, code=exc.code
    )
    return ENCODER.encode(ErrorBody(detail))


def from_validation_error(exc: msgspec.ValidationError) -> TranslationError:
    """Turn a msgspec message such as ``Expected `str`, got `int` - at `$.messages[0]```
    into a TranslationError whose ``param`` is OpenAI's dotted path (``messages[0]``)."""
    text = str(exc)
    what, sep, where = text.rpartition(" - at `")
    if not sep:
        what, where = text, "$"
    path = where.rstrip("`").removeprefix("$").removeprefix(".")
    code = "invalid_value"
    if what.startswith("Object missing required field `"):
        field = what.split("`")[1]
        path = f"{path}.{field}" if path else field
        code = "missing_required_parameter"
    elif what.startswith("Object contains unknown field `"):
        field = what.split("`")[1]
        path = f"{path}.{field}" if path else field
        code = "unknown_parameter"
        what = f"Unrecognized request argument supplied: {field}"
    elif what.startswith("Invalid value") and path.endswith(".type"):
        # A tag that names no known variant: the whole object is what is unsupported.
        path = path.rsplit(".", 1)[0]
        code = "unsupported_value"
    param = path or None
    message = f"{what} (at {param})" if param and param not in what else what
    return TranslationError(message, param=param, code=code)
