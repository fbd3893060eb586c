"""Account runtime state: the states, the events, and the one function that moves between them.

Every change of an account's state goes through :func:`transition`. It is
synchronous and does no I/O, so the pool can call it under its lock and nothing
can interleave between reading a state and writing the next one.

    AVAILABLE ──rate_limited──▶ RATE_LIMITED ──cooldown_expired──▶ AVAILABLE
        │  ▲                          │
        │  └──credentials_renewed── AUTH_ERROR ◀──auth_failed── (any but DISABLED)
        ├──disabled──▶ DISABLED ──enabled──▶ AVAILABLE (an operator's enable clears all)
        └──failed──▶ BACKING_OFF ──cooldown_expired──▶ PROBING ──succeeded──▶ AVAILABLE
                          ▲                                  │
                          └───────────── failed ─────────────┘

``PROBING`` is the half-open state of a circuit breaker: after a backoff the
account serves exactly one request (the pool hands it to one caller at a time)
before it is trusted again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ccrotate._accounts.model import Account
from ccrotate._pool.ratelimit import QuotaSnapshot

__all__ = ["AccountRuntime", "AccountState", "Event", "transition"]


class AccountState(enum.Enum):
    """Where an account stands for routing."""

    AVAILABLE = "available"
    RATE_LIMITED = "rate_limited"
    BACKING_OFF = "backing_off"
    """After a headerless 429, a 529 or a 5xx: out for an exponential backoff."""
    PROBING = "probing"
    """The backoff is over: one request at a time may try it (half-open)."""
    AUTH_ERROR = "auth_error"
    DISABLED = "disabled"


class Event(enum.Enum):
    """What can happen to an account."""

    RATE_LIMITED = "rate_limited"
    COOLDOWN_EXPIRED = "cooldown_expired"
    FAILED = "failed"
    """An overload or server error: back off until ``until``, then probe."""
    SUCCEEDED = "succeeded"
    """A success: ends a probe and the backoff streak, clears ``last_error``."""
    AUTH_FAILED = "auth_failed"
    CREDENTIALS_RENEWED = "credentials_renewed"
    DISABLED = "disabled"
    ENABLED = "enabled"
    RELOADED = "reloaded"
    """The account's file entry changed (credentials, ``disabled``): recompute the state."""


@dataclass(slots=True, eq=False)
class AccountRuntime:
    """The mutable runtime record of one account. Owned by the pool; mutate via the pool."""

    account: Account
    state: AccountState = AccountState.AVAILABLE
    cooldown_until: float = 0.0
    out_reason: str | None = None
    """Why the account is cooling or backing off (a taxonomy reason: ``quota``, ``spend_cap`` …)."""
    backoff_until: float = 0.0
    backoff_streak: int = 0
    """Failures in a row that asked for a backoff; doubles the next one."""
    probe_out: bool = False
    """A half-open probe is on its way: no second caller gets a ``PROBING`` account."""
    refusal: tuple[str, str] | None = None
    """The upstream's ``(error type, message)`` that took it out, for an exhausted pool's answer."""
    forbidden_strikes: int = 0
    """403s in a row from different requests; enough of them make it account-level."""
    auth_broken: bool = False
    """Kept apart from ``state`` so a disabled account remembers it also needs a login."""
    admin_override: bool | None = None
    """``True``: disabled by an operator; ``False``: enabled by one; ``None``: as the file says."""
    last_error: str | None = None
    last_used: float | None = None
    requests: int = 0
    failures: int = 0
    rate_limits: int = 0
    in_flight: int = 0
    remote_in_flight: int = 0
    """Requests other replicas have on it (a shared state store reports them), for its cap."""
    strategy_picks: int = 0
    """Times the strategy chose it (not pinned, not kept by session affinity)."""
    affinity_picks: int = 0
    """Times session affinity kept a request on it."""
    quota: QuotaSnapshot | None = None
    extra_counters: dict[str, int] = field(default_factory=dict)

    @property
    def disabled(self) -> bool:
        """Disabled by an operator, or by the accounts file unless an operator enabled it."""
        if self.admin_override is not None:
            return self.admin_override
        return self.account.disabled


def _resting_state(rt: AccountRuntime, now: float) -> AccountState:
    # The state an account falls back to once nothing more urgent holds it.
    if rt.disabled:
        return AccountState.DISABLED
    if rt.auth_broken:
        return AccountState.AUTH_ERROR
    if rt.cooldown_until > now:
        return AccountState.RATE_LIMITED
    if rt.backoff_streak:
        return AccountState.BACKING_OFF if rt.backoff_until > now else AccountState.PROBING
    return AccountState.AVAILABLE


def _clear(rt: AccountRuntime) -> None:
    # An operator's enable: whatever held the account (cooldown, backoff, a refused
    # login) is forgotten, so it serves the next request.
    rt.cooldown_until = rt.backoff_until = 0.0
    rt.backoff_streak = rt.forbidden_strikes = 0
    rt.auth_broken = rt.probe_out = False
    rt.out_reason = rt.last_error = None


def transition(rt: AccountRuntime, event: Event, *, now: float, until: float | None = None,
               reason: str | None = None, cause: str | None = None) -> AccountState:
    """Apply ``event`` to ``rt`` and return the previous state.

    ``until`` is the end of a cooldown (``RATE_LIMITED``) or of a backoff
    (``FAILED``); a new cooldown only ever extends the current one. ``reason``
    becomes ``last_error`` and ``cause`` (a taxonomy reason) ``out_reason`` when given.
    """
    before = rt.state
    if reason is not None:
        rt.last_error = reason
    if cause is not None:
        rt.out_reason = cause
    if event is Event.RATE_LIMITED:
        if until is None:
            raise TypeError("transition(RATE_LIMITED) needs until, the end of the cooldown")
        rt.cooldown_until = max(rt.cooldown_until, until)
        rt.rate_limits += 1
    elif event is Event.FAILED:
        if until is None:
            raise TypeError("transition(FAILED) needs until, the end of the backoff")
        rt.backoff_streak += 1
        rt.backoff_until = max(rt.backoff_until, until)
        rt.probe_out = False
    elif event is Event.SUCCEEDED:
        rt.backoff_streak = rt.forbidden_strikes = 0
        rt.backoff_until = 0.0
        rt.probe_out = False
        rt.last_error = None
        if rt.cooldown_until <= now:
            # A success of a request sent before a 429 cooled it keeps the cooldown's cause.
            rt.out_reason = None
    # COOLDOWN_EXPIRED needs nothing but the recomputation below.
    elif event is Event.AUTH_FAILED:
        rt.auth_broken = True
    elif event is Event.CREDENTIALS_RENEWED:
        rt.auth_broken = False
    elif event is Event.DISABLED:
        rt.admin_override = True
    elif event is Event.ENABLED:
        rt.admin_override = False
        _clear(rt)
    rt.state = _resting_state(rt, now)
    return before
