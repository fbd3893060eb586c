"""RedisStateBackend: the state several replicas share, in one Redis (``redis.asyncio``).

Keys, all under ``{namespace}:`` so that two pools can share one Redis:

==========================  ==========================================================
``cursor``                  ``INCR`` per request: the shared round-robin ticket
``version``                 ``INCR`` per change of a hold: worth re-reading the holds
``hold:{account}:{slot}``   a :class:`Change` (JSON); cooldowns and backoffs with ``PX``
``inflight:{account}``      hash replica -> requests in flight (capped accounts only)
``bind:{session}``          the session's account, ``PX`` the affinity TTL
``quota:{account}``         the last quota snapshot (JSON)
``tokens:{account}``        the newest OAuth tokens (JSON; the store must be trusted)
``lock:{name}``             ``SET NX PX``; released by a compare-and-delete script
``events`` (channel)        every :class:`Change`, published as it is written
==========================  ==========================================================

``redis`` is imported when a backend is built, never by ``import ccrotate``. Every
call is bounded (``timeout`` seconds, no retries) and none raises for Redis's
trouble: the first failure logs one warning and marks the backend degraded, and
only a successful :meth:`RedisStateBackend.ping` clears it.
"""

from __future__ import annotations

import importlib.util
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import msgspec

from ccrotate._accounts.model import OAuthTokens
from ccrotate._checks import positive
from ccrotate._exceptions import ConfigError
from ccrotate._pool.ratelimit import QuotaSnapshot
from ccrotate._state.backend import (
    SLOTS,
    TOKENS,
    BackendHealth,
    Batch,
    Change,
    Snapshot,
    expiry,
    parse_tokens,
    slot_of,
    token_record,
)

__all__ = ["RedisStateBackend", "mask_url"]

log = logging.getLogger("ccrotate.state")
T = TypeVar("T")

# Deletes the lock only while it still holds our token: a lock that expired and was
# taken by another replica must not be released by us.
_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# The request path's round trip as one command: redis-py's pipeline object costs more
# client CPU than the round trip itself (measured: docs/benchmarks.md). KEYS: the cursor,
# the holds' version, ARGV[2] session-binding keys, then the in-flight hashes of capped
# accounts; ARGV[1] tickets are drawn. Returns the last ticket, the version, the bindings
# and one flat HGETALL per capped account.
_SNAPSHOT = """
local n = tonumber(ARGV[2])
local out = {redis.call('incrby', KEYS[1], ARGV[1]), redis.call('get', KEYS[2]) or '0'}
local bound = {}
for i = 1, n do bound[i] = redis.call('get', KEYS[2 + i]) or '' end
out[3] = bound
for i = 3 + n, #KEYS do out[#out + 1] = redis.call('hgetall', KEYS[i]) end
return out
"""
_IN_FLIGHT_TTL_MS = 600_000
"""A replica that dies leaves its in-flight counts behind this long at most."""
_CHANGE = msgspec.json.Decoder(Change)
_QUOTA = msgspec.json.Decoder(QuotaSnapshot)
_ENCODE = msgspec.json.Encoder()


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for logs and status."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
    except ValueError:
        return "<redis url>"


