"""Hot reload: apply edits of the accounts file to a running pool.

The file is polled (a ``stat`` per second by default; no extra dependency and it
works on every file system, network mounts included). A change is loaded and,
when valid, applied with :meth:`AccountPool.replace_accounts`, which keeps the
state of unchanged accounts (cooldowns, counters, rotation position).

A malformed or half-written file is ignored: the pool keeps serving with the last
good set, and the error stays visible in :attr:`AccountsWatcher.last_error` and
the log until a good file replaces it. The proxy's own write-backs are harmless:
the reloaded set equals the pool's, so nothing changes and nothing is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import anyio
import anyio.abc
import anyio.to_thread

from ccrotate._accounts.file import AccountsFile
from ccrotate._accounts.model import Account
from ccrotate._checks import positive
from ccrotate._exceptions import AccountsFileError
from ccrotate._pool.pool import AccountPool, ReloadResult

__all__ = ["AccountsWatcher"]

log = logging.getLogger("ccrotate.reload")

_UNSET = object()


class _Overlay(Protocol):
    def overlay(self, accounts: list[Account]) -> list[Account]: ...


class AccountsWatcher:
    """A background service that reloads the accounts file into the pool when it changes.

    Parameters:
        pool: the pool to update.
        accounts_file: the file to watch.
        interval: seconds between two looks at the file.
        refresher: the :class:`TokenRefresher` writing to the same file, so that tokens
            it could not save yet are never replaced by the stale ones on disk.
        clock: epoch-seconds clock for the timestamps below.

    Attributes (read them for a status page):
        last_error: why the current file is not applied, ``None`` when it is.
        last_error_at, last_reload_at: epoch seconds.
        last_result: what the last applied reload changed.
        reloads: reloads that changed something.
    """

    def __init__(self, pool: AccountPool, accounts_file: AccountsFile, *,
                 interval: float = 1.0, refresher: _Overlay | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.accounts_file = accounts_file
        # Zero would poll the file in a tight loop.
        self.interval = positive("AccountsWatcher", "interval", interval)
        self.refresher = refresher
        self._clock = clock
        self._stamp: object = _UNSET
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_reload_at: float | None = None
        self.last_result: ReloadResult | None = None
        self.reloads = 0

    def __repr__(self) -> str:
        return f"<AccountsWatcher {self.accounts_file!r} every {self.interval}s>"

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Check the file every ``interval`` seconds until cancelled."""
        task_status.started()
        while True:
            try:
                await self.check()
            except Exception:
                # A service that dies takes the server down: log and keep watching.
                log.exception("accounts reload: unexpected error; still watching")
            await anyio.sleep(self.interval)

    async def check(self) -> ReloadResult | None:
        """Look at the file once; apply it if it changed and is valid.

        Returns what the reload changed, or ``None`` when nothing was applied.
        """
        stamp = self.accounts_file.stamp()
        if stamp == self._stamp:
            return None
        if stamp is None:
            self._stamp = None
            self._fail(f"{self.accounts_file.path.name}: file is missing",
                       f"{self.accounts_file.path}: file is missing")
            return None
        try:
            accounts, read_stamp = await anyio.to_thread.run_sync(
                self.accounts_file.load_with_stamp)
        except AccountsFileError as exc:
            self._stamp = stamp  # the same bad bytes are not parsed (or logged) again
            self._fail(exc.public_message(), str(exc))
            return None
        # Changed again while we read it (a writer in the middle of its work): the next
        # round sees the final version. Checked with no await before replace_accounts,
        # so a refresh cannot slip its credentials in between and be undone by us.
        if self.accounts_file.stamp() != read_stamp:
            return None
        if self.refresher is not None:
            accounts = self.refresher.overlay(accounts)
        result = self.pool.replace_accounts(accounts)
        self._stamp = read_stamp
        if self.last_error is not None:
            log.info("accounts reload: %s is valid again", self.accounts_file.path)
        self.last_error = self.last_error_at = None
        if result.added or result.removed or result.changed:
            self.reloads += 1
            self.last_reload_at = self._clock()
            self.last_result = result
            log.info("accounts reload: added %s, removed %s, changed %s",
                     _names(result.added), _names(result.removed), _names(result.changed))
            return result
        return None

    def _fail(self, public: str, logged: str) -> None:
        # ``last_error`` is shown by the status API, so it names the file but not the
        # directory it lives in; the operator's log gets the full path.
        self.last_error = public
        self.last_error_at = self._clock()
        # AccountsFileError names the file, account and field, never a value.
        log.warning("accounts reload: %s; still serving the last good set (%d accounts)",
                    logged, len(self.pool))


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(names) if names else "none"
