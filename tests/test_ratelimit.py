"""Rate-limit headers: the quota picture they give, and when a 429'd account may return."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

import httpx
import pytest

from ccrotate._pool.ratelimit import MAX_COOLDOWN, cooldown_until, parse_quota

NOW = 1_760_000_000.0
U = "anthropic-ratelimit-unified-"


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


# -- QuotaSnapshot ---------------------------------------------------------------------------

def test_parse_unified_headers() -> None:
    """Unified headers become a snapshot with status, reset, claim and per-window figures."""
    headers = httpx.Headers({
        "Anthropic-Ratelimit-Unified-Status": "allowed_warning",
        f"{U}reset": str(NOW + 3600),
        f"{U}representative-claim": "five_hour",
        f"{U}5h-utilization": "0.82",
        f"{U}5h-status": "allowed_warning",
        f"{U}5h-reset": str(NOW + 3600),
        f"{U}7d-utilization": "0.31",
        f"{U}7d-status": "allowed",
        f"{U}7d-reset": str(NOW + 86400 * 3),
        f"{U}overage-status": "rejected",
    })
    snap = parse_quota(headers, NOW)
    assert snap is not None
    assert snap.status == "allowed_warning"
    assert snap.reset == NOW + 3600
    assert snap.representative_claim == "five_hour"
    assert snap.seen_at == NOW
    assert set(snap.windows) == {"5h", "7d", "overage"}
    assert snap.windows["5h"].utilization == pytest.approx(0.82)
    assert snap.windows["5h"].status == "allowed_warning"
    assert snap.windows["7d"].reset == NOW + 86400 * 3
    assert snap.windows["overage"].utilization is None
    assert snap.max_utilization() == pytest.approx(0.82)


def test_parse_unified_ignores_garbage_numbers() -> None:
    """Unparseable or non-finite numbers are dropped, not fatal."""
    snap = parse_quota({f"{U}status": "allowed", f"{U}reset": "soon",
                        f"{U}5h-utilization": "nan", f"{U}7d-utilization": "0.5"}, NOW)
    assert snap is not None
    assert snap.reset is None
    assert "5h" not in snap.windows
    assert snap.max_utilization() == 0.5


def test_parse_api_key_headers() -> None:
    """API-key buckets become windows whose utilisation is 1 - remaining/limit."""
    reset = NOW + 30
    snap = parse_quota({
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "40",
        "anthropic-ratelimit-requests-reset": rfc3339(reset),
        "anthropic-ratelimit-tokens-limit": "1000",
        "anthropic-ratelimit-tokens-remaining": "0",
    }, NOW)
    assert snap is not None
    assert snap.status is None
    assert snap.windows["requests"].utilization == pytest.approx(0.2)
    assert snap.windows["requests"].status == "allowed"
    assert snap.windows["requests"].reset == pytest.approx(reset)
    assert snap.windows["tokens"].status == "rejected"
    assert snap.max_utilization() == 1.0


def test_parse_nothing_is_none() -> None:
    """A response without rate-limit headers gives no snapshot."""
    assert parse_quota({"content-type": "application/json"}, NOW) is None
    assert parse_quota({"anthropic-ratelimit-requests-limit": "0",
                        "anthropic-ratelimit-requests-remaining": "0"}, NOW) is None


# -- cooldown_until --------------------------------------------------------------------------

def test_retry_after_seconds() -> None:
    """retry-after in seconds sets the cooldown."""
    assert cooldown_until({"retry-after": "42"}, NOW, default=60) == NOW + 42


def test_retry_after_http_date() -> None:
    """retry-after as an HTTP-date sets the cooldown to that instant."""
    when = NOW + 125
    value = email.utils.formatdate(when, usegmt=True)
    assert cooldown_until({"retry-after": value}, NOW, default=60) == pytest.approx(when)


def test_default_when_no_signal() -> None:
    """Without any reset information the default applies (and the spend-cap default for caps)."""
    assert cooldown_until({}, NOW, default=60) == NOW + 60
    assert cooldown_until({}, NOW, default=60, spend_cap=True, spend_cap_default=900) == NOW + 900
    assert cooldown_until({"retry-after": "whenever"}, NOW, default=7) == NOW + 7


def test_non_finite_retry_after_is_ignored() -> None:
    """'nan' or 'inf' never cancels or eternalises a cooldown: the default applies."""
    for value in ("nan", "inf", "-inf"):
        assert cooldown_until({"retry-after": value}, NOW, default=60) == NOW + 60
        assert cooldown_until({f"{U}status": "rejected", f"{U}reset": value},
                              NOW, default=60) == NOW + 60


def test_unified_reset_when_rejected() -> None:
    """A rejected subscription account cools until the unified reset (epoch seconds)."""
    headers = {f"{U}status": "rejected", f"{U}reset": str(int(NOW) + 5000)}
    assert cooldown_until(headers, NOW, default=60) == int(NOW) + 5000


def test_unified_reset_ignored_when_allowed() -> None:
    """The unified reset of an account that is not rejected is no reason to wait."""
    headers = {f"{U}status": "allowed", f"{U}reset": str(NOW + 5000)}
    assert cooldown_until(headers, NOW, default=60) == NOW + 60


@pytest.mark.parametrize("window", ["5h", "7d", "7d_oi", "7d_sonnet", "overage"])
def test_rejected_window_reset(window: str) -> None:
    """A rejected window's own reset counts even when the overall status is not rejected."""
    headers = {f"{U}status": "allowed_warning", f"{U}{window}-status": "rejected",
               f"{U}{window}-reset": str(NOW + 7200), f"{U}reset": str(NOW + 10)}
    assert cooldown_until(headers, NOW, default=60) == NOW + 7200


def test_latest_signal_wins() -> None:
    """With several signals the account waits for the latest of them."""
    headers = {"retry-after": "30", f"{U}status": "rejected", f"{U}reset": str(NOW + 900),
               f"{U}7d-status": "rejected", f"{U}7d-reset": str(NOW + 4000),
               f"{U}5h-status": "allowed", f"{U}5h-reset": str(NOW + 99999)}
    assert cooldown_until(headers, NOW, default=60) == NOW + 4000


def test_api_key_bucket_reset_when_exhausted() -> None:
    """An exhausted API-key bucket cools until its RFC 3339 reset; a non-empty one does not."""
    headers = {"anthropic-ratelimit-tokens-remaining": "0",
               "anthropic-ratelimit-tokens-reset": rfc3339(NOW + 75),
               "anthropic-ratelimit-requests-remaining": "12",
               "anthropic-ratelimit-requests-reset": rfc3339(NOW + 600)}
    assert cooldown_until(headers, NOW, default=60) == pytest.approx(NOW + 75)


def test_past_reset_still_waits_a_second() -> None:
    """A reset already in the past (clock skew) still rests the account briefly."""
    headers = {f"{U}status": "rejected", f"{U}reset": str(NOW - 100)}
    assert cooldown_until(headers, NOW, default=60) == NOW + 1
    assert cooldown_until({"retry-after": "0"}, NOW, default=60) == NOW + 1


def test_far_future_reset_is_capped() -> None:
    """A reset months away is capped so a bad header cannot park an account forever."""
    headers = {f"{U}status": "rejected", f"{U}reset": str(NOW + 365 * 86400)}
    assert cooldown_until(headers, NOW, default=60) == NOW + MAX_COOLDOWN


def test_case_insensitive_header_objects() -> None:
    """Mixed-case header names work through a case-insensitive headers object."""
    headers = httpx.Headers({"Retry-After": "17"})
    assert cooldown_until(headers, NOW, default=60) == NOW + 17
