"""Warm agent sessions: ``/sdk/{session_id}/v1/messages`` keeps one agent alive on one
account, so the next turn skips the process start and the agent keeps its own context.

A session is owned by whichever call is using it (:meth:`Sessions.take` removes it,
:meth:`Sessions.put_back` returns it), so no two calls ever talk to one agent at once:
a call that finds its session busy runs a one-off agent instead. Idle sessions expire
after ``session_ttl``; at most ``max_concurrent`` stay warm (the least recently used
one is closed first).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ccrotate._accounts.model import Account
from ccrotate._pool.pool import AccountPool

__all__ = ["Session", "Sessions", "dispose"]


async def dispose(process: Any, tmp: Path) -> None:
    """Kill and reap an agent process, then delete its temporary directory."""
    with anyio.CancelScope(shield=True):
        await process.close(kill=True)
        await anyio.to_thread.run_sync(shutil.rmtree, tmp, True)


@dataclass(eq=False)
class Session:
    """One warm agent: its account, process and temporary directory."""

    id: str
    account: str
    process: Any
    """The :class:`~ccrotate._sdk.agent.AgentProcess`."""
    tmp: Path
    model: str
    last_used: float = field(default_factory=time.monotonic)

    def account_of(self, pool: AccountPool) -> Account:
        """The session's account, as the pool has it now."""
        return pool.account(self.account)


class Sessions:
    """The idle warm sessions by id."""

    def __init__(self, ttl: float, cap: int) -> None:
        self.ttl = ttl
        self.cap = cap
        self._idle: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._idle)

    def processes(self) -> list[Any]:
        """The agent processes of the idle sessions."""
        return [s.process for s in self._idle.values()]

    def ids(self) -> list[str]:
        """The ids of the idle sessions."""
        return list(self._idle)

    async def take(self, session_id: str, model: str) -> Session | None:
        """The idle session ``session_id`` for the caller to use, or ``None``."""
        session = self._idle.pop(session_id, None)
        if session is not None and session.model != model:
            await dispose(session.process, session.tmp)  # another model: a fresh agent
            return None
        return session

    async def add(self, session: Session) -> bool:
        """Keep a new session warm; ``False`` when one with its id is already kept."""
        if session.id in self._idle:
            return False
        while len(self._idle) >= self.cap:
            oldest = min(self._idle.values(), key=lambda s: s.last_used)
            await self.discard(self._idle.pop(oldest.id))
        session.last_used = time.monotonic()
        self._idle[session.id] = session
        return True

    async def put_back(self, session: Session) -> None:
        """Return a session after a call (replacing one started meanwhile, which closes)."""
        other = self._idle.pop(session.id, None)
        session.last_used = time.monotonic()
        self._idle[session.id] = session
        if other is not None:
            await self.discard(other)

    async def discard(self, session: Session) -> None:
        """Close a session taken out of the idle set."""
        await dispose(session.process, session.tmp)

    async def expire(self) -> None:
        """Close every session idle for longer than the TTL."""
        now = time.monotonic()
        for session in [s for s in self._idle.values() if now - s.last_used > self.ttl]:
            if self._idle.get(session.id) is session:
                del self._idle[session.id]
                await self.discard(session)

    async def reap_forever(self) -> None:
        """Expire idle sessions until cancelled."""
        while True:
            await anyio.sleep(max(0.05, min(self.ttl / 4, 5.0)))
            await self.expire()

    async def close_all(self) -> None:
        """Close every idle session (shutdown)."""
        with anyio.CancelScope(shield=True):
            while self._idle:
                _, session = self._idle.popitem()
                await self.discard(session)
