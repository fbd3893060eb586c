"""Reading Anthropic's rate-limit headers: when an account comes back, and how close it is.

Two header families exist (see ANTHROPIC_WIRE.md): API keys get ``retry-after`` and
``anthropic-ratelimit-{requests,tokens,…}-{limit,remaining,reset}`` (RFC 3339);
subscription accounts get the ``anthropic-ratelimit-unified-*`` set (epoch seconds,
0..1 utilisation per window) and often no ``retry-after`` at all.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = ["QuotaSnapshot", "WindowQuota", "cooldown_until", "parse_quota"]

UNIFIED = "anthropic-ratelimit-unified-"
WINDOWS = ("5h", "7d", "7d_oi", "7d_sonnet", "overage")
API_BUCKETS = ("requests", "tokens", "input-tokens", "output-tokens")
# Never believe a reset further out than this: a clock or parsing error must not
# park an account for months.
MAX_COOLDOWN = 8 * 24 * 3600.0


class HeaderGetter(Protocol):
    """Anything with a case-insensitive ``get`` (aiohttp, httpx, Starlette headers)."""

    def get(self, key: str, /) -> str | None: ...


@dataclass(frozen=True, slots=True)
class WindowQuota:
    """One quota window as the upstream last reported it."""

    utilization: float | None
    status: str | None
    reset: float | None


@dataclass(frozen=True, slots=True)
class QuotaSnapshot:
    """The latest rate-limit picture of one account, from any upstream response."""

    status: str | None
    reset: float | None
    representative_claim: str | None
    windows: Mapping[str, WindowQuota]
    seen_at: float
    binding: WindowQuota | None = None
    """The window that limits the account now: the representative claim's, else the
    fullest. Computed once per parse, so a strategy reads it for free per request."""

    def max_utilization(self) -> float | None:
        """The fullest window's utilisation (0..1), ``None`` when nothing was reported."""
        values = [w.utilization for w in self.windows.values() if w.utilization is not None]
        return max(values) if values else None


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    # "nan" would make every comparison false and silently cancel a cooldown.
    return number if math.isfinite(number) else None


def _rfc3339(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    seconds = _float(value.strip())
    if seconds is not None:
        return now + max(seconds, 0.0)
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


_CLAIM_WINDOW = {"five_hour": "5h", "seven_day": "7d", "seven_day_opus": "7d_oi",
                 "seven_day_sonnet": "7d_sonnet", "overage": "overage"}


def _binding(claim: str | None, windows: Mapping[str, WindowQuota]) -> WindowQuota | None:
    named = windows.get(_CLAIM_WINDOW.get(claim or "", ""))
    if named is not None and named.utilization is not None:
        return named
    known = [w for w in windows.values() if w.utilization is not None]
    return max(known, key=lambda w: w.utilization or 0.0) if known else None


def parse_quota(headers: HeaderGetter, now: float) -> QuotaSnapshot | None:
    """Extract the utilisation picture from a response's headers, or ``None`` if absent."""
    status = headers.get(UNIFIED + "status")
    windows: dict[str, WindowQuota] = {}
    if status is not None:
        for win in WINDOWS:
            util = _float(headers.get(f"{UNIFIED}{win}-utilization"))
            wstatus = headers.get(f"{UNIFIED}{win}-status")
            reset = _float(headers.get(f"{UNIFIED}{win}-reset"))
            if util is not None or wstatus is not None or reset is not None:
                windows[win] = WindowQuota(util, wstatus, reset)
        claim = headers.get(UNIFIED + "representative-claim")
        return QuotaSnapshot(status, _float(headers.get(UNIFIED + "reset")), claim, windows,
                             now, _binding(claim, windows))
    for bucket in API_BUCKETS:
        limit = _float(headers.get(f"anthropic-ratelimit-{bucket}-limit"))
        remaining = _float(headers.get(f"anthropic-ratelimit-{bucket}-remaining"))
        if limit and remaining is not None:
            windows[bucket] = WindowQuota(
                max(0.0, min(1.0, 1.0 - remaining / limit)),
                "rejected" if remaining <= 0 else "allowed",
                _rfc3339(headers.get(f"anthropic-ratelimit-{bucket}-reset")))
    if not windows:
        return None
    return QuotaSnapshot(None, None, None, windows, now, _binding(None, windows))


def cooldown_until(headers: HeaderGetter, now: float, *, default: float,
                   spend_cap: bool = False, spend_cap_default: float = 3600.0) -> float:
    """When a rate-limited account may be tried again (epoch seconds).

    The latest of every signal that says "not before": ``retry-after``, the unified
    reset when the account is rejected, the reset of each rejected window and of
    each exhausted API-key bucket. With no signal at all, ``default`` seconds (or
    ``spend_cap_default`` for a spend-cap 429, which plain retrying cannot cure).
    """
    candidates: list[float] = []
    ra = _retry_after(headers.get("retry-after"), now)
    if ra is not None:
        candidates.append(ra)
    status = headers.get(UNIFIED + "status")
    if status is not None:
        if status == "rejected":
            reset = _float(headers.get(UNIFIED + "reset"))
            if reset is not None:
                candidates.append(reset)
        for win in WINDOWS:
            if headers.get(f"{UNIFIED}{win}-status") == "rejected":
                reset = _float(headers.get(f"{UNIFIED}{win}-reset"))
                if reset is not None:
                    candidates.append(reset)
    for bucket in API_BUCKETS:
        remaining = _float(headers.get(f"anthropic-ratelimit-{bucket}-remaining"))
        if remaining is not None and remaining <= 0:
            reset = _rfc3339(headers.get(f"anthropic-ratelimit-{bucket}-reset"))
            if reset is not None:
                candidates.append(reset)
    if not candidates:
        return now + (spend_cap_default if spend_cap else default)
    until = max(candidates)
    # A reset in the past (clock skew) still means "not right now".
    return min(max(until, now + 1.0), now + MAX_COOLDOWN)
