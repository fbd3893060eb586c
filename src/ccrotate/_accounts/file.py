"""The accounts file: strict parsing, atomic locked write-back, unknown keys preserved.

Two on-disk formats are understood:

* ccrotate's own (the seed format, default ``~/.claude/accounts.json``)::

    {"version": 1, "accounts": {"primary": {"accessToken": "sk-ant-oat01-…",
      "refreshToken": "sk-ant-ort01-…", "expiresAt": 1747909518727},
      "ci": {"apiKey": "sk-ant-api03-…", "weight": 2}}}

* the Claude CLI's own login (``~/.claude/.credentials.json``), used as a single
  account named ``default`` when no accounts file exists.

Every write goes through :meth:`AccountsFile.update`: an exclusive lock on a
sidecar ``.lock`` file (so several ccrotate processes sharing one file never
interleave a read-refresh-write), a fresh read of the file under the lock, then
a temporary file in the same folder, ``fsync``, ``rename`` and a directory
``fsync``. A reader therefore sees the old file or the new one, never half of
one, and a malformed file is never overwritten.
"""

from __future__ import annotations

import contextlib
import enum
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ccrotate._accounts.model import NAME_RE, Account, AccountKind, Secret
from ccrotate._exceptions import AccountsFileError, ConfigError

__all__ = ["AccountsFile", "FileFormat", "discover_accounts_file"]

FILE_VERSION = 1
# Keys ccrotate owns inside one account object; everything else is the user's and is kept.
_KNOWN = frozenset({"accessToken", "refreshToken", "expiresAt", "apiKey", "weight",
                    "priority", "disabled", "baseUrl", "maxConcurrent"})
_CLI_KEY = "claudeAiOauth"
# Year 9999 in epoch milliseconds: anything later is a typo (and a huge integer would not
# even convert to seconds).
_MAX_EXPIRES_AT = 253_402_300_799_999
CLI_ACCOUNT_NAME = "default"

_decoder = msgspec.json.Decoder()


class FileFormat(enum.Enum):
    """Which layout a file on disk has."""

    ACCOUNTS = "accounts"
    CLAUDE_CLI = "claude_cli"


@dataclass(frozen=True, slots=True)
class _Snapshot:
    accounts: tuple[Account, ...]
    doc: dict[str, Any]
    stamp: tuple[int, int, int]


