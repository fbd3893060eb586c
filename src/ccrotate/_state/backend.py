"""The state backend protocol, the records replicas exchange, and the in-memory backend.

A pool decides locally and synchronously (:class:`~ccrotate._pool.pool.AccountPool`);
a backend holds what several replicas of that pool must agree on:

* account *holds*: cooldowns and backoffs (which expire by themselves), auth errors and
  an operator's disable/enable, written as :class:`Change` records and announced to
  every replica at once;
* the rotation cursor (one ticket per request), session bindings (with a TTL),
  per-replica in-flight counts of accounts with a ``maxConcurrent``, the last quota
  snapshot of each account;
* the current OAuth tokens and a refresh lock, so one replica refreshes and every
  other one adopts its tokens.

Every method is async, bounded in time, and never raises for the store's own trouble:
it answers ``None`` or ``False`` and the backend reports itself ``degraded`` (see
:class:`BackendHealth`) until :meth:`StateBackend.ping` succeeds again. The
in-memory backend is the default and is not ``shared``: with it the proxy never
calls the backend on the request path.
"""

from __future__ import annotations

import itertools
import math
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectSendStream

from ccrotate._accounts.model import OAuthTokens, Secret
from ccrotate._pool.ratelimit import QuotaSnapshot

__all__ = ["SLOTS", "TOKENS", "BackendHealth", "Batch", "Change", "MemoryStateBackend",
           "Snapshot", "StateBackend", "expiry", "parse_tokens", "slot_of", "token_record"]

TOKENS = "tokens"
"""The :attr:`Change.event` that announces new OAuth tokens (they are read from the store)."""


