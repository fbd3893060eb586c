"""The failover loop: try accounts until one gives a response worth relaying.

Everything here happens before the first byte reaches the client, which is
what makes failover invisible to it. The loop returns either a :class:`Won`
(an open upstream response, its first SSE event already read) or a
:class:`Failed` (a complete error to send). Every upstream response it does not
hand on is closed here, on every path including cancellation.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import anyio

from ccrotate._accounts.model import Account, AccountKind
from ccrotate._exceptions import (
    ConfigError,
    InvalidGrant,
    NoAccountAvailable,
    RefreshError,
    UnknownAccount,
    UpstreamError,
)
from ccrotate._pool.pool import AccountPool
from ccrotate._pool.strategy import SelectionContext
from ccrotate._pool.taxonomy import (
    AUTH_REFUSED,
    CONNECTION,
    AccountAction,
    Reason,
    Verdict,
    classify,
)
from ccrotate._proxy.headers import sanitize_error
from ccrotate._proxy.record import Failover, Observer, RequestRecord, note_failover
from ccrotate._state.sync import StateSync
from ccrotate._upstream.base import Upstream, UpstreamResponse
from ccrotate._upstream.providers import OutgoingRequest, Providers
from ccrotate._wire import (
    STATUS_OF_ERROR,
    SSEScanner,
    error_body,
    parse_error,
)

__all__ = ["Attempt", "AttemptLoop", "Failed", "LoopConfig", "Refresher", "Won", "run_attempts"]


_JSON = [(b"content-type", b"application/json")]


_NO_CONTEXT = SelectionContext()
# Failures that are not the account's quota: the request pauses briefly before the next
# account, so a struggling upstream is not hammered by every account in a row.
_PAUSE = frozenset({Reason.OVERLOADED, Reason.SERVER_ERROR, Reason.CONNECTION})


class Refresher(Protocol):
    """What the proxy needs from a token refresher (see :class:`~ccrotate.TokenRefresher`)."""

    async def ensure_fresh(self, account: Account) -> Account:
        """Return the account with a token valid for a while, refreshing once if needed."""
        ...

    async def refresh(self, name: str, *, reason: str) -> Account:
        """Refresh now (after a 401), single-flight; raises RefreshError."""
        ...


@dataclass(slots=True)
class Attempt:
    """One client request to try on accounts in turn: what goes upstream, and who may serve."""

    request: OutgoingRequest
    pinned: str | None = None
    """The account named by ``X-Account-Name``: only it may serve."""
    context: SelectionContext = _NO_CONTEXT


@dataclass(slots=True)
class Won:
    """An upstream response to relay. The receiver must ``aclose`` it and release the account."""

    account: Account
    response: UpstreamResponse
    head: list[bytes]
    """Bytes already read (the first SSE event, or the whole body when not streaming)."""
    streaming: bool
    scanner: SSEScanner | None


@dataclass(slots=True)
class Failed:
    """A complete error response in Anthropic's shape."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    account: str | None = None

    @classmethod
    def of(cls, status: int, type_: str, message: str, *,
           retry_after: float | None = None) -> Failed:
        headers = list(_JSON)
        if retry_after is not None:
            headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
        return cls(status, headers, error_body(type_, message))

    def client_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers to answer with, naming the account that produced the error."""
        if self.account is None:
            return list(self.headers)
        return [*self.headers, (b"x-ccrotate-account", self.account.encode())]


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopConfig:
    """Knobs of the failover loop."""

    max_attempts: int = 4
    backoff_base: float = 0.05
    backoff_cap: float = 1.0
    max_response_body: int = 64 * 1024 * 1024
    capacity_wait: float = 30.0
    """Seconds to wait for a slot when every account that can serve is at its cap."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, not {self.max_attempts!r}")
        if self.backoff_base < 0 or self.backoff_cap < self.backoff_base:
            raise ConfigError("backoff_base must be >= 0 and backoff_cap >= backoff_base, not "
                              f"{self.backoff_base!r} and {self.backoff_cap!r}")
        if self.max_response_body < 1:
            raise ConfigError("max_response_body must be positive, not "
                              f"{self.max_response_body!r}")