class AccountsFile:
    """One accounts file on disk: load it, and update it atomically under a lock.

    Parameters:
        path: the file. ``~`` is expanded.
        format: :attr:`FileFormat.ACCOUNTS` (default) or :attr:`FileFormat.CLAUDE_CLI`.
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 format: FileFormat = FileFormat.ACCOUNTS) -> None:
        self.path = Path(path).expanduser()
        self.format = format

    def __repr__(self) -> str:
        return f"AccountsFile({str(self.path)!r}, format={self.format.value})"

    def exists(self) -> bool:
        """Whether the file is there at all."""
        return self.path.exists()

    def stamp(self) -> tuple[int, int, int] | None:
        """A cheap change marker (mtime, size, inode); ``None`` when the file is missing."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load(self) -> list[Account]:
        """Read and validate the file. Raises :class:`AccountsFileError` naming what is wrong."""
        return list(self._read().accounts)

    def load_with_stamp(self) -> tuple[list[Account], tuple[int, int, int]]:
        """Like :meth:`load`, with the change marker of exactly the bytes that were parsed."""
        snap = self._read()
        return list(snap.accounts), snap.stamp

    # -- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the cross-process lock (blocking). Use from a thread in async code."""
        # Beside the real file, not beside a symlink to it: two processes reaching the
        # same file through different links (or one through a link, one directly) must
        # take the same lock.
        real = self.path.resolve()
        lock_path = real.with_name(real.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _flock(fd, exclusive=True)
            yield
        finally:
            _flock(fd, exclusive=False)
            os.close(fd)

    def update(self, change: Callable[[dict[str, Account]], dict[str, Account] | None]
               ) -> list[Account]:
        """Lock, re-read, apply ``change`` to the accounts by name, write back atomically.

        ``change`` receives the accounts as they are on disk *now* (another process
        may have changed them) and returns the new mapping, or ``None`` to write
        nothing. Returns the accounts as written. A missing file starts empty.
        """
        with self.lock():
            return self.update_locked(change)

    def update_locked(self, change: Callable[[dict[str, Account]], dict[str, Account] | None]
                      ) -> list[Account]:
        """:meth:`update` for a caller that already holds :meth:`lock`.

        A token refresh needs this: it keeps the lock across re-read, token request
        and write-back, and ``flock`` would block on a second lock in the same process.
        """
        snap = self._read() if self.path.exists() else _Snapshot((), {}, (0, 0, 0))
        current = {a.name: a for a in snap.accounts}
        new = change(dict(current))
        if new is None:
            return list(snap.accounts)
        # No name check here: an Account with a bad name cannot be built (Account.__post_init__).
        self._write(self._render(snap.doc, list(new.values())))
        return list(new.values())

    # -- internals -------------------------------------------------------------------------

    def _read(self) -> _Snapshot:
        where = str(self.path)
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                raw = f.read()
        except FileNotFoundError as exc:
            raise AccountsFileError(where, "file does not exist") from exc
        except OSError as exc:
            raise AccountsFileError(where, f"cannot read: {exc.strerror}") from exc
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        try:
            doc = _decoder.decode(raw)
        except msgspec.DecodeError as exc:
            # msgspec's message names the byte position, never the content (a test holds
            # it to that), so the cause can stay.
            raise AccountsFileError(where, f"not valid JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise AccountsFileError(where, "top level must be a JSON object")
        if self.format is FileFormat.CLAUDE_CLI:
            entry = doc.get(_CLI_KEY)
            if not isinstance(entry, dict):
                raise AccountsFileError(where, "must be a JSON object", field=_CLI_KEY)
            acc = _parse_oauth(where, CLI_ACCOUNT_NAME, entry)
            return _Snapshot((acc,), doc, stamp)
        version = doc.get("version", FILE_VERSION)
        if version != FILE_VERSION or isinstance(version, bool):
            # Echo a number only: a string here may be a token pasted in the wrong place.
            shown = repr(version) if isinstance(version, int | float) and not isinstance(
                version, bool) else f"of type {_json_type(version)}"
            raise AccountsFileError(where, f"unsupported version {shown} (expected 1)",
                                    field="version")
        accounts = doc.get("accounts")
        if not isinstance(accounts, dict):
            raise AccountsFileError(where, "must be a JSON object of name -> account",
                                    field="accounts")
        parsed: list[Account] = []
        for name, entry in accounts.items():
            _check_name(where, name)
            if not isinstance(entry, dict):
                raise AccountsFileError(where, "must be a JSON object", account=name)
            parsed.append(_parse_account(where, name, entry))
        return _Snapshot(tuple(parsed), doc, stamp)

    def _render(self, doc: dict[str, Any], accounts: list[Account]) -> dict[str, Any]:
        out = dict(doc)
        if self.format is FileFormat.CLAUDE_CLI:
            (acc,) = accounts
            entry = dict(out.get(_CLI_KEY) or {})
            entry.update(_oauth_fields(str(self.path), acc))
            out[_CLI_KEY] = entry
            return out
        out["version"] = FILE_VERSION
        out["accounts"] = {acc.name: _serialise(str(self.path), acc) for acc in accounts}
        return out

    def _write(self, doc: dict[str, Any]) -> None:
        data = msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"
        # Write through a symlink (dotfiles managers link accounts.json) instead of
        # replacing the link with a regular file.
        target = self.path.resolve() if self.path.is_symlink() else self.path
        folder = target.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(folder)


def discover_accounts_file(accounts_path: str | os.PathLike[str],
                           credentials_path: str | os.PathLike[str]) -> AccountsFile:
    """The accounts file when it exists, else the Claude CLI login as one ``default`` account.

    When neither exists, the (missing) accounts file is returned so that loading
    it names the path the user should create.
    """
    primary = AccountsFile(accounts_path)
    if primary.exists():
        return primary
    cli = AccountsFile(credentials_path, format=FileFormat.CLAUDE_CLI)
    if cli.exists():
        return cli
    return primary


# -- parsing helpers -------------------------------------------------------------------------

def _check_name(where: str, name: str) -> None:
    # Names travel in headers, URLs and metric labels, so keep them to a safe alphabet.
    if "sk-ant-" in name or len(name) > 64:
        # Most likely a token pasted where the name goes: reject it, and never echo it
        # (names end up in headers, logs and metric labels).
        raise AccountsFileError(where, f"an account name of {len(name)} characters looks "
                                "like a credential or is too long (at most 64 characters)")
    if not NAME_RE.match(name):
        raise AccountsFileError(
            where, "account names are 1-64 characters of letters, digits and . _ @ + - "
            "(starting with a letter or digit)", account=name)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "number"


def _parse_account(where: str, name: str, entry: dict[str, Any]) -> Account:
    extra = {k: v for k, v in entry.items() if k not in _KNOWN}
    weight = _opt_int(where, name, entry, "weight", 1, minimum=0)
    priority = _opt_int(where, name, entry, "priority", 0, minimum=None)
    cap = entry.get("maxConcurrent")
    max_concurrent = None if cap is None else _opt_int(where, name, entry, "maxConcurrent", 1,
                                                       minimum=1)
    disabled = entry.get("disabled", False)
    if not isinstance(disabled, bool):
        raise AccountsFileError(where, "must be true or false", account=name, field="disabled")
    base_url = entry.get("baseUrl")
    if base_url is not None and not (isinstance(base_url, str)
                                     and base_url.startswith(("http://", "https://"))):
        raise AccountsFileError(where, "must be an http:// or https:// URL", account=name,
                                field="baseUrl")
    if base_url is not None:
        base_url = base_url.rstrip("/")  # paths are appended with their own slash
    if "apiKey" in entry:
        if "accessToken" in entry:
            raise AccountsFileError(where, "has both apiKey and accessToken; keep one",
                                    account=name, field="apiKey")
        key = _token(where, name, entry, "apiKey")
        return _account(where, name=name, kind=AccountKind.API_KEY, api_key=key,
                        weight=weight, priority=priority, disabled=disabled, base_url=base_url,
                        max_concurrent=max_concurrent, extra=extra)
    acc = _parse_oauth(where, name, entry)
    return _account(where, name=name, kind=AccountKind.OAUTH, access_token=acc.access_token,
                    refresh_token=acc.refresh_token, expires_at=acc.expires_at,
                    weight=weight, priority=priority, disabled=disabled, base_url=base_url,
                        max_concurrent=max_concurrent, extra=extra)


def _parse_oauth(where: str, name: str, entry: dict[str, Any]) -> Account:
    if "accessToken" not in entry and "apiKey" not in entry:
        raise AccountsFileError(where, "missing credentials: needs accessToken, refreshToken "
                                "and expiresAt, or apiKey", account=name, field="accessToken")
    access = _token(where, name, entry, "accessToken")
    refresh = _token(where, name, entry, "refreshToken")
    expires = entry.get("expiresAt")
    if isinstance(expires, bool) or not isinstance(expires, int | float) \
            or not 0 < expires <= _MAX_EXPIRES_AT:
        raise AccountsFileError(where, "must be a positive number (epoch milliseconds)",
                                account=name, field="expiresAt")
    return _account(where, name=name, kind=AccountKind.OAUTH, access_token=access,
                    refresh_token=refresh, expires_at=expires / 1000.0)


def _account(where: str, **fields: Any) -> Account:
    # Each field was checked above with a file-specific message; whatever Account's own
    # rules still reject (an infinite expiry, say) is reported against the file too.
    try:
        return Account(**fields)
    except ConfigError as exc:
        raise AccountsFileError(where, str(exc), account=fields["name"]) from exc


def _token(where: str, name: str, entry: dict[str, Any], key: str) -> Secret:
    value = entry.get(key)
    if value is None:
        raise AccountsFileError(where, "is missing", account=name, field=key)
    if not isinstance(value, str) or not value.strip():
        raise AccountsFileError(where, "must be a non-empty string", account=name, field=key)
    try:
        return Secret(value.strip())
    except ConfigError as exc:
        # Secret's message describes the problem without quoting the value.
        raise AccountsFileError(where, str(exc), account=name, field=key) from exc


def _opt_int(where: str, name: str, entry: dict[str, Any], key: str, default: int,
             *, minimum: int | None) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or (
            minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise AccountsFileError(where, f"must be an integer{bound}", account=name, field=key)
    return value


def _oauth_fields(where: str, acc: Account) -> dict[str, Any]:
    tokens = acc.oauth
    if tokens is None:
        # The Claude CLI file holds one OAuth login; an API key has no place in it.
        raise AccountsFileError(where, "an API-key account cannot be written to this file",
                                account=acc.name)
    return {"accessToken": tokens.access_token.reveal(),
            "refreshToken": tokens.refresh_token.reveal(),
            "expiresAt": round(tokens.expires_at * 1000)}


def _serialise(where: str, acc: Account) -> dict[str, Any]:
    out = dict(acc.extra)
    if acc.oauth is None:
        out["apiKey"] = acc.credential.reveal()
    else:
        out.update(_oauth_fields(where, acc))
    if acc.weight != 1:
        out["weight"] = acc.weight
    if acc.priority != 0:
        out["priority"] = acc.priority
    if acc.disabled:
        out["disabled"] = True
    if acc.base_url:
        out["baseUrl"] = acc.base_url
    if acc.max_concurrent is not None:
        out["maxConcurrent"] = acc.max_concurrent
    return out


def _fsync_dir(folder: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


try:
    import fcntl

    def _flock(fd: int, *, exclusive: bool) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_UN)
except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _flock(fd: int, *, exclusive: bool) -> None:
        msvcrt.locking(fd, msvcrt.LK_LOCK if exclusive else msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
