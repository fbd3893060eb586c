"""Selection strategies: which available account serves the next request.

A strategy sees only accounts that can serve right now and returns one name.
It is called under the pool's lock, must not block, and keeps whatever memory
it needs keyed by account name so that it survives reloads of the accounts file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ccrotate._pool.ratelimit import QuotaSnapshot

__all__ = ["STRATEGIES", "Candidate", "FirstAvailable", "LeastRecentlyUsed", "QuotaAware",
           "RoundRobin", "SelectionContext", "SelectionStrategy", "strategy_named"]


@dataclass(frozen=True, slots=True, init=False)
class Candidate:
    """What a strategy may know about an account that can serve now."""

    name: str
    weight: int
    priority: int
    in_flight: int
    quota: QuotaSnapshot | None
    last_used: float | None = None
    """When the account was last handed out (epoch seconds), ``None`` if never."""

    def __init__(self, name: str, weight: int, priority: int, in_flight: int,
                 quota: QuotaSnapshot | None, last_used: float | None = None) -> None:
        # A frozen dataclass's own __init__ sets each field through object.__setattr__
        # (1.1 µs for these six); the pool makes one per account per request, so the
        # slots are filled through their descriptors (0.5 µs). Frozen all the same.
        _name(self, name)
        _weight(self, weight)
        _priority(self, priority)
        _in_flight(self, in_flight)
        _quota(self, quota)
        _last_used(self, last_used)


_name, _weight, _priority, _in_flight, _quota, _last_used = (
    Candidate.__dict__[f].__set__
    for f in ("name", "weight", "priority", "in_flight", "quota", "last_used"))


@dataclass(frozen=True, slots=True, init=False)
class SelectionContext:
    """Per-request facts a strategy may use.

    Parameters:
        model: the model the request asks for.
        session_key: the conversation's affinity key (the session in ``metadata.user_id``,
            else the session header, else a hash of the prompt prefix up to its first
            ``cache_control``); ``None`` when there is none or affinity is off.
        headers: the client's request headers as ASGI pairs (lower-case bytes names),
            read through :meth:`header`; kept as the server gave them, nothing copied.
        ticket: this request's number in a rotation shared by several replicas (a shared
            state store hands them out); :class:`RoundRobin` follows it when given.
    """

    model: str | None = None
    session_key: str | None = None
    headers: Sequence[tuple[bytes, bytes]] = ()
    ticket: int | None = None

    def __init__(self, model: str | None = None, session_key: str | None = None,
                 headers: Sequence[tuple[bytes, bytes]] = (), ticket: int | None = None
                 ) -> None:
        # One per request: filled through the slots' descriptors, as Candidate is.
        _model(self, model)
        _session_key(self, session_key)
        _headers(self, headers)
        _ticket(self, ticket)

    def header(self, name: str) -> str | None:
        """The first value of the request header ``name`` (any case), or ``None``."""
        key = name.lower().encode("latin-1")
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None


_model, _session_key, _headers, _ticket = (
    SelectionContext.__dict__[f].__set__ for f in ("model", "session_key", "headers", "ticket"))


class SelectionStrategy(Protocol):
    """Chooses which account serves a request: a small public protocol to implement.

    The pool calls it under its lock with only the accounts that can serve now (never
    an empty list), in file order; it must return one of their names, quickly and
    without blocking or awaiting. Keep any memory keyed by account name.
    """

    def select(self, candidates: Sequence[Candidate], context: SelectionContext) -> str:
        """The account for this request.

        Parameters:
            candidates: the accounts that can serve now.
            context: what is known of the request (model, session, headers).
        """
        ...

    def peek(self, candidates: Sequence[Candidate], context: SelectionContext) -> str:
        """What :meth:`select` would answer, without moving any rotation state."""
        ...

    def forget(self, names: Iterable[str]) -> None:
        """Drop any memory of ``names`` (removed from the pool)."""
        ...


def _best_tier(candidates: Sequence[Candidate]) -> list[Candidate]:
    # Lower priority numbers are preferred; higher tiers only serve when the best is empty.
    # Loops rather than min() over a generator: this runs per request.
    top = candidates[0].priority
    mixed = False
    for c in candidates:
        if c.priority != top:
            mixed = True
            if c.priority < top:
                top = c.priority
    if not mixed:
        return list(candidates)
    return [c for c in candidates if c.priority == top]


class RoundRobin:
    """Smooth weighted round-robin (nginx's algorithm) within the best priority tier.

    With equal weights this is plain round-robin in file order. Weights of 0 are
    only chosen when nothing else can serve. The per-account "current weight" is
    the rotation position, kept by name, so a reload of the file does not restart
    the rotation.
    """

    def __init__(self) -> None:
        self._current: dict[str, int] = {}
        self._cycles: dict[tuple[tuple[str, int], ...], list[str]] = {}

    def select(self, candidates: Sequence[Candidate], context: SelectionContext) -> str:
        if context.ticket is not None:
            return self._shared(candidates, context.ticket)
        return self._choose(candidates, self._current)

    def _shared(self, candidates: Sequence[Candidate], ticket: int) -> str:
        # Replicas share one counter, not each other's weights: the ticket indexes the
        # cycle the smooth algorithm draws for these candidates, the same in every replica.
        tier = _best_tier(candidates)
        weighted = [c for c in tier if c.weight > 0] or tier
        key = tuple((c.name, c.weight or 1) for c in weighted)
        cycle = self._cycles.get(key)
        if cycle is None:
            if len(self._cycles) > 256:  # candidate sets change with cooldowns; keep it small
                self._cycles.clear()
            current: dict[str, int] = {}
            cycle = [self._choose(weighted, current) for _ in range(sum(w for _, w in key))]
            self._cycles[key] = cycle
        return cycle[ticket % len(cycle)]

    def peek(self, candidates: Sequence[Candidate], context: SelectionContext) -> str:
        return self._choose(candidates, dict(self._current))

    @staticmethod
    def _choose(candidates: Sequence[Candidate], current: dict[str, int]) -> str:
        tier = _best_tier(candidates)  # never empty: candidates is not
        weighted = [c for c in tier if c.weight > 0] or tier
        total = 0
        best_name: str | None = None
        best_value = 0
        for c in weighted:
            w = c.weight or 1
            total += w
            name = c.name
            value = current[name] = current.get(name, 0) + w
            # Strictly greater: the first of equal values wins, so ties go to file order.
            if best_name is None or value > best_value:
                best_name, best_value = name, value
        current[best_name] -= total  # type: ignore[index]  # weighted is never empty
        return best_name  # type: ignore[return-value]

    def forget(self, names: Iterable[str]) -> None:
        for name in names:
            self._current.pop(name, None)


class FirstAvailable:
    """Always the first account (best tier, file order) that can serve: rotation off."""

    def select(self, candidates: Sequence[Candidate], context: SelectionContext) -> str:
        return _best_tier(candidates)[0].name

    peek = select

    def forget(self, names: Iterable[str]) -> None:
        return None


def _serving(candidates: Sequence[Candidate]) -> list[Candidate]:
    # The best priority tier; weight 0 only when nothing else in it can serve.
    tier = _best_tier(candidates)
    return [c for c in tier if c.weight > 0] or tier


class LeastRecentlyUsed:
    """The account handed out longest ago (never used first), within the best tier.

    Spreads load like round-robin, but an account back from a cooldown is preferred
    at once, since it sat idle. Ties go to file order.
    """

    def select(self, candidates: Sequence[Candidate], context: SelectionContext) -> str:
        best = min(_serving(candidates),
                   key=lambda c: -math.inf if c.last_used is None else c.last_used)
        return best.name

    peek = select

    def forget(self, names: Iterable[str]) -> None:
        return None


UTILIZATION_STEP = 0.05
"""Utilisations this close count as equal for :class:`QuotaAware`, so the reset decides."""


class QuotaAware:
    """The account with the most quota left in its binding window, within the best tier.

    It reads each account's last rate-limit headers (the pool keeps them, at most one
    parse a second): the unified window the upstream names as representative for
    subscription accounts, the fullest ``anthropic-ratelimit-*`` bucket for API keys.
    Lower utilisation wins (in steps of ``UTILIZATION_STEP``); among equals the window
    that resets soonest drains first, since what is left of it is lost at the reset;
    then the fewest requests in flight, then file order. An account with no headers yet
    counts as empty with no known reset.
    """

    def select(self, candidates: Sequence[Candidate], context: SelectionContext) -> str:
        return min(_serving(candidates), key=_quota_key).name

    peek = select

    def forget(self, names: Iterable[str]) -> None:
        return None


def _quota_key(c: Candidate) -> tuple[int, float, int]:
    window = c.quota.binding if c.quota is not None else None
    if window is None:
        return 0, math.inf, c.in_flight
    used = window.utilization or 0.0
    reset = window.reset if window.reset is not None else math.inf
    return math.floor(used / UTILIZATION_STEP + 1e-9), reset, c.in_flight


STRATEGIES: dict[str, Callable[[], SelectionStrategy]] = {
    "round_robin": RoundRobin,
    "least_recently_used": LeastRecentlyUsed,
    "quota_aware": QuotaAware,
    "first_available": FirstAvailable,
}
"""The strategies the ``strategy`` setting can name."""


def strategy_named(name: str, *, rotation: bool = True) -> SelectionStrategy:
    """A new strategy by its setting name; ``rotation=False`` always means first available."""
    if not rotation:
        return FirstAvailable()
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of "
                         f"{', '.join(STRATEGIES)}") from None
