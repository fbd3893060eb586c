"""What the pool looks like from outside: the JSON shapes of ``/health`` and ``/status``.

Every shape here is built from :class:`AccountStatus` snapshots, which hold no
secret; the one credential-derived field is the masked ``credentialHint``.
Timestamps are ISO 8601 in UTC (``"2026-11-25T13:49:00Z"``), durations whole
seconds. ``health_endpoint`` is the ``GET /health`` a load balancer polls.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ccrotate._accounts.model import Account
from ccrotate._pool.pool import AccountPool, AccountStatus
from ccrotate._pool.ratelimit import QuotaSnapshot
from ccrotate._pool.state import AccountState
from ccrotate._state.backend import StateBackend

__all__ = [
    "AccountView",
    "ActionResult",
    "HealthView",
    "PoolView",
    "QuotaView",
    "StateCounts",
    "StateView",
    "WindowView",
    "account_view",
    "count_states",
    "health_endpoint",
    "scrub",
    "state_view",
]

_ENCODER = msgspec.json.Encoder()


class StateCounts(msgspec.Struct, rename="camel", kw_only=True):
    """How many accounts are in each state (the head of the ``/status`` aggregate)."""

    total_accounts: int
    available_accounts: int
    rate_limited_accounts: int
    auth_error_accounts: int
    disabled_accounts: int


class StateView(msgspec.Struct, rename="camel", kw_only=True):
    """Where the pool's shared state lives, and whether it can be reached."""

    backend: str
    """``memory`` or ``redis``."""
    target: str | None
    """The store's URL, any password masked."""
    shared: bool
    degraded: bool
    """The store is unreachable: each replica decides on its own state meanwhile."""
    errors: int
    last_error: str | None = None
    degraded_since: datetime | None = None
    calls: int = 0
    """Round trips made to the store (a pipeline counts once)."""


def state_view(backend: StateBackend | None) -> StateView | None:
    """The public view of a state backend's health (``None`` for no backend)."""
    if backend is None:
        return None
    h = backend.health()
    return StateView(backend=h.kind, target=h.target, shared=h.shared, degraded=h.degraded,
                     errors=h.errors, last_error=h.last_error,
                     degraded_since=_time(h.degraded_since), calls=h.calls)


class HealthView(msgspec.Struct, rename="camel", kw_only=True):
    """The body of ``GET /health`` (the counts of :class:`StateCounts`, status first)."""

    status: str
    """``"ok"`` while at least one account can serve, ``"degraded"`` when one can but the
    shared state store is unreachable, else ``"unavailable"``."""
    total_accounts: int
    available_accounts: int
    rate_limited_accounts: int
    auth_error_accounts: int
    disabled_accounts: int
    retry_after: int | None = None
    """Seconds until the soonest rate-limited account is back (only when unavailable)."""
    state: StateView | None = None
    """The shared state store, when the pool has one."""


def count_states(statuses: Iterable[AccountStatus]) -> dict[str, int]:
    """Keyword arguments for :class:`StateCounts` from account snapshots."""
    counts = dict.fromkeys(AccountState, 0)
    total = 0
    for status in statuses:
        counts[status.state] += 1
        total += 1
    return {
        "total_accounts": total,
        # A probing account serves (one request at a time); a backing-off one is out
        # for a while like a cooling one: the aggregate keeps its four buckets.
        "available_accounts": counts[AccountState.AVAILABLE] + counts[AccountState.PROBING],
        "rate_limited_accounts": (counts[AccountState.RATE_LIMITED]
                                  + counts[AccountState.BACKING_OFF]),
        "auth_error_accounts": counts[AccountState.AUTH_ERROR],
        "disabled_accounts": counts[AccountState.DISABLED],
    }


class _View(msgspec.Struct, rename="camel", kw_only=True):
    pass


class WindowView(_View):
    """One quota window as the upstream last reported it."""

    utilization: float | None
    status: str | None
    reset: datetime | None


class QuotaView(_View):
    """The latest rate-limit headers seen for an account."""

    status: str | None
    reset: datetime | None
    representative_claim: str | None
    max_utilization: float | None
    seen_at: datetime
    windows: dict[str, WindowView]