class RedisStateBackend:
    """Shared state in Redis: every replica of a pool that names the same URL and
    namespace sees the same cooldowns, rotation, bindings, in-flight counts and tokens.

    Parameters:
        url: a ``redis://`` (or ``rediss://``, ``unix://``) URL; a password in it is
            never logged or shown.
        namespace: the prefix of every key, so that several pools share one Redis.
        timeout: seconds any one call may take (connect, read, write); beyond it the
            call fails, the backend is degraded and the replica decides locally.
    """

    shared = True

    def __init__(self, url: str, *, namespace: str = "ccrotate", timeout: float = 0.5) -> None:
        if importlib.util.find_spec("redis") is None:
            raise ConfigError("a Redis state backend needs redis-py: "
                              "pip install 'ccrotate[redis]'")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError("RedisStateBackend.url: expected a redis://, rediss:// or "
                              "unix:// URL")
        if not isinstance(namespace, str) or not namespace.strip():
            raise ConfigError("RedisStateBackend.namespace: expected a non-empty string")
        self._url = url
        self.target = mask_url(url)
        self.namespace = namespace.strip()
        self.timeout = positive("RedisStateBackend", "timeout", timeout)
        self._client: Any = None
        self._listener: Any = None
        self._unlock: Any = None
        self._snapshot: Any = None
        self._degraded = False
        self._since: float | None = None
        self._errors = 0
        self._calls = 0
        self._last_error: str | None = None

    def __repr__(self) -> str:
        return f"<RedisStateBackend {self.target} namespace={self.namespace!r}>"

    def _key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    def health(self) -> BackendHealth:
        return BackendHealth("redis", self.target, shared=True, degraded=self._degraded,
                             errors=self._errors, last_error=self._last_error,
                             degraded_since=self._since, calls=self._calls)

    # -- connection --------------------------------------------------------------------

    async def start(self) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries inside redis-py: a slow store must cost a request `timeout`, once.
        options: dict[str, Any] = {"socket_connect_timeout": self.timeout,
                                   "retry": Retry(NoBackoff(), 0)}
        self._client = Redis.from_url(self._url, socket_timeout=self.timeout, **options)
        # The subscriber waits for messages indefinitely; its reads have their own timeout.
        self._listener = Redis.from_url(self._url, socket_timeout=None,
                                        health_check_interval=5, **options)
        # Scripts are re-sent by redis-py after a restarted Redis forgot them (NOSCRIPT).
        self._unlock = self._client.register_script(_UNLOCK)
        self._snapshot = self._client.register_script(_SNAPSHOT)
        await self.ping()

    async def aclose(self) -> None:
        for client in (self._client, self._listener):
            if client is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.timeout):
                    await client.aclose()
        self._client = self._listener = None

    async def ping(self) -> bool:
        if self._client is None:
            return False
        try:
            with anyio.fail_after(self.timeout * 2):
                await self._client.ping()
        except Exception as exc:
            self._failed(exc)
            return False
        if self._degraded:
            log.warning("state backend %s is reachable again: sharing state once more",
                        self.target)
        self._degraded, self._since = False, None
        return True

    async def _call(self, op: Callable[[Any], Awaitable[T]], default: T) -> T:
        # Every call: skipped while degraded (a dead store must not cost each request a
        # timeout), bounded, and any failure turns into the default and a degraded backend.
        if self._degraded or self._client is None:
            return default
        self._calls += 1
        try:
            with anyio.fail_after(self.timeout * 2):
                return await op(self._client)
        except Exception as exc:
            self._failed(exc)
            return default

    def _failed(self, exc: BaseException) -> None:
        self._errors += 1
        # The exception's class only: redis-py messages may quote the URL.
        self._last_error = type(exc).__name__
        if not self._degraded:
            self._degraded, self._since = True, time.time()
            log.warning("state backend %s is unreachable (%s): each replica decides on its "
                        "own state until it returns", self.target, self._last_error)

    # -- the request path --------------------------------------------------------------

    async def snapshot(self, *, capped: Sequence[str], sessions: Sequence[str | None],
                       replica: str) -> Snapshot | None:
        named = [s for s in sessions if s is not None]
        keys = [self._key("cursor"), self._key("version"),
                *(self._key("bind", s) for s in named),
                *(self._key("inflight", name) for name in capped)]
        args = [max(1, len(sessions)), len(named)]

        async def run(client: Any) -> Snapshot:
            out = await self._snapshot(keys=keys, args=args)
            others = {name: _others(out[3 + i], replica) for i, name in enumerate(capped)}
            found = iter(v.decode() or None for v in out[2])
            bound = tuple(next(found) if s is not None else None for s in sessions)
            return Snapshot(int(out[0]) - args[0] + 1, int(out[1]), others, bound)

        return await self._call(run, None)

    async def holds(self, names: Sequence[str]) -> list[Change] | None:
        if not names:
            return []
        keys = [self._key("hold", name, slot) for name in names for slot in SLOTS]

        async def run(client: Any) -> list[Change]:
            values = await client.mget(keys)
            return [_CHANGE.decode(v) for v in values if v]

        return await self._call(run, None)

    async def quotas(self, names: Sequence[str]) -> dict[str, QuotaSnapshot] | None:
        if not names:
            return {}

        async def run(client: Any) -> dict[str, QuotaSnapshot]:
            values = await client.mget([self._key("quota", n) for n in names])
            return {n: _QUOTA.decode(v) for n, v in zip(names, values, strict=True) if v}

        return await self._call(run, None)

    async def write(self, batch: Batch, *, replica: str, binding_ttl: float) -> bool:
        async def run(client: Any) -> bool:
            now = time.time()
            pipe = client.pipeline(transaction=False)
            for change in batch.changes:
                self._hold(pipe, change, now)
            if batch.changes:
                pipe.incr(self._key("version"))
                for change in batch.changes:
                    pipe.publish(self._key("events"), _ENCODE.encode(change))
            for name, count in batch.in_flight.items():
                pipe.hset(self._key("inflight", name), replica, count)
                pipe.pexpire(self._key("inflight", name), _IN_FLIGHT_TTL_MS)
            ttl_ms = max(1, int(binding_ttl * 1000))
            for session, name in batch.bindings.items():
                pipe.set(self._key("bind", session), name, px=ttl_ms)
            for name, quota in batch.quotas.items():
                pipe.set(self._key("quota", name), _ENCODE.encode(quota))
            await pipe.execute()
            return True

        return await self._call(run, False)

    def _hold(self, pipe: Any, change: Change, now: float) -> None:
        slot, clears = slot_of(change)
        if clears:
            pipe.delete(*(self._key("hold", change.account, s) for s in clears))
        if slot is None:
            return
        left = expiry(change, now)
        key = self._key("hold", change.account, slot)
        if left is None:
            pipe.set(key, _ENCODE.encode(change))
        elif left > 0:
            pipe.set(key, _ENCODE.encode(change), px=max(1, int(left * 1000)))

    # -- tokens and the refresh lock -----------------------------------------------------

    async def tokens(self, name: str) -> OAuthTokens | None:
        async def run(client: Any) -> OAuthTokens | None:
            data = await client.get(self._key("tokens", name))
            return parse_tokens(data) if data else None

        return await self._call(run, None)

    async def share_tokens(self, name: str, tokens: OAuthTokens, *, replica: str) -> bool:
        announce = _ENCODE.encode(Change(account=name, event=TOKENS, replica=replica))

        async def run(client: Any) -> bool:
            pipe = client.pipeline(transaction=False)
            pipe.set(self._key("tokens", name), token_record(tokens))
            pipe.publish(self._key("events"), announce)
            await pipe.execute()
            return True

        return await self._call(run, False)

    async def lock(self, key: str, ttl: float) -> str | None:
        token = secrets.token_hex(16)

        async def run(client: Any) -> str | None:
            taken = await client.set(self._key("lock", key), token, nx=True,
                                     px=max(1, int(ttl * 1000)))
            return token if taken else None

        return await self._call(run, None)

    async def unlock(self, key: str, token: str) -> bool:
        async def run(client: Any) -> bool:
            return bool(await self._unlock(keys=[self._key("lock", key)], args=[token]))

        return await self._call(run, False)

    # -- announcements -------------------------------------------------------------------

    async def listen(self, ready: Callable[[], object] | None = None
                     ) -> AsyncGenerator[Change, None]:
        if self._degraded or self._listener is None:
            return
        pubsub = self._listener.pubsub(ignore_subscribe_messages=True)
        try:
            with anyio.fail_after(self.timeout * 2):
                await pubsub.subscribe(self._key("events"))
            if ready is not None:
                ready()
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None or message.get("type") != "message":
                    continue
                try:
                    change = _CHANGE.decode(message["data"])
                except msgspec.DecodeError:
                    continue  # not ours: another program publishing on the channel
                yield change
        except Exception as exc:
            self._failed(exc)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.timeout):
                try:
                    await pubsub.aclose()
                except Exception:  # the connection is already gone; nothing to release
                    log.debug("state backend: closing the subscription failed", exc_info=True)


def _others(flat: list[bytes], replica: str) -> int:
    # Requests in flight on one account on every replica but this one (HGETALL from a
    # script comes back flat: field, value, field, value ...).
    me = replica.encode()
    return sum(int(flat[i + 1]) for i in range(0, len(flat), 2) if flat[i] != me)
