"""TokenRefresher: OAuth tokens renewed before they expire, exactly once, and saved before use.

Every refresh rotates the refresh token: the old one dies the moment the new one
is issued. So a refresh must happen once per refresh token, and its result must
reach the accounts file before anything relies on it:

* within this process, one ``anyio.Lock`` per account: concurrent callers wait for
  the one refresh in flight and get its result;
* across processes sharing the accounts file, the file's lock is held across
  re-read → token request → write-back. The re-read comes first: when another
  process already rotated the tokens, they are adopted and no request is made;
* across replicas sharing a state backend (Redis), its refresh lock is taken around
  all of that, and the shared tokens are re-checked first: a replica that finds
  tokens another one just renewed adopts them and makes no request. New tokens are
  shared and announced, so every replica uses them at once;
* the new tokens are written (atomically, other accounts and unknown keys kept)
  before the pool hands them out. If that write fails, the tokens are served from
  memory, the failure is reported on the account, and the write is retried until
  it lands (see ``docs/tokens.md`` for the crash analysis).

Nothing starts in ``__init__``: the background loop is :meth:`TokenRefresher.run`,
started by the app's lifespan (or ``async with refresher:`` in a notebook).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from ccrotate._accounts.file import AccountsFile
from ccrotate._accounts.model import Account, Secret
from ccrotate._accounts.oauth import TokenAnswer, TransientRefreshError, post_token
from ccrotate._accounts.writeback import TokenFile, with_tokens_of
from ccrotate._checks import at_least, non_negative, positive
from ccrotate._exceptions import (
    AccountsFileError,
    ConfigError,
    InvalidGrant,
    RefreshError,
    UnknownAccount,
)
from ccrotate._pool.pool import AccountPool
from ccrotate._pool.state import AccountState
from ccrotate._state.backend import StateBackend

if TYPE_CHECKING:
    import httpx

__all__ = ["TokenRefresher"]

log = logging.getLogger("ccrotate.refresh")


@dataclass(slots=True)
class _Failing:
    count: int
    at: float
    retry_at: float
    message: str


class TokenRefresher:
    """Keeps the pool's OAuth tokens fresh and saved (see the module docstring).

    Implements the proxy's ``Refresher`` protocol. Standalone use::

        refresher = TokenRefresher(pool, accounts_file, token_url=..., client_id=...)
        await refresher.refresh("primary")      # one refresh now
        async with refresher:                   # or: keep every account fresh meanwhile
            ...

    Parameters:
        pool: the :class:`AccountPool` whose accounts it renews (``update_credentials``).
        accounts_file: where tokens are written back; ``None`` keeps them in memory only.
        token_url: the OAuth token endpoint.
        client_id: the OAuth client id.
        refresh_buffer: refresh this many seconds before a token expires.
        margin: a request waits for a refresh only when its token has less than this left.
        http: an ``httpx.AsyncClient`` to use (a short-lived one per refresh otherwise).
        clock: epoch-seconds clock.
        attempts: token requests per refresh before giving up on network errors and 5xx.
        backoff: first pause between those attempts (doubles, with jitter).
        timeout: seconds for one token request.
        poll_interval: longest sleep of the background loop between looks at the pool.
        retry_interval: first pause before the background loop retries a failed refresh
            or an unsaved write (doubles up to ``retry_cap``).
        state: a shared state backend: its lock makes one replica refresh, and its
            tokens are adopted by the others (``None`` or an unshared one: this process only).
    """

    def __init__(self, pool: AccountPool, accounts_file: AccountsFile | None, *,
                 token_url: str, client_id: str, refresh_buffer: float = 600.0,
                 margin: float = 60.0, http: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time, attempts: int = 3,
                 backoff: float = 0.5, timeout: float = 30.0, poll_interval: float = 60.0,
                 retry_interval: float = 5.0, retry_cap: float = 300.0,
                 state: StateBackend | None = None) -> None:
        owner = "TokenRefresher"
        if not isinstance(token_url, str) or not token_url.startswith(("https://", "http://")):
            raise ConfigError(f"{owner}.token_url: must be an http(s) URL (got {token_url!r})")
        if not isinstance(client_id, str) or not client_id.strip():
            raise ConfigError(f"{owner}.client_id: must be a non-empty string "
                              f"(got {client_id!r})")
        self.pool = pool
        self.accounts_file = accounts_file
        self.token_url = token_url
        self.client_id = client_id
        self.refresh_buffer = non_negative(owner, "refresh_buffer", refresh_buffer)
        self.margin = non_negative(owner, "margin", margin)
        self._http = http
        self._clock = clock
        self._attempts = at_least(owner, "attempts", attempts, 1)
        self._backoff = non_negative(owner, "backoff", backoff)
        self._timeout = positive(owner, "timeout", timeout)
        # Zero would make the background loop spin without sleeping.
        self._poll = positive(owner, "poll_interval", poll_interval)
        self._retry = positive(owner, "retry_interval", retry_interval)
        self._retry_cap = positive(owner, "retry_cap", retry_cap)
        if self._retry_cap < self._retry:
            raise ConfigError(f"{owner}.retry_cap: must be >= retry_interval "
                              f"({retry_interval!r}) (got {retry_cap!r})")
        self._locks: dict[str, anyio.Lock] = {}
        self._state = state if state is not None and state.shared else None
        # Held across one token request and its write-back: they never take longer.
        self._lock_ttl = self._timeout + 30.0
        self._file = TokenFile(accounts_file)
        self._failing: dict[str, _Failing] = {}
        self._renewed_at: dict[str, float] = {}
        self._running: set[str] = set()
        self._wake: anyio.Event | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self.refreshes = 0
        """Token requests that succeeded (adoptions from the file are not counted)."""
        self.listeners: list[Callable[[str, str], None]] = []
        """Told ``(account, outcome)`` after each refresh: success, invalid_grant, failure."""

    def __repr__(self) -> str:
        return f"<TokenRefresher accounts_file={self.accounts_file!r}>"

    # -- the proxy's Refresher protocol ---------------------------------------------------

    async def ensure_fresh(self, account: Account) -> Account:
        """``account`` with a token valid for at least ``margin`` seconds, refreshing if needed.

        A token still valid is returned as it is when a refresh fails on the network;
        raises :class:`RefreshError` (or :class:`InvalidGrant`) when nothing valid is left.
        """
        if not self._oauth(account) or self._left(account) > self.margin:
            return account
        started = self._clock()
        async with self._lock_for(account.name):
            try:
                current = self.pool.account(account.name)
            except UnknownAccount:
                return account  # removed by a reload meanwhile: let this request finish
            if self._left(current) > self.margin:
                return current  # refreshed by whoever held the lock before us
            try:
                fail = self._failing.get(account.name)
                if fail is not None and (fail.at >= started or self._clock() < fail.retry_at):
                    # It just failed, or is backing off: don't hammer the endpoint per request.
                    raise RefreshError(account.name, fail.message)
                return await self._renew(account.name, seen=current, reason="about to expire")
            except InvalidGrant:
                raise
            except RefreshError:
                if self._left(current) > 0:
                    return current
                raise
            except UnknownAccount:
                return current  # removed by a reload mid-refresh

    async def refresh(self, name: str, *, reason: str = "requested") -> Account:
        """Refresh ``name`` now (after a 401, or an operator's "refresh now").

        Concurrent calls share one refresh. Raises :class:`UnknownAccount`,
        :class:`InvalidGrant` (the account is put in ``auth_error``) or :class:`RefreshError`.
        """
        seen = self.pool.account(name)
        if not self._oauth(seen):
            raise RefreshError(name, "is not an OAuth account; there is nothing to refresh")
        started = self._clock()
        async with self._lock_for(name):
            current = self.pool.account(name)
            if current.access_token != seen.access_token:
                return current  # renewed while we waited for the lock
            fail = self._failing.get(name)
            if fail is not None and fail.at >= started:
                raise RefreshError(name, fail.message)
            return await self._renew(name, seen=current, reason=reason)

    # -- the background service -----------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Refresh every OAuth account ``refresh_buffer`` seconds before it expires, forever.

        Accounts that are cooling down are refreshed too (they come back with a valid
        token); disabled ones and those needing a new login are left alone. Failed
        refreshes and unsaved write-backs are retried with backoff.
        """
        self._wake = anyio.Event()
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    try:
                        delay = await self._tick(tg)
                    except Exception:
                        # A service that dies takes the server down: log, pause, go on.
                        log.exception("token refresher: unexpected error; continuing")
                        delay = self._retry
                    with anyio.move_on_after(max(delay, 0.01)):
                        await self._wake.wait()
                    self._wake = anyio.Event()
        finally:
            with anyio.CancelScope(shield=True):
                if self._file.pending:
                    await self.flush()
                for name, pending in self._file.pending.items():
                    log.error("account %r: refreshed tokens were never saved (%s); they are "
                              "lost when this process exits: run `ccrotate accounts login %s`",
                              name, pending.error, name)

    async def _tick(self, tg: anyio.abc.TaskGroup) -> float:
        # One look at the pool: start the refreshes that are due; seconds until the next.
        if self._file.pending:
            await self.flush()
        now = self._clock()
        wake = now + self._poll
        for name in self.pool.names:
            at = self.next_refresh(name)
            if at is None or name in self._running:
                continue
            if at <= now:
                self._running.add(name)
                tg.start_soon(self._background, name)
            else:
                wake = min(wake, at)
        if self._file.pending:
            wake = min(wake, now + self._retry)
        return wake - now

    def next_refresh(self, name: str) -> float | None:
        """When the background loop will refresh ``name`` (epoch seconds), ``None`` if never."""
        try:
            status = self.pool.status(name)
        except UnknownAccount:
            return None
        tokens = self.pool.account(name).oauth
        if tokens is None or status.state is AccountState.DISABLED:
            return None
        fail = self._failing.get(name)
        if status.state is AccountState.AUTH_ERROR and fail is None:
            return None  # needs a new login, unless our own refresh failed transiently
        at = tokens.expires_at - self.refresh_buffer
        renewed = self._renewed_at.get(name)
        if renewed is not None:
            # Never sooner than half a fresh token's life: short-lived tokens must not spin.
            at = max(at, renewed + (tokens.expires_at - renewed) / 2)
        return max(at, fail.retry_at) if fail is not None else at

    async def __aenter__(self) -> TokenRefresher:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        await self._tg.start(self.run)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            self._tg = None

    # -- unsaved tokens --------------------------------------------------------------------

    @property
    def unsaved(self) -> dict[str, str]:
        """Accounts whose refreshed tokens are not on disk yet, with the write error."""
        return {name: p.error for name, p in self._file.pending.items()}

    async def flush(self) -> bool:
        """Retry writing tokens that could not be saved; ``True`` once none are left."""
        pending = self._file.pending
        for name in list(pending):
            if name not in self.pool:
                pending.pop(name, None)
                continue
            async with self._lock_for(name):
                if name not in pending:
                    continue
                with anyio.CancelScope(shield=True):
                    async with self._file.locked(name):
                        try:
                            disk = await self._file.read(name)
                        except TransientRefreshError as exc:
                            pending[name].error = _reason(exc)
                            continue
                        except RefreshError:
                            pending.pop(name)  # no longer an OAuth account on disk
                            continue
                        await self._file.settle(name, disk)
        return not pending

    def overlay(self, accounts: list[Account]) -> list[Account]:
        """Accounts loaded from the file, with tokens not saved yet put back over stale ones.

        The hot-reload watcher calls this so a reload never swaps dead tokens back in.
        """
        return self._file.overlay(accounts)

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _oauth(account: Account) -> bool:
        return account.oauth is not None

    def _left(self, account: Account) -> float:
        left = account.expires_in(self._clock())
        return math.inf if left is None else left

    def _lock_for(self, name: str) -> anyio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = anyio.Lock()
        return lock

    async def _background(self, name: str) -> None:
        try:
            async with self._lock_for(name):
                at = self.next_refresh(name)
                if at is None or at > self._clock():
                    return
                await self._renew(name, seen=self.pool.account(name), reason="scheduled")
        except (RefreshError, UnknownAccount):
            pass  # reported on the account and in the log; retried per _failing
        except Exception as exc:
            log.exception("account %r: unexpected error in the scheduled refresh", name)
            self._note_failure(name, f"unexpected error: {type(exc).__name__}")
        finally:
            self._running.discard(name)
            if self._wake is not None:
                self._wake.set()

    async def _renew(self, name: str, *, seen: Account, reason: str) -> Account:
        # Called with the account's lock held: attempts with backoff, then bookkeeping.
        last = RefreshError(name, "no token request was made")  # replaced by each attempt
        for attempt in range(self._attempts):
            if attempt:
                await anyio.sleep(self._backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
            try:
                with anyio.CancelScope(shield=True):
                    # Shielded: once the token request is out, its answer must be saved.
                    account = await self._renew_once(name, seen=seen, reason=reason)
                    self._failing.pop(name, None)
                    self._tell(name, "success")
                    return account
            except InvalidGrant as exc:
                self._failing.pop(name, None)
                log.error("%s", exc)
                self.pool.report_auth_error(name, _reason(exc))
                self._tell(name, "invalid_grant")
                raise
            except TransientRefreshError as exc:
                last = exc
                log.warning("account %r: token refresh attempt %d of %d failed: %s", name,
                            attempt + 1, self._attempts, _reason(exc))
                continue
            except RefreshError as exc:
                last = exc
                break
        message = _reason(last)
        if isinstance(last, TransientRefreshError):
            message = f"token refresh failed after {self._attempts} attempts: {message}"
        self._note_failure(name, message)
        self._tell(name, "failure")
        raise RefreshError(name, message) from last

    def _tell(self, name: str, outcome: str) -> None:
        for listener in self.listeners:
            try:
                listener(name, outcome)
            except Exception:  # a broken metrics hook must not break token refresh
                log.exception("refresh listener %r failed", listener)

    def _note_failure(self, name: str, message: str) -> None:
        # Visible on the account, and the next try backs off (the loop honours retry_at).
        now = self._clock()
        fail = self._failing.get(name)
        count = fail.count + 1 if fail is not None else 1
        delay = min(self._retry_cap, self._retry * 2 ** (count - 1))
        self._failing[name] = _Failing(count, now, now + delay, message)
        self.pool.report_failure(name, message)
        log.warning("account %r: %s; next try in %.0fs", name, message, delay)

    async def _renew_once(self, name: str, *, seen: Account, reason: str) -> Account:
        state = self._state
        if state is None:
            return await self._renew_here(name, seen=seen, reason=reason)
        key = f"refresh:{name}"
        token = await self._shared_lock(name, key, seen)
        if isinstance(token, Account):
            return token  # another replica renewed them while we waited
        try:
            if token is not None:
                # Taken: a replica that held it before us may have renewed them already.
                fresher = await self._fresher(name, seen)
                if fresher is not None:
                    return fresher
            new = await self._renew_here(name, seen=seen, reason=reason)
            if new.oauth is not None:
                await state.share_tokens(name, new.oauth, replica="")
            return new
        finally:
            if token is not None:
                await state.unlock(key, token)

    async def _shared_lock(self, name: str, key: str, seen: Account) -> str | Account | None:
        # The shared refresh lock's token; the adopted account if another replica renewed
        # the tokens meanwhile; None when the store cannot say (the file lock alone then).
        state = self._state
        if state is None:
            return None
        deadline = anyio.current_time() + self._lock_ttl
        pause = 0.05
        while True:
            token = await state.lock(key, self._lock_ttl)
            if token is not None or state.health().degraded:
                return token
            fresher = await self._fresher(name, seen)
            if fresher is not None:
                return fresher
            if anyio.current_time() >= deadline:
                log.warning("account %r: another replica held the refresh lock for %.0fs; "
                            "refreshing under the accounts file's lock only", name,
                            self._lock_ttl)
                return None
            await anyio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _fresher(self, name: str, seen: Account) -> Account | None:
        # Tokens newer than the ones the caller set out to renew: shared by another replica
        # (adopted now, or already by the subscriber while we waited for the lock).
        adopted = await self.adopt_shared(name)
        if adopted is not None:
            return adopted
        current = self.pool.account(name)
        if current.access_token != seen.access_token and self._left(current) > self.margin:
            return current
        return None

    async def adopt_shared(self, name: str) -> Account | None:
        """Use the tokens another replica shared for ``name`` if they are newer than ours.

        Returns the account with them, or ``None`` when there is nothing newer (or no
        shared state). Called when a replica announces new tokens, and before a refresh.
        """
        if self._state is None:
            return None
        tokens = await self._state.tokens(name)
        try:
            mem = self.pool.account(name)
        except UnknownAccount:
            return None
        if (tokens is None or mem.oauth is None or tokens.access_token == mem.access_token
                or tokens.expires_at <= mem.oauth.expires_at
                or tokens.expires_at - self._clock() <= self.margin):
            return None
        adopted = mem.with_tokens(access_token=tokens.access_token.reveal(),
                                  refresh_token=tokens.refresh_token.reveal(),
                                  expires_at=tokens.expires_at)
        self._install(adopted)
        self._failing.pop(name, None)
        log.info("account %r: adopted tokens renewed by another replica", name)
        return adopted

    async def _renew_here(self, name: str, *, seen: Account, reason: str) -> Account:
        async with self._file.locked(name):
            mem = self.pool.account(name)
            if mem.oauth is None:
                # A reload turned it into an API-key account while we waited for the lock.
                raise RefreshError(name, "is no longer an OAuth account")
            source = mem
            stale: Secret | None = None
            if self.accounts_file is not None:
                disk = await self._file.read(name)
                stale = disk.refresh_token
                if name in self._file.pending:
                    disk = await self._file.settle(name, disk)
                # Still unsaved: the file holds dead tokens, ours in memory are the live ones.
                if name not in self._file.pending and disk.refresh_token != mem.refresh_token:
                    # Another process (or a login) rotated the tokens since we loaded them.
                    if disk.access_token != seen.access_token and self._left(disk) > self.margin:
                        adopted = with_tokens_of(mem, disk)
                        self._install(adopted)
                        log.info("account %r: adopted tokens renewed by another process", name)
                        return adopted
                    source = disk  # the newest refresh token there is
            # source is mem (checked above) or what read() returned, always OAuth; the
            # check only gives the type checker the tokens.
            tokens = source.oauth
            if tokens is None:
                raise RefreshError(name, "is no longer an OAuth account")
            answer = await self._post(name, tokens.refresh_token)
            now = self._clock()
            new = answer.apply(with_tokens_of(mem, source), now)
            if self.accounts_file is not None:
                try:
                    await self._file.write(name, new)
                except (OSError, AccountsFileError) as exc:
                    self._report_unsaved(name, new, stale, exc)
            self._install(new)
            self.refreshes += 1
            left = new.expires_in(now) or 0.0
            log.log(logging.INFO if self.accounts_file else logging.WARNING,
                    "account %r: token refreshed (%s); valid for %.0f min%s", name, reason,
                    left / 60, "" if self.accounts_file else
                    " (no accounts file: the new tokens live in this process only)")
            return new

    def _report_unsaved(self, name: str, account: Account, stale: Secret | None,
                        exc: BaseException) -> None:
        error = self._file.remember(name, account, stale, exc)
        where = self.accounts_file.path.name if self.accounts_file is not None else "?"
        message = (f"new tokens could not be saved to {where} ({error}); "
                   "serving them from memory and retrying the write")
        log.error("account %r: %s", name, message)
        self.pool.report_failure(name, message)
        if self._wake is not None:
            self._wake.set()

    def _install(self, account: Account) -> None:
        self._renewed_at[account.name] = self._clock()
        with contextlib.suppress(UnknownAccount):  # removed by a reload meanwhile
            self.pool.update_credentials(account)

    async def _post(self, name: str, refresh_token: Secret) -> TokenAnswer:
        payload = {"grant_type": "refresh_token", "refresh_token": refresh_token.reveal(),
                   "client_id": self.client_id}
        return await post_token(self.token_url, payload, account=name, http=self._http,
                                request_timeout=self._timeout)


def _reason(exc: RefreshError) -> str:
    # The message without its "account 'name': " prefix (names never contain ": ").
    return str(exc).split(": ", 1)[-1]
