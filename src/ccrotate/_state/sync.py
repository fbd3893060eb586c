"""StateSync: a local pool kept in step with a shared :class:`StateBackend`.

The pool stays the decision maker: synchronous, one lock, no I/O. Around it:

* before a request chooses, :meth:`StateSync.before_acquire` gets, in one round trip, a
  rotation ticket, the holds' version, other replicas' in-flight counts of capped
  accounts and the session's binding, and applies them; the holds themselves are
  re-read only when their version moved. Requests that arrive while a round trip is
  out share the next one (each gets its own ticket and binding), so under load a round
  trip serves many requests;
* the pool's own changes (cooldowns, backoffs, auth errors, an operator's choice),
  in-flight counts and session bindings are queued and written by one writer task,
  batched into one round trip however many requests produced them;
* a subscriber applies the changes other replicas announce as they happen, and new
  OAuth tokens are handed to the token listeners (the refresher adopts them);
* a prober notices when the store is degraded, tries it with backoff, and on its
  return pushes the cooldowns still in force here and re-reads everyone else's.

When the store is degraded nothing waits on it: the request path skips it without
I/O and the pool decides on what it knows.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import anyio
import anyio.abc

from ccrotate._accounts.model import Account
from ccrotate._checks import positive
from ccrotate._pool.pool import AccountPool, PoolEvent
from ccrotate._pool.state import AccountState, Event
from ccrotate._pool.strategy import SelectionContext
from ccrotate._state.backend import TOKENS, Batch, Change, Snapshot, StateBackend

__all__ = ["StateSync"]

log = logging.getLogger("ccrotate.state")

_SHARED_EVENTS = frozenset({Event.RATE_LIMITED, Event.FAILED, Event.SUCCEEDED,
                            Event.AUTH_FAILED, Event.CREDENTIALS_RENEWED, Event.DISABLED,
                            Event.ENABLED})
_EVENTS = {e.value: e for e in Event}
TokenListener = Callable[[str], Awaitable[object]]


@dataclass(slots=True, eq=False)
class _Draw:
    # Requests waiting for the same round trip: their sessions, in arrival order.
    sessions: list[str | None] = field(default_factory=list[str | None])
    done: anyio.Event = field(default_factory=anyio.Event)
    snapshot: Snapshot | None = None


class StateSync:
    """Keeps ``pool`` in step with ``backend`` (see the module docstring); a service.

    Parameters:
        pool: the local pool.
        backend: the shared store.
        affinity_ttl: seconds a shared session binding lives.
        probe_interval: first pause before trying a degraded store again (doubles).
        probe_cap: longest such pause.
        quota_interval: seconds between two exchanges of quota snapshots.
        max_pending: writes queued while the store is slow; beyond, the oldest are
            dropped (the store is re-synchronised when it answers again).
        draw_wait: longest a request waits for its round trip before choosing on local
            state alone (the store's own timeouts normally end it much sooner).
    """

    def __init__(self, pool: AccountPool, backend: StateBackend, *,
                 affinity_ttl: float = 300.0, probe_interval: float = 0.25,
                 probe_cap: float = 5.0, quota_interval: float = 1.0,
                 max_pending: int = 10_000, draw_wait: float = 2.5) -> None:
        self.pool = pool
        self.backend = backend
        self.replica = secrets.token_hex(6)
        """This process's name in the store (in-flight counts, its own announcements)."""
        self.affinity_ttl = positive("StateSync", "affinity_ttl", affinity_ttl)
        self._probe = positive("StateSync", "probe_interval", probe_interval)
        self._probe_cap = max(self._probe, probe_cap)
        self._quota_interval = positive("StateSync", "quota_interval", quota_interval)
        self._max_pending = max_pending
        self._draw_wait = positive("StateSync", "draw_wait", draw_wait)
        self._draw: _Draw | None = None
        self._drawing: anyio.Event | None = None  # set by requests; None: service not running
        self._batch = Batch()
        self._pending = 0
        self._wake = anyio.Event()
        self._listening = anyio.Event()
        self._version: int | None = None
        self._quota_seen: dict[str, float] = {}
        self._capped: tuple[list[str], list[str]] = ([], [])
        self.token_listeners: list[TokenListener] = []
        """Awaited with an account name when a replica announces its new OAuth tokens."""
        self.dropped = 0
        """Writes dropped because the store was too slow to take them."""
        pool.add_listener(self._on_event)
        pool.watch_in_flight(self._on_in_flight)

    def __repr__(self) -> str:
        return f"<StateSync {self.backend!r} replica={self.replica}>"

    # -- the request path --------------------------------------------------------------

    async def before_acquire(self, context: SelectionContext) -> SelectionContext:
        """The store's view, applied to the pool; the context with its rotation ticket."""
        if self.backend.health().degraded:
            return context
        session = context.session_key
        wake = self._drawing
        if wake is None:  # the service is not running: a round trip of its own
            draw, index = _Draw([session]), 0
            await self._run_draw(draw)
        else:
            draw = self._draw or _Draw()
            self._draw = draw
            index = len(draw.sessions)
            draw.sessions.append(session)
            wake.set()
            with anyio.move_on_after(self._draw_wait):
                await draw.done.wait()
        snap = draw.snapshot
        if snap is None:
            return context
        bound = snap.bound[index] if index < len(snap.bound) else None
        if bound is not None and session is not None:
            self.pool.bind(session, bound)
        return replace(context, ticket=snap.ticket + index)

    async def _drawer(self) -> None:
        # Sends the gathered requests' round trip; those arriving meanwhile wait for the next.
        self._drawing = anyio.Event()
        try:
            while True:
                await self._drawing.wait()
                self._drawing = anyio.Event()
                draw, self._draw = self._draw, None
                if draw is not None:
                    await self._run_draw(draw)
        finally:
            self._drawing = None
            if self._draw is not None:
                self._draw.done.set()  # nobody will send it: let its requests go on

    async def _run_draw(self, draw: _Draw) -> None:
        try:
            snap = await self.backend.snapshot(capped=self._capped_names(),
                                               sessions=draw.sessions, replica=self.replica)
            if snap is not None:
                if snap.version != self._version:
                    await self._pull_holds(snap.version)
                for name, count in snap.in_flight.items():
                    self.pool.set_remote_in_flight(name, count)
            draw.snapshot = snap
        finally:
            draw.done.set()

    def after_acquire(self, account: Account, context: SelectionContext) -> None:
        """Share the session's binding to ``account`` (only when there is a session)."""
        if context.session_key is not None and self.pool.affinity:
            self._batch.bindings[context.session_key] = account.name
            self._queued()

    def _capped_names(self) -> list[str]:
        # Recomputed only when the account list changed (a reload).
        names = self.pool.names
        if names != self._capped[0]:
            capped = [a.name for a in self.pool.accounts() if a.max_concurrent is not None]
            self._capped = (names, capped)
        return self._capped[1]

    async def _pull_holds(self, version: int | None) -> None:
        holds = await self.backend.holds(self.pool.names)
        if holds is None:
            return
        self._version = version
        for change in holds:
            self._apply(change)

    # -- local changes -> the store ------------------------------------------------------

    def _on_event(self, event: PoolEvent) -> None:
        if event.remote or event.event not in _SHARED_EVENTS:
            return
        self._batch.changes.append(Change(
            account=event.account, event=event.event.value, until=event.until,
            reason=event.reason, cause=event.cause, replica=self.replica))
        self._queued()

    def _on_in_flight(self, name: str, count: int) -> None:
        self._batch.in_flight[name] = count
        self._queued()

    def _queued(self) -> None:
        self._pending += 1
        if self._pending > self._max_pending:
            # The store is too slow to keep up: drop the backlog but the in-flight counts
            # (resync() re-sends the holds still in force once the store answers).
            self.dropped += self._pending
            self._batch = Batch(in_flight=self._batch.in_flight)
            self._pending = 0
        self._wake.set()

    async def flush(self) -> bool:
        """Write whatever is queued now; ``False`` if the store did not take it."""
        batch, self._batch, self._pending = self._batch, Batch(), 0
        if not batch:
            return True
        return await self.backend.write(batch, replica=self.replica,
                                        binding_ttl=self.affinity_ttl)

    # -- the store -> this replica ---------------------------------------------------------

    def _apply(self, change: Change) -> None:
        event = _EVENTS.get(change.event)
        if event is None or change.account not in self.pool:
            return
        self.pool.apply_remote(change.account, event, until=change.until,
                               reason=change.reason, cause=change.cause)

    async def _announced(self, change: Change) -> None:
        if change.replica == self.replica:
            return
        if change.event == TOKENS:
            for listener in self.token_listeners:
                try:
                    await listener(change.account)
                except Exception:  # one broken listener must not stop the subscriber
                    log.exception("state sync: token listener %r failed", listener)
            return
        self._apply(change)

    async def resync(self) -> None:
        """Push the holds still in force here, then read everyone's (after the store returns)."""
        now = self.pool.now()
        for status in self.pool.statuses():
            change = _hold_of(status.name, status.state, status.cooldown_until, now,
                              status.out_reason, status.last_error, self.replica)
            if change is not None:
                self._batch.changes.append(change)
            if status.in_flight or self.pool.account(status.name).max_concurrent is not None:
                self._batch.in_flight[status.name] = status.in_flight
        await self.flush()
        await self._pull_holds(None)
        for name in self.pool.names:
            for listener in self.token_listeners:
                with contextlib.suppress(Exception):
                    await listener(name)

    # -- the service ---------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Write, subscribe, probe and exchange quotas until cancelled."""
        await self.backend.start()
        try:
            if not self.backend.health().degraded:
                await self.resync()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer)
                tg.start_soon(self._drawer)
                tg.start_soon(self._subscriber)
                tg.start_soon(self._prober)
                tg.start_soon(self._quota_exchange)
                # Started once announcements are heard (or the store is found away).
                with anyio.move_on_after(self._probe_cap):
                    await self._listening.wait()
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                if not self.backend.health().degraded:
                    # This replica's in-flight counts go with it.
                    for name in self._capped_names():
                        self._batch.in_flight[name] = 0
                    await self.flush()
                await self.backend.aclose()

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            if self.backend.health().degraded:
                continue  # resync() sends what is still in force once it is back
            await self.flush()

    async def _subscriber(self) -> None:
        while True:
            if not self.backend.health().degraded:
                async with anyio.create_task_group() as tg:
                    def ready(tg: anyio.abc.TaskGroup = tg) -> None:
                        self._listening.set()
                        # What was announced before this subscription (while the store was
                        # away, or between its return and now) is only in the holds: read
                        # them once, now that nothing later can be missed.
                        tg.start_soon(self._pull_holds, None)

                    async with contextlib.aclosing(self.backend.listen(ready)) as changes:
                        async for change in changes:
                            await self._announced(change)
            self._listening.set()  # not listening after all: nothing to wait for at start
            # The subscription ended: the store went away. The prober brings it back.
            await anyio.sleep(self._probe)

    async def _prober(self) -> None:
        delay = self._probe
        while True:
            await anyio.sleep(delay)
            if not self.backend.health().degraded:
                delay = self._probe
                continue
            if await self.backend.ping():
                delay = self._probe
                await self.resync()
            else:
                delay = min(delay * 2, self._probe_cap)

    async def _quota_exchange(self) -> None:
        while True:
            await anyio.sleep(self._quota_interval)
            if self.backend.health().degraded:
                continue
            for status in self.pool.statuses():
                quota = status.quota
                if quota is not None and quota.seen_at > self._quota_seen.get(status.name, 0.0):
                    self._batch.quotas[status.name] = quota
                    self._quota_seen[status.name] = quota.seen_at
            await self.flush()
            shared = await self.backend.quotas(self.pool.names)
            for name, quota in (shared or {}).items():
                if self.pool.set_quota(name, quota):
                    self._quota_seen[name] = quota.seen_at


def _hold_of(name: str, state: AccountState, until: float | None, now: float,
             cause: str | None, reason: str | None, replica: str) -> Change | None:
    # A local hold still in force, as the change that would have announced it.
    if state is AccountState.RATE_LIMITED and until is not None and until > now:
        event = Event.RATE_LIMITED
    elif state is AccountState.BACKING_OFF and until is not None and until > now:
        event = Event.FAILED
    elif state is AccountState.AUTH_ERROR and cause != "forbidden":
        event, until = Event.AUTH_FAILED, None
    else:
        return None
    return Change(account=name, event=event.value, until=until, reason=reason, cause=cause,
                  replica=replica)

