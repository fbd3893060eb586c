"""AccountPool: which account serves a request, and what each account's state is.

Every method is synchronous and finishes under one ``threading.Lock`` without
awaiting, so within an event loop (or across threads in a notebook) no two
callers can see the same cooled account as free, and no update is lost. I/O
(refreshing tokens, writing files) never happens here: callers do it outside and
report the outcome back.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from cachetools import Cache, TTLCache

from ccrotate._accounts.model import Account, AccountKind
from ccrotate._checks import has_methods, is_callable, positive
from ccrotate._exceptions import ConfigError, NoAccountAvailable, PoolError, UnknownAccount
from ccrotate._pool.ratelimit import HeaderGetter, QuotaSnapshot, cooldown_until, parse_quota
from ccrotate._pool.state import AccountRuntime, AccountState, Event, transition
from ccrotate._pool.strategy import (
    Candidate,
    FirstAvailable,
    RoundRobin,
    SelectionContext,
    SelectionStrategy,
)
from ccrotate._pool.taxonomy import AccountAction, Verdict

__all__ = ["AccountPool", "AccountStatus", "MemoryStateStore", "PoolEvent", "ReloadResult",
           "StateStore"]

_NO_CONTEXT = SelectionContext()
AFFINITY_SIZE = 65536
"""Sessions remembered at most (each costs a dict entry, about 200 bytes)."""
QUOTA_REFRESH = 1.0
"""Seconds between two parses of a successful response's rate-limit headers."""
log = logging.getLogger("ccrotate.pool")


class StateStore(Protocol):
    """Where runtime records live. In memory by default; a shared store can replace it."""

    def get(self, name: str) -> AccountRuntime | None: ...
    def put(self, name: str, runtime: AccountRuntime) -> None: ...
    def delete(self, name: str) -> None: ...


class MemoryStateStore:
    """The default store: a dict in this process."""

    def __init__(self) -> None:
        self._data: dict[str, AccountRuntime] = {}
        # The dict's own get, bound per instance: the pool asks several times per
        # request, and a C call spares a Python frame each time.
        self.get = self._data.get  # type: ignore[method-assign, assignment]

    def get(self, name: str) -> AccountRuntime | None:
        return self._data.get(name)

    def put(self, name: str, runtime: AccountRuntime) -> None:
        self._data[name] = runtime

    def delete(self, name: str) -> None:
        self._data.pop(name, None)


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """A read-only snapshot of one account, safe to show (no secrets, masked credential)."""

    name: str
    kind: AccountKind
    state: AccountState
    credential_hint: str
    cooldown_until: float | None
    token_expires_at: float | None
    last_used: float | None
    last_error: str | None
    requests: int
    failures: int
    rate_limits: int
    in_flight: int
    weight: int
    priority: int
    quota: QuotaSnapshot | None
    out_reason: str | None = None
    """Why it is not serving (``quota``, ``spend_cap``, ``overloaded`` …), ``None`` if it is."""
    denied_models: tuple[str, ...] = ()
    """Models this account was recently refused (403/permission_error) and is skipped for."""
    strategy_picks: int = 0
    """Requests the strategy gave it."""
    affinity_picks: int = 0
    """Requests session affinity kept on it."""


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """Told to listeners after a state change (outside the lock)."""

    account: str
    event: Event
    before: AccountState
    after: AccountState
    until: float | None = None
    reason: str | None = None
    remote: bool = False
    """Applied from another replica's report (:meth:`AccountPool.apply_remote`), not seen here."""
    cause: str | None = None
    """The taxonomy reason of a cooldown or backoff (``quota``, ``overloaded`` ...)."""


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What :meth:`AccountPool.replace_accounts` changed."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]