class AttemptLoop:
    """Tries accounts in turn for one request; shared by every route and dialect.

    Parameters:
        pool: the accounts to rotate over.
        upstream: the transport.
        providers: how each account is presented upstream.
        config: attempts and backoff.
        refresher: keeps OAuth tokens fresh (``ensure_fresh`` before, ``refresh`` on 401).
        observers: told of each failover.
        sync: keeps the pool in step with a *shared* state backend (one round trip
            before choosing); ``None`` when nothing is shared.
    """

    __slots__ = ("config", "observers", "pool", "providers", "refresher", "sync", "upstream")

    def __init__(self, pool: AccountPool, upstream: Upstream, providers: Providers, *,
                 config: LoopConfig | None = None, refresher: Refresher | None = None,
                 observers: Sequence[Observer] = (), sync: StateSync | None = None) -> None:
        self.pool = pool
        self.upstream = upstream
        self.providers = providers
        self.config = config or LoopConfig()
        self.refresher = refresher
        self.observers = observers
        self.sync = sync

    async def run(self, attempt: Attempt, record: RequestRecord) -> Won | Failed:
        """A winner to relay (the caller closes it and releases the account), or an error."""
        return await run_attempts(attempt, self, record)


async def run_attempts(attempt: Attempt, loop: AttemptLoop,
                       record: RequestRecord) -> Won | Failed:
    """Try accounts in turn until one answers usefully; see the module docstring."""
    pool, config, observers = loop.pool, loop.config, loop.observers
    tried: list[str] = []
    last: Failed | None = None
    refreshed: set[str] = set()
    again: str | None = None  # the account whose token was just refreshed: retry it first
    backoffs = 0
    sync = loop.sync
    if sync is not None:
        # Shared state: other replicas' cooldowns and the shared rotation ticket first.
        attempt.context = await sync.before_acquire(attempt.context)
    while record.attempts < config.max_attempts:
        try:
            account = await _acquire(pool, attempt, tried, again, config.capacity_wait)
            again = None
            if sync is not None:
                sync.after_acquire(account, attempt.context)
        except UnknownAccount as exc:
            return Failed.of(400, "invalid_request_error", str(exc))
        except NoAccountAvailable as exc:
            return _no_account(exc, last)
        record.attempts += 1
        name = account.name
        won: Won | None = None
        try:
            outcome = await _one(attempt.request, account, loop, record, refreshed)
            if isinstance(outcome, Won):
                won = outcome
                pool.report_success(name, outcome.response.headers)
                return outcome
            verdict, failed = outcome
            if verdict.action is AccountAction.REFRESH:
                again = name
                continue
            failed.account = name
            if not verdict.fail_over:
                # The request itself is wrong: no account is to blame, none is cooled.
                return failed
            last = failed
            note_failover(record, observers, Failover(name, verdict.reason.value, failed.status))
            _report(pool, name, verdict, failed, attempt.context.model)
            if attempt.pinned is not None:
                return failed
            tried.append(name)
        finally:
            if won is None:
                pool.release(name)
        if verdict.reason in _PAUSE:
            # Not the account's fault: pause briefly so a struggling upstream can recover
            # (with the account already released: it is not busy with this request).
            delay = min(config.backoff_cap, config.backoff_base * 2 ** backoffs)
            backoffs += 1
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
    # Every pass of the loop either returns or sets ``last`` (max_attempts >= 1).
    return last if last is not None else Failed.of(503, "api_error", "ccrotate: no attempt made")


