"""The accounts-file side of a token refresh: the held lock, the re-read, the write-back.

Also the bookkeeping of tokens that could not be saved: after a refresh the old
refresh token is dead, so if the write-back fails the new tokens are kept here
(and served) until a retry lands. See ``docs/tokens.md``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import anyio
import anyio.to_thread

from ccrotate._accounts.file import AccountsFile
from ccrotate._accounts.model import Account, AccountKind, Secret
from ccrotate._accounts.oauth import TransientRefreshError, scrub
from ccrotate._exceptions import AccountsFileError, RefreshError

__all__ = ["TokenFile", "Unsaved", "describe", "with_tokens_of"]

log = logging.getLogger("ccrotate.refresh")


def with_tokens_of(base: Account, source: Account) -> Account:
    """``base`` (its settings and unknown keys) carrying the tokens of ``source``."""
    if source is base:
        return base
    tokens = source.oauth
    if tokens is None:
        raise RefreshError(source.name, "is an API-key account: it has no OAuth tokens to copy")
    return base.with_tokens(access_token=tokens.access_token.reveal(),
                            refresh_token=tokens.refresh_token.reveal(),
                            expires_at=tokens.expires_at)


def describe(exc: BaseException) -> str:
    """A short, token-free description of a write or lock failure."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, AccountsFileError):
        return scrub(exc.public_message())  # shown in the status API: no directory
    return scrub(str(exc)) or type(exc).__name__


@dataclass(slots=True)
class Unsaved:
    """Refreshed tokens that are not on disk yet."""

    account: Account
    """The tokens that should be on disk."""
    stale: Secret | None
    """The (dead) refresh token the file still holds."""
    error: str


class TokenFile:
    """Async access to an accounts file for the refresher (``None``: memory only).

    Parameters:
        accounts_file: the file, or ``None`` when tokens are not persisted.
    """

    def __init__(self, accounts_file: AccountsFile | None) -> None:
        self.accounts_file = accounts_file
        self.pending: dict[str, Unsaved] = {}

    def _file(self, name: str) -> AccountsFile:
        # read/write are only reached with a file (the refresher checks first); saying so
        # here turns a wrong call into a refresh failure instead of an AttributeError.
        if self.accounts_file is None:
            raise RefreshError(name, "no accounts file to read or write tokens")
        return self.accounts_file

    @contextlib.asynccontextmanager
    async def locked(self, name: str) -> AsyncGenerator[None]:
        """Hold the file's cross-process lock for the body (on behalf of account ``name``)."""
        # flock belongs to the open file description, not to a thread: take it in a
        # worker thread (it blocks) and release it from another. The thread is never
        # abandoned on cancellation, so a lock taken is always released.
        if self.accounts_file is None:
            yield
            return
        held = self.accounts_file.lock()
        try:
            await anyio.to_thread.run_sync(held.__enter__)
        except OSError as exc:
            raise TransientRefreshError(name, f"cannot lock the accounts file "
                                        f"({describe(exc)})") from exc
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(held.__exit__, None, None, None)

    async def read(self, name: str) -> Account:
        """Account ``name`` as the file holds it now (call with the lock held)."""
        file = self._file(name)
        try:
            accounts = await anyio.to_thread.run_sync(file.load)
        except AccountsFileError as exc:
            # Refreshing now would leave nowhere to save the result: wait for a good file.
            raise TransientRefreshError(
                name, "not refreshing while the accounts file is unusable "
                f"({exc.public_message()})") from exc
        for acc in accounts:
            if acc.name == name and acc.kind is AccountKind.OAUTH:
                return acc
        raise RefreshError(name, f"is no longer an OAuth account in {file.path.name}")

    async def write(self, name: str, account: Account) -> None:
        """Write ``account``'s tokens into its entry (call with the lock held).

        Raises ``OSError`` or :class:`AccountsFileError`; the file is then unchanged.
        """
        file = self._file(name)

        def change(accounts: dict[str, Account]) -> dict[str, Account]:
            current = accounts.get(name)
            if current is None or current.kind is not AccountKind.OAUTH:
                # Changed behind the lock by a writer that does not take it (an editor).
                raise AccountsFileError(str(file.path), "is no longer an OAuth account",
                                        account=name)
            accounts[name] = with_tokens_of(current, account)
            return accounts

        await anyio.to_thread.run_sync(file.update_locked, change)
        self.pending.pop(name, None)

    def remember(self, name: str, account: Account, stale: Secret | None,
                 exc: BaseException) -> str:
        """Keep ``account``'s tokens as unsaved (the file holds ``stale``); returns the error."""
        error = describe(exc)
        self.pending[name] = Unsaved(account, stale, error)
        return error

    async def settle(self, name: str, disk: Account) -> Account:
        """Retry the pending write of ``name`` if the file still has the stale tokens.

        Call with the lock held. Returns what the file holds afterwards.
        """
        pending = self.pending[name]
        if disk.refresh_token != pending.stale:
            self.pending.pop(name)  # a login or another process wrote newer tokens
            return disk
        try:
            await self.write(name, pending.account)
        except (OSError, AccountsFileError) as exc:
            pending.error = describe(exc)
            return disk
        log.warning("account %r: refreshed tokens are now saved to %s", name,
                    self.accounts_file)
        return pending.account

    def overlay(self, accounts: list[Account]) -> list[Account]:
        """``accounts`` from the file, with unsaved tokens laid over the stale ones."""
        out: list[Account] = []
        for acc in accounts:
            pending = self.pending.get(acc.name)
            if pending is not None:
                if acc.refresh_token == pending.stale:
                    acc = with_tokens_of(acc, pending.account)
                else:
                    self.pending.pop(acc.name, None)  # the file has newer tokens: it wins
            out.append(acc)
        return out
