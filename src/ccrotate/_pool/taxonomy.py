"""The error taxonomy: what one upstream refusal means for the account and for the request.

Every failed attempt goes through :func:`classify` once, and the answer (a
:class:`Verdict`) is all the failover loop and the pool act on. Keeping the
whole table here, rather than spread over the loop, the pool and the rate-limit
parser, is what lets each row be tested on its own (``tests/test_taxonomy.py``)
and documented once (``docs/proxy.md``, "Error taxonomy").

It runs only on the error path, so it may parse freely: a success never comes here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from ccrotate._accounts.model import AccountKind
from ccrotate._pool.ratelimit import (
    API_BUCKETS,
    UNIFIED,
    WINDOWS,
    HeaderGetter,
    cooldown_until,
)
from ccrotate._wire import SPEND_CAP

__all__ = ["AUTH_REFUSED", "CONNECTION", "AccountAction", "Reason", "Verdict", "classify",
           "is_quota_rejection"]

THROTTLE_LIMIT = 60.0
"""A 429 whose ``retry-after`` is at most this many seconds (and no rejected window) is a
short throttle, not an exhausted quota window."""


class Reason(enum.Enum):
    """Why an attempt failed: the label of the failover in metrics, logs and status."""

    QUOTA = "quota"
    THROTTLE = "throttle"
    SPEND_CAP = "spend_cap"
    ENTITLEMENT = "entitlement"
    RATE_LIMITED = "rate_limited"
    """A 429 with no reset information at all."""
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    CONNECTION = "connection"
    AUTH = "auth"
    REFRESH = "refresh"
    CLIENT_ERROR = "client_error"


class AccountAction(enum.Enum):
    """What the pool does to the account that failed."""

    COOL = "cool"
    """Out of rotation until ``Verdict.until`` (a quota reset, a throttle, a spend cap)."""
    BACKOFF = "backoff"
    """Exponential backoff with jitter, then one half-open probe before it serves again."""
    DENY_MODEL = "deny_model"
    """Request-scoped: skip this account for this model for a while; repeated → account-level."""
    AUTH_ERROR = "auth_error"
    """Credentials refused: out until renewed or enabled by an operator."""
    REFRESH = "refresh"
    """Refresh the OAuth token once and retry the same account."""
    COUNT = "count"
    """Nothing but a failure counted (a network error, the client's own mistake)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The taxonomy's answer for one failed attempt.

    Parameters:
        reason: what happened (a bounded label).
        action: what the pool does to the account.
        until: end of a ``COOL`` (epoch seconds).
        fail_over: whether another account may serve the request.
        message: the upstream's error message, for ``last_error``.
        error_type: the upstream's error type (what an exhausted pool answers with).
    """

    reason: Reason
    action: AccountAction
    until: float | None = None
    fail_over: bool = True
    message: str = ""
    error_type: str = ""


CONNECTION = Verdict(Reason.CONNECTION, AccountAction.COUNT)
"""The upstream could not be reached: most likely not the account's fault."""
AUTH_REFUSED = Verdict(Reason.AUTH, AccountAction.AUTH_ERROR)
"""A token refresh answered ``invalid_grant``: the account needs a new login."""


def is_quota_rejection(headers: HeaderGetter) -> bool:
    """Whether the headers say a quota window is exhausted (unified ``rejected``, an
    API-key bucket at zero)."""
    if headers.get(UNIFIED + "status") == "rejected":
        return True
    if any(headers.get(f"{UNIFIED}{w}-status") == "rejected" for w in WINDOWS):
        return True
    for bucket in API_BUCKETS:
        remaining = headers.get(f"anthropic-ratelimit-{bucket}-remaining")
        if remaining is not None and remaining.strip() == "0":
            return True
    return False


def _retry_after(headers: HeaderGetter) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def _classify_429(headers: HeaderGetter, error_type: str, message: str, code: str | None,
                  now: float, default_cooldown: float) -> Verdict:
    if code == SPEND_CAP:
        until = cooldown_until(headers, now, default=default_cooldown, spend_cap=True)
        return Verdict(Reason.SPEND_CAP, AccountAction.COOL, until, message=message)
    if error_type == "permission_error":
        return Verdict(Reason.ENTITLEMENT, AccountAction.DENY_MODEL, message=message)
    retry_after = _retry_after(headers)
    if is_quota_rejection(headers):
        until = cooldown_until(headers, now, default=default_cooldown)
        return Verdict(Reason.QUOTA, AccountAction.COOL, until, message=message)
    if retry_after is not None:
        until = cooldown_until(headers, now, default=default_cooldown)
        reason = Reason.THROTTLE if retry_after <= THROTTLE_LIMIT else Reason.QUOTA
        return Verdict(reason, AccountAction.COOL, until, message=message)
    # No window rejected, no retry-after: the reset headers of an "allowed" window say
    # nothing about this refusal, so back off briefly rather than park it for hours.
    return Verdict(Reason.RATE_LIMITED, AccountAction.BACKOFF, message=message)


def classify(status: int, headers: HeaderGetter, error: tuple[str, str, str | None], *,
             kind: AccountKind, now: float, can_refresh: bool = False,
             default_cooldown: float = 60.0) -> Verdict:
    """Map one upstream refusal to a :class:`Verdict` (see ``docs/proxy.md``).

    Parameters:
        status: the HTTP status (an ``event: error`` opening a stream uses its type's status).
        headers: the response headers (case-insensitive ``get``).
        error: ``(error.type, error.message, error.details.error_code)`` of the body.
        kind: the account's kind (a 401 on OAuth can be cured by a refresh).
        now: the pool's clock (epoch seconds).
        can_refresh: a refresh is possible and was not tried yet for this request.
        default_cooldown: seconds to cool when a reset is implied but not given.
    """
    verdict = _classify(status, headers, error, kind, now, can_refresh, default_cooldown)
    return replace(verdict, error_type=error[0])


def _classify(status: int, headers: HeaderGetter, error: tuple[str, str, str | None],
              kind: AccountKind, now: float, can_refresh: bool,
              default_cooldown: float) -> Verdict:
    error_type, message, code = error
    if status == 429:
        return _classify_429(headers, error_type, message, code, now, default_cooldown)
    if status == 401:
        if kind is AccountKind.OAUTH and can_refresh:
            return Verdict(Reason.REFRESH, AccountAction.REFRESH, message=message)
        return Verdict(Reason.AUTH, AccountAction.AUTH_ERROR, message=message)
    if status == 403:
        # Usually "this account may not use this model or feature": the request goes
        # elsewhere and the account keeps serving other models. The pool escalates
        # repeated 403s from different requests to an account-level state.
        return Verdict(Reason.ENTITLEMENT, AccountAction.DENY_MODEL, message=message)
    if status == 529 or error_type == "overloaded_error":
        return Verdict(Reason.OVERLOADED, AccountAction.BACKOFF, message=message)
    if status >= 500:
        return Verdict(Reason.SERVER_ERROR, AccountAction.BACKOFF, message=message)
    return Verdict(Reason.CLIENT_ERROR, AccountAction.COUNT, fail_over=False, message=message)