async def _acquire(pool: AccountPool, attempt: Attempt, tried: list[str],
                   again: str | None, wait: float) -> Account:
    # Without a cap in the way this returns at once, without awaiting anything.
    try:
        return _acquire_now(pool, attempt, tried, again)
    except NoAccountAvailable as exc:
        if not exc.at_capacity or wait <= 0:
            raise
    deadline = anyio.current_time() + wait
    woken = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Registered before each try, so a release between a failed try and the wait is
    # not lost; call_soon_threadsafe because a notebook may release from another thread.

    def wake() -> None:
        loop.call_soon_threadsafe(woken.set)

    undo = pool.on_release(wake)
    try:
        while True:
            woken.clear()
            try:
                return _acquire_now(pool, attempt, tried, again)
            except NoAccountAvailable as exc:
                remaining = deadline - anyio.current_time()
                if not exc.at_capacity or remaining <= 0:
                    raise
            with anyio.move_on_after(remaining):
                await woken.wait()
    finally:
        undo()


def _acquire_now(pool: AccountPool, attempt: Attempt, tried: list[str],
                 again: str | None) -> Account:
    try:
        return pool.acquire(again or attempt.pinned, exclude=tried, context=attempt.context)
    except (NoAccountAvailable, UnknownAccount):
        # The refreshed account may be cooling, or gone with a reload meanwhile.
        if again is None or attempt.pinned is not None:
            raise
        return pool.acquire(None, exclude=tried, context=attempt.context)


def _report(pool: AccountPool, name: str, verdict: Verdict, failed: Failed,
            model: str | None) -> None:
    # The pool acts on the verdict; a cooled account also tells the client when to retry.
    until = pool.report(name, verdict, _Headers(failed.headers), model=model)
    if (until is not None and verdict.action is AccountAction.COOL
            and not any(k == b"retry-after" for k, _ in failed.headers)):
        failed.headers.append(
            (b"retry-after", str(max(1, math.ceil(until - pool.now()))).encode()))


class _Headers:
    # A case-insensitive view of ASGI header pairs for the rate-limit parser.
    __slots__ = ("_d",)

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self._d = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in pairs}

    def get(self, key: str, /) -> str | None:
        return self._d.get(key)


def _no_account(exc: NoAccountAvailable, last: Failed | None) -> Failed:
    """The answer when no account is left: as the upstream would have given it.

    A 429 keeps the last refusal's own body (its type, message and any spend-cap
    code) with ``retry-after`` set to when the first account can serve again.
    """
    if last is not None and last.status != 429:
        # The accounts we could try all failed for reasons that are not quota:
        # the client learns the real upstream error, not a made-up one.
        return last
    if exc.retry_after is not None:
        retry_after = str(max(1, math.ceil(exc.retry_after))).encode()
        if last is not None:
            last.headers = [(k, v) for k, v in last.headers if k != b"retry-after"]
            last.headers.append((b"retry-after", retry_after))
            return last
        if exc.refusal is not None and exc.refusal[0] == "rate_limit_error":
            # Nothing was tried for this request: answer with what the soonest account's
            # own refusal said, so clients see the upstream's words.
            return Failed.of(429, "rate_limit_error", exc.refusal[1] or f"ccrotate: {exc}",
                             retry_after=exc.retry_after)
        return Failed.of(429, "rate_limit_error", f"ccrotate: {exc}", retry_after=exc.retry_after)
    if last is not None:
        return last
    if exc.refusal is not None and exc.refusal[0] == "permission_error":
        # Every account was refused this model: the upstream's own 403, not an outage.
        return Failed.of(403, "permission_error", exc.refusal[1] or f"ccrotate: {exc}")
    return Failed.of(503, "api_error", f"ccrotate: {exc}")


def _verdict(status: int, failed: Failed, account: Account, loop: AttemptLoop,
             can_refresh: bool) -> Verdict:
    return classify(status, _Headers(failed.headers), parse_error(failed.body),
                    kind=account.kind, now=loop.pool.now(), can_refresh=can_refresh,
                    default_cooldown=loop.pool.default_cooldown)


