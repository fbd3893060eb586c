"""Account runtime state: the states, the events, and the one function that moves between them.

Every change of an account's state goes through :func:`transition`. It is
synchronous and does no I/O, so the pool can call it under its lock and nothing
can interleave between reading a state and writing the next one.

    AVAILABLE ──rate_limited──▶ RATE_LIMITED ──cooldown_expired──▶ AVAILABLE
        │  ▲                          │
        │  └──credentials_renewed── AUTH_ERROR ◀──auth_failed── (any but DISABLED)
        └──disabled──▶ DISABLED ──enabled──▶ (AUTH_ERROR | RATE_LIMITED | AVAILABLE)
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
    AUTH_ERROR = "auth_error"
    DISABLED = "disabled"


class Event(enum.Enum):
    """What can happen to an account."""

    RATE_LIMITED = "rate_limited"
    COOLDOWN_EXPIRED = "cooldown_expired"
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
    return AccountState.AVAILABLE


def transition(rt: AccountRuntime, event: Event, *, now: float, until: float | None = None,
               reason: str | None = None) -> AccountState:
    """Apply ``event`` to ``rt`` and return the previous state.

    ``until`` is the end of a cooldown (``RATE_LIMITED``); a new cooldown only
    ever extends the current one. ``reason`` becomes ``last_error`` when given.
    """
    before = rt.state
    if reason is not None:
        rt.last_error = reason
    if event is Event.RATE_LIMITED:
        if until is None:
            raise TypeError("transition(RATE_LIMITED) needs until, the end of the cooldown")
        rt.cooldown_until = max(rt.cooldown_until, until)
        rt.rate_limits += 1
    elif event is Event.COOLDOWN_EXPIRED:
        if rt.cooldown_until > now:
            return before
    elif event is Event.AUTH_FAILED:
        rt.auth_broken = True
    elif event is Event.CREDENTIALS_RENEWED:
        rt.auth_broken = False
    elif event is Event.DISABLED:
        rt.admin_override = True
    elif event is Event.ENABLED:
        rt.admin_override = False
    rt.state = _resting_state(rt, now)
    return before