class AccountPool:
    """A pool of Claude accounts with per-account state and a selection strategy.

    Usable on its own (a notebook needs no server)::

        pool = AccountPool(AccountsFile("~/.claude/accounts.json").load())
        account = pool.acquire()
        ...  # call the API with account.credential.reveal()
        pool.report_rate_limited(account.name, response.headers)

    Parameters:
        accounts: the accounts, in preference order.
        strategy: a :class:`SelectionStrategy`; :class:`RoundRobin` by default.
        rotation: ``False`` always picks the first account that can serve.
        default_cooldown: seconds to cool a 429 that carries no reset information.
        clock: epoch-seconds clock (tests pass a fake one).
        store: where runtime records live.
        backoff_base: the first backoff (seconds) after a headerless 429, a 529 or a 5xx;
            it doubles with each failure in a row, with jitter.
        backoff_cap: the longest such backoff (seconds).
        entitlement_ttl: seconds an account stays skipped for a model it was refused (403).
        forbidden_threshold: 403s in a row (from different requests) that take the
            account out as ``auth_error``.
        affinity_ttl: seconds a session stays bound to the account that served it (the
            prompt cache's lifetime); ``None`` or 0 turns session affinity off.
        session_header: the request header naming a session when ``metadata.user_id``
            names none (``None``: headers are not looked at).
    """

    def __init__(self, accounts: Iterable[Account] = (), *,
                 strategy: SelectionStrategy | None = None, rotation: bool = True,
                 default_cooldown: float = 60.0, clock: Callable[[], float] = time.time,
                 store: StateStore | None = None, backoff_base: float = 2.0,
                 backoff_cap: float = 120.0, entitlement_ttl: float = 900.0,
                 forbidden_threshold: int = 3, affinity_ttl: float | None = 300.0,
                 session_header: str | None = "x-session-id") -> None:
        if strategy is None:
            strategy = RoundRobin() if rotation else FirstAvailable()
        has_methods("AccountPool", "strategy", strategy, "select", "peek", "forget")
        is_callable("AccountPool", "clock", clock)
        self._strategy = strategy
        self._clock = clock
        self.default_cooldown = positive("AccountPool", "default_cooldown", default_cooldown)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.forbidden_threshold = forbidden_threshold
        # (account, model) pairs the upstream refused; bounded so a flood of odd model
        # names cannot grow it, and timed by the pool's clock so tests can expire it.
        self._denied: TTLCache[tuple[str, str], float] = TTLCache(
            maxsize=4096, ttl=entitlement_ttl, timer=clock)
        # Session -> account. Bounded: a flood of one-off sessions evicts the oldest.
        # Values are (account, when bound or last extended).
        self._bindings: TTLCache[str, tuple[str, float]] | None = TTLCache(
            maxsize=AFFINITY_SIZE, ttl=affinity_ttl, timer=clock) if affinity_ttl else None
        self._rebind_after = (affinity_ttl or 0.0) / 10
        self.session_header: bytes | None = (
            session_header.lower().encode("latin-1") if session_header else None)
        self._release_waiters: set[Callable[[], None]] = set()
        self._in_flight_watcher: Callable[[str, int], None] | None = None
        self.affinity_counts: dict[str, int] = {"hit": 0, "miss": 0, "rebind": 0}
        """Affinity decisions so far: bound account served (``hit``), a new session
        (``miss``), the bound account could not serve and another was bound (``rebind``)."""
        self._store: StateStore = store if store is not None else MemoryStateStore()
        self._lock = threading.Lock()
        self._order: list[str] = []
        self._listeners: list[Callable[[PoolEvent], None]] = []
        self.replace_accounts(accounts)

    # -- reading -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._order

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __repr__(self) -> str:
        return f"<AccountPool accounts={len(self._order)}>"

    def now(self) -> float:
        """The pool's clock (epoch seconds); a test may have replaced it."""
        return self._clock()

    @property
    def affinity(self) -> bool:
        """Whether requests of one session stay on one account."""
        return self._bindings is not None

    def bound(self, session: str) -> str | None:
        """The account ``session`` is bound to now, if any."""
        with self._lock:
            entry = self._bindings.get(session) if self._bindings is not None else None
            return entry[0] if entry is not None else None

    @property
    def names(self) -> list[str]:
        """Account names in preference order."""
        return list(self._order)

    def account(self, name: str) -> Account:
        """The current credentials of ``name`` (raises :class:`UnknownAccount`)."""
        return self._runtime(name).account

    def accounts(self) -> list[Account]:
        """Every account's current credentials, in order."""
        with self._lock:
            return [self._rt(n).account for n in self._order]

    def status(self, name: str) -> AccountStatus:
        """A snapshot of one account."""
        with self._lock:
            rt = self._runtime(name)
            now = self._clock()
            self._expire(rt, now)
            return _status(rt, now, self._denied_for(name))

    def statuses(self) -> list[AccountStatus]:
        """Snapshots of every account, in order."""
        now = self._clock()
        with self._lock:
            out = []
            for name in self._order:
                rt = self._rt(name)
                self._expire(rt, now)
                out.append(_status(rt, now, self._denied_for(name)))
            return out

    def peek(self) -> str | None:
        """Which account an unpinned request would get now, without taking it."""
        with self._lock:
            candidates = self._candidates(self._clock(), (), None)
            if not candidates:
                return None
            return self._strategy.peek(candidates, _NO_CONTEXT)

    def soonest_recovery(self) -> float | None:
        """Epoch seconds when the first cooling account comes back; ``None`` if none is cooling."""
        now = self._clock()
        with self._lock:
            ends = [until for n in self._order if (until := _back_at(self._rt(n), now))]
        return min(ends) if ends else None

    # -- selecting ---------------------------------------------------------------------------

    def acquire(self, name: str | None = None, *, exclude: Collection[str] = (),
                context: SelectionContext | None = None) -> Account:
        """Choose the account for one request attempt and count it as used.

        ``name`` pins the request to that account. ``exclude`` holds accounts this
        request already tried. Raises :class:`UnknownAccount` for an unknown pinned
        name and :class:`NoAccountAvailable` (with ``retry_after``) when nothing can serve.
        """
        now = self._clock()
        with self._lock:
            if name is not None:
                rt = self._runtime(name)
                self._expire(rt, now)
                if not _can_serve(rt):
                    raise self._unavailable_one(rt, now)
                if _at_cap(rt):
                    raise NoAccountAvailable(f"account {name!r} is at its maxConcurrent "
                                             f"({rt.account.max_concurrent})", retry_after=1.0,
                                             at_capacity=True)
            else:
                # Cache.__len__, not len(): TTLCache's expires entries first (~5 µs per
                # request); an expired entry left here only costs a lookup that misses.
                model = context.model if context is not None and Cache.__len__(
                    self._denied) else None
                candidates = self._candidates(now, exclude, model)
                if not candidates:
                    raise self._unavailable_all(now, exclude, model)
                chosen, kept = self._choose(candidates, context)
                rt = self._rt(chosen)
                if kept:
                    rt.affinity_picks += 1
                else:
                    rt.strategy_picks += 1
            if rt.state is AccountState.PROBING:
                rt.probe_out = True  # the half-open probe: nobody else until it reports
            rt.requests += 1
            rt.in_flight += 1
            rt.last_used = now
            account = rt.account
            count = rt.in_flight
        if self._in_flight_watcher is not None and account.max_concurrent is not None:
            self._in_flight_watcher(account.name, count)
        return account

    def release(self, name: str) -> None:
        """The attempt on ``name`` is over (whatever its outcome). Idempotence is the caller's."""
        capped: int | None = None
        with self._lock:
            rt = self._store.get(name)
            if rt is not None and rt.in_flight > 0:
                rt.in_flight -= 1
                if rt.in_flight == 0:
                    # A probe that ended without an outcome (cancelled): let another try.
                    rt.probe_out = False
                if rt.account.max_concurrent is not None:
                    capped = rt.in_flight
            waiters = list(self._release_waiters) if self._release_waiters else None
        if capped is not None and self._in_flight_watcher is not None:
            self._in_flight_watcher(name, capped)
        if waiters:
            for wake in waiters:
                wake()  # outside the lock: a waiter's acquire takes it again

    def on_release(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake()`` after every :meth:`release` (must not block); returns the undo.

        For callers waiting for an account at its ``maxConcurrent`` to free up.
        """
        with self._lock:
            self._release_waiters.add(wake)

        def undo() -> None:
            with self._lock:
                self._release_waiters.discard(wake)

        return undo

    # -- outcomes ----------------------------------------------------------------------------

    def report_success(self, name: str, headers: HeaderGetter | None = None) -> None:
        """A request succeeded; remember the quota headers it carried.

        Under load the headers of one success a second are enough for status and
        metrics, so newer ones are parsed at most every ``QUOTA_REFRESH`` seconds.
        A success also ends a backoff or probe and clears ``last_error``; when there is
        nothing to clear (the usual case) no lock is taken for it.
        """
        now = self._clock()
        rt = self._store.get(name)
        if rt is not None and (rt.last_error is not None or rt.backoff_streak
                               or rt.forbidden_strikes):
            with self._lock:
                event = self._apply(rt, Event.SUCCEEDED, now)
            self._emit(event)
        if headers is None:
            return
        if rt is not None and rt.quota is not None and now - rt.quota.seen_at < QUOTA_REFRESH:
            return
        quota = parse_quota(headers, now)
        if quota is None:
            return
        with self._lock:
            rt = self._store.get(name)
            if rt is not None:
                rt.quota = quota

    def report_rate_limited(self, name: str, headers: HeaderGetter, *, spend_cap: bool = False,
                            reason: str = "rate limited (429)") -> float:
        """Cool ``name`` until its reset headers allow it again; returns that time."""
        now = self._clock()
        until = cooldown_until(headers, now, default=self.default_cooldown, spend_cap=spend_cap)
        quota = parse_quota(headers, now)
        with self._lock:
            rt = self._store.get(name)
            if rt is None:
                return until
            if quota is not None:
                rt.quota = quota
            rt.failures += 1
            event = self._apply(rt, Event.RATE_LIMITED, now, until=until, reason=reason,
                                cause="spend_cap" if spend_cap else "quota")
        self._emit(event)
        return max(until, rt.cooldown_until)

    def report(self, name: str, verdict: Verdict, headers: HeaderGetter | None = None, *,
               model: str | None = None) -> float | None:
        """Apply the taxonomy's :class:`Verdict` for a failed attempt on ``name``.

        Parameters:
            name: the account that failed.
            verdict: what :func:`~ccrotate._pool.taxonomy.classify` decided.
            headers: the refusal's headers (their quota picture is kept for status).
            model: the request's model (an entitlement refusal is remembered for it).

        Returns when the account can serve again (epoch seconds), ``None`` if it can now.
        """
        action = verdict.action
        text = f"{verdict.reason.value}: {verdict.message}"[:200] if verdict.message \
            else verdict.reason.value
        if action is AccountAction.COOL:
            return self._cool(name, verdict, headers, text)
        if action is AccountAction.BACKOFF:
            return self._back_off(name, verdict, text)
        if action is AccountAction.DENY_MODEL:
            self._deny(name, model, text)
            return None
        if action is AccountAction.AUTH_ERROR:
            self.report_auth_error(name, text)
            return None
        self.report_failure(name, text)
        return None

    def _cool(self, name: str, verdict: Verdict, headers: HeaderGetter | None,
              text: str) -> float:
        if verdict.until is None:  # the taxonomy always dates a cooldown
            raise ValueError(f"a cooldown verdict for {name!r} has no end time")
        now = self._clock()
        quota = parse_quota(headers, now) if headers is not None else None
        with self._lock:
            rt = self._store.get(name)
            if rt is None:
                return verdict.until
            if quota is not None:
                rt.quota = quota
            rt.failures += 1
            rt.refusal = (verdict.error_type or "rate_limit_error", verdict.message)
            event = self._apply(rt, Event.RATE_LIMITED, now, until=verdict.until, reason=text,
                                cause=verdict.reason.value)
            until = rt.cooldown_until
        self._emit(event)
        return until

    def _back_off(self, name: str, verdict: Verdict, text: str) -> float | None:
        now = self._clock()
        with self._lock:
            rt = self._store.get(name)
            if rt is None:
                return None
            rt.failures += 1
            rt.refusal = (verdict.error_type or "api_error", verdict.message)
            delay = min(self.backoff_cap, self.backoff_base * 2 ** min(rt.backoff_streak, 30))
            # Jitter in [delay/2, delay]: accounts that failed together come back apart.
            until = now + delay * (0.5 + random.random() / 2)
            event = self._apply(rt, Event.FAILED, now, until=until, reason=text,
                                cause=verdict.reason.value)
            until = rt.backoff_until
        self._emit(event)
        return until

    def _deny(self, name: str, model: str | None, text: str) -> None:
        with self._lock:
            rt = self._store.get(name)
            if rt is None:
                return
            rt.failures += 1
            rt.last_error = text
            rt.refusal = ("permission_error", text.removeprefix("entitlement: "))
            if model is not None:
                self._denied[(name, model)] = self._clock()
            rt.forbidden_strikes += 1
            if rt.forbidden_strikes < self.forbidden_threshold:
                return
            # The same account refused request after request: it is the account, not the
            # model (a credential limited to Claude Code, a suspended organisation).
            event = self._apply(rt, Event.AUTH_FAILED, self._clock(), reason=(
                f"{rt.forbidden_strikes} refusals (403) in a row; last: {text}")[:200],
                cause="forbidden")
        self._emit(event)

    def denied(self, name: str, model: str) -> bool:
        """Whether ``name`` was recently refused ``model`` (and is skipped for it)."""
        with self._lock:
            return (name, model) in self._denied

    def cool_down(self, name: str, until: float, *, reason: str) -> None:
        """Cool ``name`` until ``until`` (epoch seconds) for a reason found elsewhere."""
        now = self._clock()
        with self._lock:
            event = self._apply(self._runtime(name), Event.RATE_LIMITED, now, until=until,
                                reason=reason, cause="cooldown")
        self._emit(event)

    def report_auth_error(self, name: str, reason: str) -> None:
        """Upstream rejected the credentials: take ``name`` out until they are renewed."""
        with self._lock:
            rt = self._store.get(name)
            if rt is None:
                return
            rt.failures += 1
            event = self._apply(rt, Event.AUTH_FAILED, self._clock(), reason=reason)
        self._emit(event)

    def report_failure(self, name: str, reason: str) -> None:
        """A failure that is not the account's fault (5xx, 529, network): counted only."""
        with self._lock:
            rt = self._store.get(name)
            if rt is not None:
                rt.failures += 1
                rt.last_error = reason

    # -- shared state (another replica's view, applied by ccrotate's state sync) ----------

    def apply_remote(self, name: str, event: Event, *, until: float | None = None,
                     reason: str | None = None, cause: str | None = None) -> bool:
        """Apply a state change another replica reported; ``True`` if it changed anything.

        Only news is applied: a cooldown or backoff ending no later than the one already
        known, an auth error already known, an operator's choice already made are
        skipped, so a replica may hear the same change many times. Listeners are told
        with ``remote=True``; the account's own counters (rate limits) stay this replica's.
        """
        now = self._clock()
        with self._lock:
            rt = self._store.get(name) if name in self._order else None
            if rt is None or not _is_news(rt, event, until, now):
                return False
            rate_limits = rt.rate_limits
            before = transition(rt, event, now=now, until=until, reason=reason, cause=cause)
            rt.rate_limits = rate_limits  # counted by the replica that saw the 429
            state_until = (rt.cooldown_until if event is Event.RATE_LIMITED
                           else rt.backoff_until if event is Event.FAILED else None)
            pool_event = PoolEvent(name, event, before, rt.state, state_until, reason,
                                   remote=True, cause=cause)
        self._emit(pool_event)
        return True

    def set_remote_in_flight(self, name: str, count: int) -> None:
        """Requests other replicas have in flight on ``name`` (counts toward its cap)."""
        with self._lock:
            rt = self._store.get(name) if name in self._order else None
            if rt is not None:
                rt.remote_in_flight = max(0, count)

    def watch_in_flight(self, watcher: Callable[[str, int], None] | None) -> None:
        """Call ``watcher(name, in_flight)`` whenever an account with a ``maxConcurrent``
        is acquired or released (a shared store keeps every replica's count); must not block.
        """
        self._in_flight_watcher = watcher

    def bind(self, session: str, name: str) -> None:
        """Bind ``session`` to ``name`` (a binding another replica made); no-op without affinity."""
        with self._lock:
            if self._bindings is not None and name in self._order:
                entry = self._bindings.get(session)
                if entry is None or entry[0] != name:
                    self._bindings[session] = (name, self._clock())

    def set_quota(self, name: str, quota: QuotaSnapshot) -> bool:
        """Keep ``quota`` for ``name`` if it is newer than the one known; ``True`` if kept."""
        with self._lock:
            rt = self._store.get(name) if name in self._order else None
            if rt is None or (rt.quota is not None and rt.quota.seen_at >= quota.seen_at):
                return False
            rt.quota = quota
            return True

    # -- administration ----------------------------------------------------------------------

    def disable(self, name: str, reason: str = "disabled by operator") -> None:
        """Take ``name`` out of rotation until :meth:`enable`; survives file reloads."""
        with self._lock:
            event = self._apply(self._runtime(name), Event.DISABLED, self._clock(), reason=reason)
        self._emit(event)

    def enable(self, name: str) -> None:
        """Put ``name`` back (it may still be cooling or need a login)."""
        with self._lock:
            event = self._apply(self._runtime(name), Event.ENABLED, self._clock())
        self._emit(event)

    def update_credentials(self, account: Account) -> None:
        """Swap in renewed credentials (after a refresh or a new login); clears ``auth_error``."""
        with self._lock:
            rt = self._runtime(account.name)
            rt.account = account
            event = self._apply(rt, Event.CREDENTIALS_RENEWED, self._clock())
        self._emit(event)

    def replace_accounts(self, accounts: Iterable[Account]) -> ReloadResult:
        """Apply a new set of accounts (a reload), keeping the state of unchanged ones."""
        new = list(accounts)
        for acc in new:
            if not isinstance(acc, Account):
                raise ConfigError(f"AccountPool.accounts: expected Account objects "
                                  f"(got {type(acc).__name__})")
        names = [a.name for a in new]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"AccountPool.accounts: account names must be unique "
                              f"(duplicated: {', '.join(map(repr, dupes))})")
        now = self._clock()
        added: list[str] = []
        changed: list[str] = []
        events: list[PoolEvent | None] = []
        with self._lock:
            for acc in new:
                rt = self._store.get(acc.name)
                if rt is None:
                    rt = AccountRuntime(account=acc)
                    self._store.put(acc.name, rt)
                    transition(rt, Event.RELOADED, now=now)
                    added.append(acc.name)
                elif rt.account != acc or rt.account.extra != acc.extra:
                    renewed = rt.account.credential != acc.credential
                    rt.account = acc
                    changed.append(acc.name)
                    events.append(self._apply(
                        rt, Event.CREDENTIALS_RENEWED if renewed else Event.RELOADED, now))
            removed = [n for n in self._order if n not in set(names)]
            for name in removed:
                self._store.delete(name)
            self._strategy.forget(removed)
            self._order = names
        for event in events:
            self._emit(event)
        return ReloadResult(tuple(added), tuple(removed), tuple(changed))

    def add_listener(self, listener: Callable[[PoolEvent], None]) -> None:
        """Call ``listener`` after every state change (metrics, logs). Must not block."""
        self._listeners.append(listener)

    # -- internals ---------------------------------------------------------------------------

    def _rt(self, name: str) -> AccountRuntime:
        # For names in self._order, whose records the pool itself put in the store: only a
        # store that loses records (a custom or shared one) can answer None here.
        rt = self._store.get(name)
        if rt is None:
            raise PoolError(f"the state store lost the record of account {name!r}")
        return rt

    def _runtime(self, name: str) -> AccountRuntime:
        rt = self._store.get(name) if name in self._order else None
        if rt is None:
            raise UnknownAccount(name)
        return rt

    def _apply(self, rt: AccountRuntime, event: Event, now: float, *,
               until: float | None = None, reason: str | None = None,
               cause: str | None = None) -> PoolEvent | None:
        before = transition(rt, event, now=now, until=until, reason=reason, cause=cause)
        if before is rt.state and event not in (Event.RATE_LIMITED, Event.FAILED):
            return None
        until_out = (rt.cooldown_until if event is Event.RATE_LIMITED
                     else rt.backoff_until if event is Event.FAILED else None)
        return PoolEvent(rt.account.name, event, before, rt.state, until_out, reason,
                         cause=cause)

    def _choose(self, candidates: list[Candidate], context: SelectionContext | None
                ) -> tuple[str, bool]:
        # Affinity first: the session's account while it can serve; else the strategy,
        # and the session is (re)bound to what it chose.
        bindings = self._bindings
        key = context.session_key if context is not None else None
        if key is not None and bindings is not None:
            entry = bindings.get(key)
            if entry is not None and any(c.name == entry[0] for c in candidates):
                self.affinity_counts["hit"] += 1
                now = self._clock()
                if now - entry[1] > self._rebind_after:
                    # Each use extends the binding, as it does the prompt cache; re-setting
                    # only now and then spares the TTL map's bookkeeping on most hits.
                    bindings[key] = (entry[0], now)
                return entry[0], True
            self.affinity_counts["rebind" if entry is not None else "miss"] += 1
        chosen = self._strategy.select(candidates, context or _NO_CONTEXT)
        for c in candidates:  # a loop, not any(): no generator per request
            if c.name == chosen:
                break
        else:
            # A custom strategy must never hand out a cooling or unknown account.
            raise ValueError(f"strategy chose {chosen!r}, which is not a candidate")
        if key is not None and bindings is not None:
            bindings[key] = (chosen, self._clock())
        return chosen, False

    def _denied_for(self, name: str) -> tuple[str, ...]:
        if not self._denied:
            return ()
        return tuple(sorted(m for (n, m) in list(self._denied.keys()) if n == name))

    def _emit(self, event: PoolEvent | None) -> None:
        if event is None:
            return
        for listener in self._listeners:
            # A broken metrics hook must not fail the request that reported the outcome.
            try:
                listener(event)
            except Exception:
                log.exception("pool listener %r failed on %s", listener, event.event.value)

    def _expire(self, rt: AccountRuntime, now: float) -> None:
        state = rt.state
        if (state is AccountState.RATE_LIMITED and rt.cooldown_until <= now) or (
                state is AccountState.BACKING_OFF and rt.backoff_until <= now):
            transition(rt, Event.COOLDOWN_EXPIRED, now=now)

    def _candidates(self, now: float, exclude: Collection[str],
                    model: str | None) -> list[Candidate]:
        out = []
        denied = self._denied if model is not None else None
        available = AccountState.AVAILABLE
        get = self._store.get
        for name in self._order:
            if name in exclude:
                continue
            rt = get(name)
            if rt is None:
                rt = self._rt(name)  # raises: the store lost it
            # Inlined _expire/_can_serve for the usual case: this runs per request per account.
            if rt.state is not available:
                self._expire(rt, now)
                if not _can_serve(rt):
                    continue
            acc = rt.account
            if acc.max_concurrent is not None and (
                    rt.in_flight + rt.remote_in_flight >= acc.max_concurrent):
                continue
            if denied is None or (name, model) not in denied:
                out.append(Candidate(name, acc.weight, acc.priority, rt.in_flight, rt.quota,
                                     rt.last_used))
        return out

    def _unavailable_one(self, rt: AccountRuntime, now: float) -> NoAccountAvailable:
        name = rt.account.name
        back = _back_at(rt, now)
        if back is not None:
            wait = back - now
            return NoAccountAvailable(
                f"account {name!r} is {rt.state.value} ({rt.out_reason}) for {wait:.0f}s more",
                retry_after=wait, refusal=rt.refusal)
        if rt.state is AccountState.AUTH_ERROR:
            return NoAccountAvailable(f"account {name!r} needs a new login")
        return NoAccountAvailable(f"account {name!r} is disabled")

    def _unavailable_all(self, now: float, exclude: Collection[str],
                         model: str | None = None) -> NoAccountAvailable:
        if not self._order:
            return NoAccountAvailable("the pool has no accounts")
        if any(_can_serve(rt) and _at_cap(rt)
               for rt in (self._rt(n) for n in self._order if n not in exclude)):
            return NoAccountAvailable("every account that can serve is at its maxConcurrent",
                                      retry_after=1.0, at_capacity=True)
        cooling = [(until, n) for n in self._order if (until := _back_at(self._rt(n), now))]
        if cooling:
            until, name = min(cooling)
            wait = max(until - now, 0.0)
            return NoAccountAvailable(
                f"all accounts are rate-limited or unavailable; the soonest ({name!r}) "
                f"is back in {wait:.0f}s", retry_after=wait, refusal=self._rt(name).refusal)
        if any(self._rt(n).state is AccountState.AVAILABLE for n in exclude if n in self):
            return NoAccountAvailable("every account that can serve was tried for this request")
        refused = [n for n in self._order if n not in exclude and _can_serve(self._rt(n))
                   and (n, model) in self._denied]
        if refused:
            # Waiting will not help: every account that could serve was refused this model.
            return NoAccountAvailable(
                f"every account that can serve was recently refused model {model!r}",
                refusal=self._rt(refused[0]).refusal)
        return NoAccountAvailable("no account can serve: all are disabled or need a new login")