class AccountView(_View):
    """One account as the status API shows it: no secret, a masked credential hint."""

    name: str
    kind: str
    state: str
    credential_hint: str
    token_expires_at: datetime | None
    token_expires_in: int | None
    rate_limited_until: datetime | None
    last_used: datetime | None
    last_error: str | None
    requests: int
    failures: int
    rate_limits: int
    in_flight: int
    weight: int
    priority: int
    quota: QuotaView | None
    out_reason: str | None = None
    """Why it is not serving now (``quota``, ``throttle``, ``spend_cap``, ``overloaded`` …)."""
    denied_models: list[str] = msgspec.field(default_factory=list)
    """Models it was recently refused (403) and is skipped for."""
    strategy_picks: int = 0
    affinity_picks: int = 0


class PoolView(StateCounts, kw_only=True):
    """``GET /``: the pool aggregate."""

    next_account: str | None
    reload_error: str | None
    accounts: list[AccountView]
    affinity: dict[str, int] = msgspec.field(default_factory=dict)
    """Session-affinity decisions so far: ``hit``, ``miss``, ``rebind``."""
    state: StateView | None = None
    """The shared state store, when the pool has one (``None``: this process only)."""


class ActionResult(_View):
    """The answer to an admin action: what was done, and the account afterwards."""

    action: str
    account: AccountView


def _time(epoch: float | None) -> datetime | None:
    return None if epoch is None else _datetime(epoch)


def _datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(round(epoch), UTC)


def _fraction(value: float | None) -> float | None:
    # 1 - remaining/limit leaves float noise (0.18000000000000005) nobody wants to read.
    return None if value is None else round(value, 4)


def _quota(quota: QuotaSnapshot | None) -> QuotaView | None:
    if quota is None:
        return None
    windows = {name: WindowView(utilization=_fraction(w.utilization), status=w.status,
                                reset=_time(w.reset))
               for name, w in quota.windows.items()}
    return QuotaView(status=quota.status, reset=_time(quota.reset),
                     representative_claim=quota.representative_claim,
                     max_utilization=_fraction(quota.max_utilization()),
                     seen_at=_datetime(quota.seen_at), windows=windows)


def scrub(text: str | None, account: Account | None) -> str | None:
    """``text`` with any of ``account``'s secrets replaced by their masked form."""
    # Belt and braces: error texts come from upstream answers and refreshers, and
    # none should hold a token, but if one ever does it leaves here masked.
    if text is None or account is None:
        return text
    for secret in (account.access_token, account.refresh_token, account.api_key):
        if secret and len(secret.reveal()) >= 8:
            text = text.replace(secret.reveal(), secret.masked)
    return text


def account_view(status: AccountStatus, now: float, *, account: Account | None = None,
                 expires_at: float | None = None) -> AccountView:
    """Build the public view of one account snapshot (``account`` only to scrub errors)."""
    expiry = expires_at if expires_at is not None else status.token_expires_at
    return AccountView(
        name=status.name, kind=status.kind.value, state=status.state.value,
        credential_hint=status.credential_hint, token_expires_at=_time(expiry),
        token_expires_in=None if expiry is None else round(expiry - now),
        rate_limited_until=_time(status.cooldown_until), last_used=_time(status.last_used),
        last_error=scrub(status.last_error, account), requests=status.requests,
        failures=status.failures, rate_limits=status.rate_limits, in_flight=status.in_flight,
        weight=status.weight, priority=status.priority, quota=_quota(status.quota),
        out_reason=status.out_reason, denied_models=list(status.denied_models),
        strategy_picks=status.strategy_picks, affinity_picks=status.affinity_picks)


def health_endpoint(pool: AccountPool, *, state: StateBackend | None = None
                    ) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint answering 200 while an account can serve, 503 otherwise.

    The 503 carries ``Retry-After`` when a rate-limited account will come back by
    itself, so a load balancer (or a person) knows when to look again. Mount it
    with ``Route("/health", health_endpoint(pool))``.

    Parameters:
        pool: the :class:`AccountPool` to report on.
        state: the pool's shared state backend: while it is unreachable the status is
            ``"degraded"`` (still 200: every replica keeps serving on its own state).
    """

    async def health(request: Request) -> Response:
        counts = count_states(pool.statuses())
        ok = counts["available_accounts"] > 0
        headers = {"cache-control": "no-store"}
        retry_after = None
        if not ok:
            soonest = pool.soonest_recovery()
            if soonest is not None:
                retry_after = max(1, math.ceil(soonest - pool.now()))
                headers["retry-after"] = str(retry_after)
        shared = state_view(state) if state is not None and state.shared else None
        word = "unavailable" if not ok else "degraded" if shared and shared.degraded else "ok"
        view = HealthView(status=word, retry_after=retry_after, state=shared, **counts)
        return Response(_ENCODER.encode(view), status_code=200 if ok else 503,
                        headers=headers, media_type="application/json")

    return health
