"""The failover loop: try accounts until one gives a response worth relaying.

Everything here happens before the first byte reaches the client, which is
what makes failover invisible to it. The loop returns either a :class:`Won`
(an open upstream response, its first SSE event already read) or a
:class:`Failed` (a complete error to send). Every upstream response it does not
hand on is closed here, on every path including cancellation.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
from ccrotate._proxy.headers import sanitize_error
from ccrotate._proxy.record import Failover, Observer, RequestRecord
from ccrotate._upstream.base import Upstream, UpstreamResponse
from ccrotate._upstream.providers import OutgoingRequest, Providers
from ccrotate._wire import (
    SPEND_CAP,
    STATUS_OF_ERROR,
    SSEScanner,
    error_body,
    parse_error,
)

__all__ = ["Attempt", "AttemptLoop", "Failed", "LoopConfig", "Refresher", "Won", "run_attempts"]

log = logging.getLogger("ccrotate.proxy")

_JSON = [(b"content-type", b"application/json")]


_NO_CONTEXT = SelectionContext()


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
    """

    __slots__ = ("config", "observers", "pool", "providers", "refresher", "upstream")

    def __init__(self, pool: AccountPool, upstream: Upstream, providers: Providers, *,
                 config: LoopConfig | None = None, refresher: Refresher | None = None,
                 observers: Sequence[Observer] = ()) -> None:
        self.pool = pool
        self.upstream = upstream
        self.providers = providers
        self.config = config or LoopConfig()
        self.refresher = refresher
        self.observers = observers

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
    while record.attempts < config.max_attempts:
        try:
            account = _acquire(pool, attempt, tried, again)
            again = None
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
            reason, failed = outcome
            if reason == "refreshed":
                again = name
                continue
            failed.account = name
            if reason == "client_error":
                # The request itself is wrong: no account is to blame, none is cooled.
                return failed
            last = failed
            _note(record, observers, Failover(name, reason, failed.status))
            _report(pool, name, reason, failed)
            if attempt.pinned is not None:
                return failed
            tried.append(name)
        finally:
            if won is None:
                pool.release(name)
        if reason in ("overloaded", "server_error", "connection"):
            # Not the account's fault: pause briefly so a struggling upstream can recover
            # (with the account already released: it is not busy with this request).
            delay = min(config.backoff_cap, config.backoff_base * 2 ** backoffs)
            backoffs += 1
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
    # Every pass of the loop either returns or sets ``last`` (max_attempts >= 1).
    return last if last is not None else Failed.of(503, "api_error", "ccrotate: no attempt made")


def _acquire(pool: AccountPool, attempt: Attempt, tried: list[str],
             again: str | None) -> Account:
    try:
        return pool.acquire(again or attempt.pinned, exclude=tried, context=attempt.context)
    except (NoAccountAvailable, UnknownAccount):
        # The refreshed account may be cooling, or gone with a reload meanwhile.
        if again is None or attempt.pinned is not None:
            raise
        return pool.acquire(None, exclude=tried, context=attempt.context)


def _report(pool: AccountPool, name: str, reason: str, failed: Failed) -> None:
    # What a refusal means for the account; a 429 also tells the client when to retry.
    if reason == "rate_limited":
        _, _, code = parse_error(failed.body)
        until = pool.report_rate_limited(name, _Headers(failed.headers),
                                         spend_cap=code == SPEND_CAP)
        if not any(k == b"retry-after" for k, _ in failed.headers):
            failed.headers.append(
                (b"retry-after", str(max(1, math.ceil(until - pool.now()))).encode()))
    elif reason == "auth":
        _, message, _ = parse_error(failed.body)
        pool.report_auth_error(name, f"upstream {failed.status}: {message}"[:200])
    else:
        pool.report_failure(name, f"{reason} ({failed.status})")


class _Headers:
    # A case-insensitive view of ASGI header pairs for the rate-limit parser.
    __slots__ = ("_d",)

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self._d = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in pairs}

    def get(self, key: str, /) -> str | None:
        return self._d.get(key)


def _note(record: RequestRecord, observers: Sequence[Observer], failover: Failover) -> None:
    record.failovers.append(failover)
    for observer in observers:
        # A broken metrics hook must not stop the failover or leave the account uncooled.
        try:
            observer.on_failover(record, failover)
        except Exception:
            log.exception("observer %r failed on a failover", observer)