def _at_cap(rt: AccountRuntime) -> bool:
    cap = rt.account.max_concurrent
    return cap is not None and rt.in_flight + rt.remote_in_flight >= cap


def _is_news(rt: AccountRuntime, event: Event, until: float | None, now: float) -> bool:
    # Whether a remote change would change this replica's record at all.
    if event is Event.RATE_LIMITED:
        return until is not None and until > max(rt.cooldown_until, now)
    if event is Event.FAILED:
        return until is not None and until > max(rt.backoff_until, now)
    if event is Event.SUCCEEDED:
        return rt.backoff_streak > 0
    if event is Event.AUTH_FAILED:
        return not rt.auth_broken
    if event is Event.CREDENTIALS_RENEWED:
        return rt.auth_broken
    if event is Event.DISABLED:
        return rt.admin_override is not True
    if event is Event.ENABLED:
        return rt.admin_override is not False
    return False


def _can_serve(rt: AccountRuntime) -> bool:
    state = rt.state
    return state is AccountState.AVAILABLE or (state is AccountState.PROBING
                                               and not rt.probe_out)


def _back_at(rt: AccountRuntime, now: float) -> float | None:
    # When a cooling or backing-off account can serve again (None: not waiting on time).
    if rt.state is AccountState.RATE_LIMITED and rt.cooldown_until > now:
        return rt.cooldown_until
    if rt.state is AccountState.BACKING_OFF and rt.backoff_until > now:
        return rt.backoff_until
    if rt.state is AccountState.PROBING:
        return now + 1.0  # its probe is out; it answers within a request's time
    return None


def _status(rt: AccountRuntime, now: float, denied: tuple[str, ...]) -> AccountStatus:
    acc = rt.account
    serving = _can_serve(rt)
    return AccountStatus(
        name=acc.name, kind=acc.kind, state=rt.state, credential_hint=acc.credential.masked,
        cooldown_until=_back_at(rt, now) if rt.state is not AccountState.PROBING else None,
        token_expires_at=acc.expires_at, last_used=rt.last_used, last_error=rt.last_error,
        requests=rt.requests, failures=rt.failures, rate_limits=rt.rate_limits,
        in_flight=rt.in_flight, weight=acc.weight, priority=acc.priority, quota=rt.quota,
        out_reason=None if serving else _why_not_serving(rt),
        denied_models=denied, strategy_picks=rt.strategy_picks,
        affinity_picks=rt.affinity_picks)


def _why_not_serving(rt: AccountRuntime) -> str | None:
    state = rt.state
    if state is AccountState.DISABLED:
        return "disabled"
    if state is AccountState.AUTH_ERROR:
        return "forbidden" if rt.out_reason == "forbidden" else "auth_error"
    if state is AccountState.PROBING:
        return "probing"
    return rt.out_reason