async def _one(request: OutgoingRequest, account: Account, loop: AttemptLoop,
               record: RequestRecord, refreshed: set[str]) -> Won | tuple[Verdict, Failed]:
    """One attempt on one account: a winner, or (the taxonomy's verdict, the error)."""
    refresher = loop.refresher
    if refresher is not None and account.kind is AccountKind.OAUTH:
        try:
            account = await refresher.ensure_fresh(account)
        except InvalidGrant as exc:
            message = f"token refresh failed: {exc}"
            return (replace(AUTH_REFUSED, message=message),
                    Failed.of(401, "authentication_error", message))
        except RefreshError as exc:
            # The token endpoint is unreachable or failing: not the account's fault, and
            # the refresher keeps retrying it in the background.
            return CONNECTION, Failed.of(502, "api_error", f"ccrotate: {exc}")
        except UnknownAccount:
            return CONNECTION, Failed.of(502, "api_error", "ccrotate: account was removed")
    sent = time.perf_counter()
    try:
        provider = loop.providers.for_account(account)
        resp = await loop.upstream.send(request.method, provider.url(account, request),
                                        provider.headers(account, request),
                                        provider.body(account, request))
    except UpstreamError as exc:
        return CONNECTION, Failed.of(502, "api_error", f"ccrotate: {exc}")
    try:
        record.upstream_latency = time.perf_counter() - sent
        status = resp.status
        if status < 400:
            streaming = resp.content_type == "text/event-stream"
            if streaming:
                return await _peek_stream(account, resp, loop)
            body = await resp.read(loop.config.max_response_body)
            return Won(account, resp, [body], False, None)
        body = await resp.read(loop.config.max_response_body)
        failed = Failed(status, *sanitize_error(status, resp.raw_headers, body))
        verdict = _verdict(status, failed, account, loop, can_refresh=(
            refresher is not None and account.name not in refreshed))
        if verdict.action is AccountAction.REFRESH and refresher is not None:
            refreshed.add(account.name)
            try:
                await refresher.refresh(account.name, reason="upstream answered 401")
            except (RefreshError, UnknownAccount):
                return _verdict(status, failed, account, loop, can_refresh=False), failed
            record.attempts -= 1  # the retry after a refresh is the same attempt
        return verdict, failed
    except UpstreamError as exc:
        await resp.aclose()
        return CONNECTION, Failed.of(502, "api_error", f"ccrotate: {exc}")
    except BaseException:
        await resp.aclose()
        raise
    finally:
        if resp.status >= 400:
            await resp.aclose()


async def _peek_stream(account: Account, resp: UpstreamResponse,
                       loop: AttemptLoop) -> Won | tuple[Verdict, Failed]:
    # Hold the response until the first whole SSE event: an error that opens
    # a 200 stream (overloaded, often) can still move to another account.
    if resp.content_encoding not in (None, "identity"):
        return Won(account, resp, [], True, None)
    scanner = SSEScanner()
    head: list[bytes] = []
    chunks = resp.chunks()
    try:
        async for chunk in chunks:
            head.append(chunk)
            scanner.feed(chunk)
            if scanner.first_event_complete():
                break
    finally:
        # Closed here: a generator left to the garbage collector is closed by a task
        # the event loop schedules through its thread-safe wake-up, a syscall per stream.
        aclose = getattr(chunks, "aclose", None)  # a transport may return a plain iterator
        if aclose is not None:
            await aclose()
    if scanner.error is not None:
        type_, message = scanner.error
        await resp.aclose()
        status = STATUS_OF_ERROR.get(type_, 500)
        # The stream's allowed headers (rate limits) with a JSON type, as for an HTTP error.
        failed = Failed(status, *sanitize_error(
            status, resp.raw_headers, scanner.error_data or error_body(type_, message)))
        return _verdict(status, failed, account, loop, can_refresh=False), failed
    if not scanner.first_event_complete():
        await resp.aclose()
        return CONNECTION, Failed.of(502, "api_error",
                                       "ccrotate: upstream stream ended before its first event")
    return Won(account, resp, head, True, scanner)
