"""Argument checks for constructors: a bad value raises ConfigError naming owner and field.

Constructors call these so that a wrong setting fails where it is made, with a
message such as ``AccessLog.flush_interval: must be a number > 0 (got 0)``, instead
of as an empty 500 or a busy loop much later. Never pass a secret: the value is
quoted in the message.
"""

from __future__ import annotations

import math
import re
from urllib.parse import urlsplit

from ccrotate._exceptions import ConfigError

__all__ = ["at_least", "has_methods", "is_callable", "masked_url", "non_negative", "positive"]


def _number(owner: str, field: str, value: object, bound: str) -> float:
    # bool is an int to Python, never a duration or a price to a user.
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        raise ConfigError(f"{owner}.{field}: must be a finite number {bound} (got {value!r})")
    return float(value)


def positive(owner: str, field: str, value: object) -> float:
    """``value`` as a float; ``ConfigError`` unless it is a finite number > 0."""
    number = _number(owner, field, value, "> 0")
    if number <= 0:
        raise ConfigError(f"{owner}.{field}: must be a number > 0 (got {value!r})")
    return number


def non_negative(owner: str, field: str, value: object) -> float:
    """``value`` as a float; ``ConfigError`` unless it is a finite number >= 0."""
    number = _number(owner, field, value, ">= 0")
    if number < 0:
        raise ConfigError(f"{owner}.{field}: must be a number >= 0 (got {value!r})")
    return number


def is_callable(owner: str, field: str, value: object, *, optional: bool = False) -> None:
    """``ConfigError`` unless ``value`` is callable (or ``None`` when ``optional``)."""
    if value is None and optional:
        return
    if not callable(value):
        # The type only: a token passed where the authenticator goes must not be echoed.
        raise ConfigError(f"{owner}.{field}: must be callable (got {type(value).__name__})")


def has_methods(owner: str, field: str, value: object, *names: str) -> None:
    """``ConfigError`` unless ``value`` has every method in ``names`` (a protocol check)."""
    missing = [n for n in names if not callable(getattr(value, n, None))]
    if missing:
        raise ConfigError(f"{owner}.{field}: a {type(value).__name__} lacks "
                          f"{', '.join(missing)}()")


def at_least(owner: str, field: str, value: object, minimum: int) -> int:
    """``value``; ``ConfigError`` unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{owner}.{field}: must be an integer >= {minimum} (got {value!r})")
    return value


_PASSWORD_PARAM = re.compile(r"(?i)((?:^|&)password=)[^&]*")


def masked_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) as ``***``,
    for reprs, logs and messages. Anything that does not parse is masked whole."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{hostport}"
    query = _PASSWORD_PARAM.sub(r"\1***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Built by hand: urlunsplit drops the "//" of an empty host ("postgresql:///db").
    return (f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
            + (f"#{parts.fragment}" if parts.fragment else ""))