class Change(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One account's state change, as replicas tell each other (never holds a secret).

    ``event`` is a :class:`~ccrotate._pool.state.Event` value (``rate_limited``,
    ``failed``, ``succeeded``, ``auth_failed``, ``credentials_renewed``, ``disabled``,
    ``enabled``) or :data:`TOKENS`.
    """

    account: str
    event: str
    until: float | None = None
    reason: str | None = None
    cause: str | None = None
    replica: str = ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What requests need from the store before choosing an account (one round trip
    serves every request that arrived while the previous one was out)."""

    ticket: int
    """The first of ``len(bound)`` consecutive numbers in the shared rotation."""
    version: int
    """Bumped by every change of a hold: a new value means the holds are worth re-reading."""
    in_flight: Mapping[str, int]
    """Requests the *other* replicas have in flight, per account with a ``maxConcurrent``."""
    bound: tuple[str | None, ...]
    """Per request, in order: the account its session is bound to, if any."""


@dataclass(slots=True)
class Batch:
    """Writes gathered while the store was busy, sent in one round trip."""

    changes: list[Change] = field(default_factory=list[Change])
    in_flight: dict[str, int] = field(default_factory=dict[str, int])
    """This replica's in-flight count per capped account (the latest wins)."""
    bindings: dict[str, str] = field(default_factory=dict[str, str])
    """Session -> account."""
    quotas: dict[str, QuotaSnapshot] = field(default_factory=dict[str, QuotaSnapshot])

    def __bool__(self) -> bool:
        return bool(self.changes or self.in_flight or self.bindings or self.quotas)


@dataclass(frozen=True, slots=True)
class BackendHealth:
    """How a backend is doing, as ``/status``, ``/health`` and ``/metrics`` show it."""

    kind: str
    """``memory`` or ``redis``."""
    target: str | None
    """Where it is (a Redis URL with any password masked)."""
    shared: bool
    degraded: bool
    """The store cannot be reached: each replica decides on its own state meanwhile."""
    errors: int
    """Calls that failed (timeouts, refused connections) since start."""
    last_error: str | None = None
    degraded_since: float | None = None
    calls: int = 0
    """Round trips made to the store since start (a pipeline counts once)."""


@runtime_checkable
class StateBackend(Protocol):
    """Where the state several replicas of one pool share lives (see the module docstring).

    Implement it for another store; :class:`MemoryStateBackend` is the reference and
    :class:`RedisStateBackend` the shared one. No method raises for the store's own
    trouble: each answers ``None``/``False`` and :meth:`health` reports ``degraded``.
    """

    @property
    def shared(self) -> bool:
        """Whether other processes see this state (``False``: the proxy never asks it)."""
        ...

    def health(self) -> BackendHealth:
        """The backend's state, without I/O."""
        ...

    async def start(self) -> None:
        """Connect (a failure leaves it degraded, never raises)."""
        ...

    async def aclose(self) -> None:
        """Disconnect."""
        ...

    async def ping(self) -> bool:
        """Try the store; ``True`` clears ``degraded``."""
        ...

    async def snapshot(self, *, capped: Sequence[str], sessions: Sequence[str | None],
                       replica: str) -> Snapshot | None:
        """One round trip before requests choose: a ticket each (``len(sessions)``
        consecutive ones), their sessions' bindings, and what may have changed."""
        ...

    async def holds(self, names: Sequence[str]) -> list[Change] | None:
        """Every hold in force on ``names`` (cooldowns, backoffs, auth errors, operator's)."""
        ...

    async def quotas(self, names: Sequence[str]) -> dict[str, QuotaSnapshot] | None:
        """The last quota snapshot shared for each of ``names`` that has one."""
        ...

    async def write(self, batch: Batch, *, replica: str, binding_ttl: float) -> bool:
        """Store ``batch`` and announce its changes, in one round trip."""
        ...

    async def tokens(self, name: str) -> OAuthTokens | None:
        """The newest OAuth tokens shared for ``name``."""
        ...

    async def share_tokens(self, name: str, tokens: OAuthTokens, *, replica: str) -> bool:
        """Store ``name``'s new tokens and announce them to every replica."""
        ...

    async def lock(self, key: str, ttl: float) -> str | None:
        """Take the lock ``key`` for at most ``ttl`` seconds; its token, or ``None``."""
        ...

    async def unlock(self, key: str, token: str) -> bool:
        """Release ``key`` if ``token`` still holds it (compare-and-delete)."""
        ...

    def listen(self, ready: Callable[[], object] | None = None
               ) -> AsyncGenerator[Change, None]:
        """Changes announced by any replica, until the connection is lost.

        ``ready()`` is called once the subscription is in place: announcements made
        from then on are not missed.
        """
        ...


# A hold lives in one slot per account; a change sets or clears slots.
_SLOT = {"rate_limited": "cool", "failed": "backoff", "auth_failed": "auth",
         "disabled": "admin", "enabled": "admin"}
_CLEARS = {"succeeded": ("backoff",), "credentials_renewed": ("auth",),
           "enabled": ("cool", "backoff", "auth")}
SLOTS = ("cool", "backoff", "auth", "admin")


def slot_of(change: Change) -> tuple[str | None, tuple[str, ...]]:
    """The slot ``change`` sets (``None``: sets none) and the slots it clears."""
    return _SLOT.get(change.event), _CLEARS.get(change.event, ())


def expiry(change: Change, now: float) -> float | None:
    """Seconds a hold stays in force; ``None``: until cleared; ``<= 0``: already over."""
    if change.event in ("rate_limited", "failed"):
        return (change.until or now) - now
    return None


class MemoryStateBackend:
    """The default backend: this process only, no I/O (``shared`` is ``False``).

    It keeps the same contract as a shared backend, so a test, or a single process
    that wants the records, can use it; the proxy skips it on the request path.
    """

    shared = False

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._cursor = itertools.count(1)
        self._version = 0
        self._holds: dict[tuple[str, str], tuple[Change, float]] = {}
        self._in_flight: dict[str, dict[str, int]] = {}
        self._bindings: dict[str, tuple[str, float]] = {}
        self._quotas: dict[str, QuotaSnapshot] = {}
        self._tokens: dict[str, OAuthTokens] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._listeners: set[MemoryObjectSendStream[Change]] = set()

    def __repr__(self) -> str:
        return "<MemoryStateBackend>"

    def health(self) -> BackendHealth:
        return BackendHealth("memory", None, shared=False, degraded=False, errors=0)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        for stream in list(self._listeners):
            await stream.aclose()

    async def ping(self) -> bool:
        return True

    async def snapshot(self, *, capped: Sequence[str], sessions: Sequence[str | None],
                       replica: str) -> Snapshot:
        now = self._clock()
        others = {name: sum(n for r, n in self._in_flight.get(name, {}).items() if r != replica)
                  for name in capped}
        first = next(self._cursor)
        for _ in range(len(sessions) - 1):
            next(self._cursor)
        return Snapshot(first, self._version, others,
                        tuple(self._bound(s, now) for s in sessions))

    def _bound(self, session: str | None, now: float) -> str | None:
        entry = self._bindings.get(session) if session is not None else None
        return entry[0] if entry is not None and entry[1] > now else None

    async def holds(self, names: Sequence[str]) -> list[Change]:
        now = self._clock()
        wanted = set(names)
        return [change for (name, _), (change, ends) in sorted(self._holds.items())
                if name in wanted and ends > now]

    async def quotas(self, names: Sequence[str]) -> dict[str, QuotaSnapshot]:
        return {n: self._quotas[n] for n in names if n in self._quotas}

    async def write(self, batch: Batch, *, replica: str, binding_ttl: float) -> bool:
        now = self._clock()
        for change in batch.changes:
            self._hold(change, now)
        if batch.changes:
            self._version += 1
        for name, count in batch.in_flight.items():
            self._in_flight.setdefault(name, {})[replica] = count
        for session, name in batch.bindings.items():
            self._bindings[session] = (name, now + binding_ttl)
        self._quotas.update(batch.quotas)
        self._announce(batch.changes)
        return True

    def _hold(self, change: Change, now: float) -> None:
        slot, clears = slot_of(change)
        for cleared in clears:
            self._holds.pop((change.account, cleared), None)
        if slot is not None:
            left = expiry(change, now)
            if left is None or left > 0:
                self._holds[(change.account, slot)] = (
                    change, math.inf if left is None else now + left)

    async def tokens(self, name: str) -> OAuthTokens | None:
        return self._tokens.get(name)

    async def share_tokens(self, name: str, tokens: OAuthTokens, *, replica: str) -> bool:
        self._tokens[name] = tokens
        self._announce([Change(account=name, event=TOKENS, replica=replica)])
        return True

    async def lock(self, key: str, ttl: float) -> str | None:
        now = self._clock()
        held = self._locks.get(key)
        if held is not None and held[1] > now:
            return None
        token = secrets.token_hex(16)
        self._locks[key] = (token, now + ttl)
        return token

    async def unlock(self, key: str, token: str) -> bool:
        held = self._locks.get(key)
        if held is None or held[0] != token:
            return False
        del self._locks[key]
        return True

    async def listen(self, ready: Callable[[], object] | None = None
                     ) -> AsyncGenerator[Change, None]:
        send, receive = anyio.create_memory_object_stream[Change](1024)
        self._listeners.add(send)
        if ready is not None:
            ready()
        try:
            async with receive:
                async for change in receive:
                    yield change
        finally:
            self._listeners.discard(send)

    def _announce(self, changes: Collection[Change]) -> None:
        for stream in list(self._listeners):
            for change in changes:
                try:
                    stream.send_nowait(change)
                except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    # A listener that cannot keep up re-reads the holds on its next request.
                    break


def token_record(tokens: OAuthTokens) -> bytes:
    """``tokens`` as stored (JSON); only ever written to the store, never logged."""
    return msgspec.json.encode({"access_token": tokens.access_token.reveal(),
                                "refresh_token": tokens.refresh_token.reveal(),
                                "expires_at": tokens.expires_at})


class _TokenRecord(msgspec.Struct):
    access_token: str
    refresh_token: str
    expires_at: float


def parse_tokens(data: bytes) -> OAuthTokens | None:
    """The tokens :func:`token_record` stored, ``None`` if the record is not one."""
    try:
        rec = msgspec.json.decode(data, type=_TokenRecord)
    except msgspec.DecodeError:
        return None
    return OAuthTokens(Secret(rec.access_token), Secret(rec.refresh_token), rec.expires_at)