def _no_account(exc: NoAccountAvailable, last: Failed | None) -> Failed:
    if last is not None and last.status != 429:
        # The accounts we could try all failed for reasons that are not quota:
        # the client learns the real upstream error, not a made-up one.
        return last
    if exc.retry_after is not None:
        if last is not None and parse_error(last.body)[2] == SPEND_CAP:
            # Every account is capped: keep the upstream's own body so clients see the
            # spend-cap code (which tells them retrying soon will not help).
            last.headers = [(k, v) for k, v in last.headers if k != b"retry-after"]
            last.headers.append((b"retry-after",
                                 str(max(1, math.ceil(exc.retry_after))).encode()))
            return last
        return Failed.of(429, "rate_limit_error", f"ccrotate: {exc}", retry_after=exc.retry_after)
    if last is not None:
        return last
    return Failed.of(503, "api_error", f"ccrotate: {exc}")


def _classify(status: int) -> str | None:
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status == 529:
        return "overloaded"
    if status >= 500:
        return "server_error"
    return None


async def _one(request: OutgoingRequest, account: Account, loop: AttemptLoop,
               record: RequestRecord, refreshed: set[str]) -> Won | tuple[str, Failed]:
    """One attempt on one account: a winner, or (failover reason, the error it produced)."""
    refresher = loop.refresher
    if refresher is not None and account.kind is AccountKind.OAUTH:
        try:
            account = await refresher.ensure_fresh(account)
        except InvalidGrant as exc:
            return "auth", Failed.of(401, "authentication_error", f"token refresh failed: {exc}")
        except RefreshError as exc:
            # The token endpoint is unreachable or failing: not the account's fault, and
            # the refresher keeps retrying it in the background.
            return "connection", Failed.of(502, "api_error", f"ccrotate: {exc}")
        except UnknownAccount:
            return "connection", Failed.of(502, "api_error", "ccrotate: account was removed")
    sent = time.perf_counter()
    try:
        provider = loop.providers.for_account(account)
        resp = await loop.upstream.send(request.method, provider.url(account, request),
                                        provider.headers(account, request),
                                        provider.body(account, request))
    except UpstreamError as exc:
        return "connection", Failed.of(502, "api_error", f"ccrotate: {exc}")
    try:
        record.upstream_latency = time.perf_counter() - sent
        status = resp.status
        if status < 400:
            streaming = resp.content_type == "text/event-stream"
            if streaming:
                return await _peek_stream(account, resp, record)
            body = await resp.read(loop.config.max_response_body)
            return Won(account, resp, [body], False, None)
        body = await resp.read(loop.config.max_response_body)
        failed = Failed(status, *sanitize_error(status, resp.raw_headers, body))
        reason = _classify(status)
        if reason is None:
            return "client_error", failed
        if (reason == "auth" and status == 401 and refresher is not None
                and account.kind is AccountKind.OAUTH and account.name not in refreshed):
            refreshed.add(account.name)
            try:
                await refresher.refresh(account.name, reason="upstream answered 401")
            except (RefreshError, UnknownAccount):
                return reason, failed
            record.attempts -= 1  # the retry after a refresh is the same attempt
            return "refreshed", failed
        return reason, failed
    except UpstreamError as exc:
        await resp.aclose()
        return "connection", Failed.of(502, "api_error", f"ccrotate: {exc}")
    except BaseException:
        await resp.aclose()
        raise
    finally:
        if resp.status >= 400:
            await resp.aclose()


async def _peek_stream(account: Account, resp: UpstreamResponse,
                       record: RequestRecord) -> Won | tuple[str, Failed]:
    # Hold the response until the first whole SSE event: an error that opens
    # a 200 stream (overloaded, often) can still move to another account.
    if resp.content_encoding not in (None, "identity"):
        return Won(account, resp, [], True, None)
    scanner = SSEScanner()
    head: list[bytes] = []
    async for chunk in resp.chunks():
        head.append(chunk)
        scanner.feed(chunk)
        if scanner.first_event_complete():
            break
    if scanner.error is not None:
        type_, message = scanner.error
        await resp.aclose()
        status = STATUS_OF_ERROR.get(type_, 500)
        reason = _classify(status) or "client_error"
        # The stream's allowed headers (rate limits) with a JSON type, as for an HTTP error.
        return reason, Failed(status, *sanitize_error(
            status, resp.raw_headers, scanner.error_data or error_body(type_, message)))
    if not scanner.first_event_complete():
        await resp.aclose()
        return "connection", Failed.of(502, "api_error",
                                       "ccrotate: upstream stream ended before its first event")
    return Won(account, resp, head, True, scanner)
