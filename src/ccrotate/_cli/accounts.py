"""``ccrotate accounts …`` and ``ccrotate auth status``: get accounts in, see their tokens.

Every write goes through :meth:`AccountsFile.update` (the cross-process lock, a
re-read, an atomic replace), the same path a running server's refresher uses, so
the CLI can edit the file while servers run; their hot reload picks it up.
Nothing printed here contains a token: at most a masked suffix such as ``…a1b2``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Sequence
from dataclasses import replace

from ccrotate._accounts.file import (
    AccountsFile,
    FileFormat,
    _check_name,  # pyright: ignore[reportPrivateUsage]
    discover_accounts_file,
)
from ccrotate._accounts.login import login, save_account
from ccrotate._accounts.model import Account, AccountKind, Secret
from ccrotate._cli.common import command, settings_from
from ccrotate._exceptions import AccountsFileError, CCRotateError
from ccrotate._server.config import Settings

__all__ = ["format_duration"]


def format_duration(seconds: float) -> str:
    """``seconds`` as a short human duration: ``45s``, ``12m``, ``7h 59m``, ``3d 4h``."""
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _expiry(account: Account, now: float) -> str:
    left = account.expires_in(now)
    if left is None:
        return "never (API key)"
    return f"in {format_duration(left)}" if left > 0 else f"expired {format_duration(left)} ago"


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in rows)


def _source(args: argparse.Namespace, settings: Settings) -> AccountsFile:
    # Reading: the file named, else what `ccrotate serve` would use.
    if getattr(args, "accounts_path", None):
        return AccountsFile(settings.accounts_path)
    return discover_accounts_file(settings.accounts_path, settings.credentials_path)


def _load(source: AccountsFile) -> list[Account] | None:
    if not source.exists():
        print(f"no accounts yet: {source.path} does not exist. Add one with `ccrotate accounts "
              "login NAME`, `ccrotate accounts add NAME --api-key-stdin` or `ccrotate accounts "
              "import-cli NAME`.", file=sys.stderr)
        return None
    return source.load()


def _from(source: AccountsFile) -> str:
    if source.format is FileFormat.CLAUDE_CLI:
        return f"from {source.path} (the Claude CLI's own login, as account 'default')"
    return f"from {source.path}"


@command("accounts list")
def _list(args: argparse.Namespace) -> int:
    source = _source(args, settings_from(args))
    accounts = _load(source)
    if accounts is None:
        return 1
    now = time.time()
    rows: list[tuple[str, ...]] = [
        ("NAME", "KIND", "STATE", "WEIGHT", "PRIORITY", "TOKEN EXPIRES", "CREDENTIAL")]
    for acc in accounts:
        rows.append((acc.name, acc.kind.value, "disabled" if acc.disabled else "enabled",
                     str(acc.weight), str(acc.priority), _expiry(acc, now),
                     acc.credential.masked))
    print(_table(rows))
    print(f"\n{len(accounts)} account(s) {_from(source)}")
    return 0


@command("auth status")
def _auth_status(args: argparse.Namespace) -> int:
    source = _source(args, settings_from(args))
    accounts = _load(source)
    if accounts is None:
        return 1
    now = time.time()
    rows: list[tuple[str, ...]] = [("NAME", "KIND", "TOKEN", "EXPIRES")]
    expired: list[str] = []
    for acc in accounts:
        left = acc.expires_in(now)
        valid = "valid" if left is None or left > 0 else "expired"
        if left is not None and left <= 0:
            expired.append(acc.name)
        rows.append((acc.name, acc.kind.value, valid, _expiry(acc, now)))
    print(_table(rows))
    print(f"\n{len(accounts)} account(s) {_from(source)}")
    if expired:
        print("Expired access tokens are refreshed by a running `ccrotate serve` on first use. "
              "If a refresh is refused (invalid_grant), log in again: "
              f"`ccrotate accounts login {expired[0]}`.")
    return 0


@command("accounts add")
def _add(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    target = AccountsFile(settings.accounts_path)
    _check_name(str(target.path), args.name)
    tty = sys.stdin.isatty()
    key = (getpass.getpass("API key (input hidden): ") if tty else sys.stdin.read()).strip()
    if not key or any(c.isspace() for c in key):
        raise CCRotateError("expected one API key on standard input (sk-ant-api03-…)")
    if key.startswith(("sk-ant-oat", "sk-ant-ort")):
        raise CCRotateError("that is an OAuth token, not an API key: use `ccrotate accounts "
                            "login NAME` or `ccrotate accounts import-cli NAME`")

    def change(accounts: dict[str, Account]) -> dict[str, Account]:
        old = accounts.get(args.name)
        if old is not None and old.kind is not AccountKind.API_KEY:
            raise AccountsFileError(str(target.path), "is an OAuth account; remove it first "
                                    "to replace it with an API key", account=args.name)
        if old is not None and not args.force:
            raise AccountsFileError(str(target.path), "already exists; pass --force to "
                                    "replace its API key", account=args.name)
        new = Account(name=args.name, kind=AccountKind.API_KEY, api_key=Secret(key))
        accounts[args.name] = replace(old, api_key=new.api_key) if old is not None else new
        return accounts

    existed = target.exists()
    target.update(change)
    print(f"saved API-key account {args.name!r} ({Secret(key).masked}) to {target.path}"
          + ("" if existed else " (new file)"))
    return 0


@command("accounts import-cli")
def _import_cli(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    target = AccountsFile(settings.accounts_path)
    _check_name(str(target.path), args.name)
    cli = AccountsFile(settings.credentials_path, format=FileFormat.CLAUDE_CLI)
    if not cli.exists():
        raise CCRotateError(f"no Claude CLI login at {cli.path} (on macOS the CLI keeps it in "
                            "the Keychain: use `ccrotate accounts login NAME` instead)")
    (found,) = cli.load()
    saved = save_account(target, replace(found, name=args.name, extra={}))
    print(f"imported the Claude CLI login as account {saved.name!r} "
          f"({saved.credential.masked}, token {_expiry(saved, time.time())}) into {target.path}")
    print("Note: Claude Code on this machine still holds the same refresh token, and refresh "
          "tokens are single-use: whichever of the two refreshes first leaves the other with a "
          "dead token. Stop using Claude Code with this login, or give ccrotate its own with "
          "`ccrotate accounts login`.")
    return 0


@command("accounts login")
def _login(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    target = AccountsFile(settings.accounts_path)
    _check_name(str(target.path), args.name)  # before the user goes through the browser
    saved = login(args.name, accounts_file=target, authorize_url=settings.oauth_authorize_url,
                  token_url=settings.oauth_token_url, client_id=settings.oauth_client_id,
                  stdin=sys.stdin, stdout=sys.stdout)
    print(f"\nlogged in: account {saved.name!r} ({saved.credential.masked}, token "
          f"{_expiry(saved, time.time())}) saved to {target.path}")
    return 0


@command("accounts remove")
def _remove(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    target = AccountsFile(settings.accounts_path)

    def change(accounts: dict[str, Account]) -> dict[str, Account]:
        if args.name not in accounts:
            raise AccountsFileError(str(target.path), "no such account", account=args.name)
        del accounts[args.name]
        return accounts

    if not target.exists():
        raise AccountsFileError(str(target.path), "file does not exist")
    target.update(change)
    print(f"removed account {args.name!r} from {target.path}")
    return 0
