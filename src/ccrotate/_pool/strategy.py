"""Selection strategies: which available account serves the next request.

A strategy sees only accounts that can serve right now and returns one name.
It is called under the pool's lock, must not block, and keeps whatever memory
it needs keyed by account name so that it survives reloads of the accounts file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ccrotate._pool.ratelimit import QuotaSnapshot

__all__ = ["STRATEGIES", "Candidate", "FirstAvailable", "RoundRobin", "SelectionContext",
           "SelectionStrategy", "strategy_named"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """What a strategy may know about an account that can serve now."""

    name: str
    weight: int
    priority: int
    in_flight: int
    quota: QuotaSnapshot | None


@dataclass(frozen=True, slots=True)
class SelectionContext:
    """Per-request facts a strategy may use.

    Parameters:
        model: the model the request asks for.
        session_key: the client's session (``metadata.user_id``), for affinity.
        headers: the client's request headers as ASGI pairs (lower-case bytes names),
            read through :meth:`header`; kept as the server gave them, nothing copied.
    """

    model: str | None = None
    session_key: str | None = None
    headers: Sequence[tuple[bytes, bytes]] = ()

    def header(self, name: str) -> str | None:
        """The first value of the request header ``name`` (any case), or ``None``."""
        key = name.lower().encode("latin-1")
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None


class SelectionStrategy(Protocol):
    """Chooses one of the candidates (never empty); ``forget`` drops removed accounts."""

    def select(self, candidates: Sequence[Candidate], context: SelectionContext) -> str: ...

    def peek(self, candidates: Sequence[Candidate], context: SelectionContext) -> str:
        """What :meth:`select` would answer, without moving any rotation state."""
        ...

    def forget(self, names: Iterable[str]) -> None: ...


def _best_tier(candidates: Sequence[Candidate]) -> list[Candidate]:
    # Lower priority numbers are preferred; higher tiers only serve when the best is empty.
    top = min(c.priority for c in candidates)
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

    def select(self, candidates: Sequence[Candidate], context: SelectionContext) -> str:
        return self._choose(candidates, self._current)

    def peek(self, candidates: Sequence[Candidate], context: SelectionContext) -> str:
        return self._choose(candidates, dict(self._current))

    @staticmethod
    def _choose(candidates: Sequence[Candidate], current: dict[str, int]) -> str:
        tier = _best_tier(candidates)  # never empty: candidates is not
        weighted = [c for c in tier if c.weight > 0] or tier
        total = 0
        for c in weighted:
            w = c.weight or 1
            total += w
            current[c.name] = current.get(c.name, 0) + w
        # max() keeps the first of equal values, so ties go to file order.
        best = max(weighted, key=lambda c: current[c.name])
        current[best.name] -= total
        return best.name

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


STRATEGIES: dict[str, type[RoundRobin] | type[FirstAvailable]] = {
    "round_robin": RoundRobin,
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
