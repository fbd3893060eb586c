"""Logging a Claude subscription account in: OAuth authorization code with PKCE (S256).

The flow Claude Code uses with its manual redirect: open the authorize URL, approve,
copy the ``code#state`` the callback page shows, paste it back. The PKCE verifier
stays in this process: only its SHA-256 challenge is in the URL, and it travels to
the token endpoint alone, in the JSON body of the code exchange. ``state`` is a
separate random value, checked against the pasted one before the exchange.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit

from ccrotate._accounts.file import AccountsFile
from ccrotate._accounts.model import Account, AccountKind, Secret
from ccrotate._accounts.oauth import TokenAnswer, post_token_sync
from ccrotate._exceptions import CCRotateError

if TYPE_CHECKING:
    import httpx

__all__ = ["REDIRECT_URI", "SCOPES", "LoginRequest", "exchange_code", "login",
           "parse_pasted_code", "save_account", "start_login"]

REDIRECT_URI = "https://platform.claude.com/oauth/code/callback"
SCOPES = "user:profile user:inference"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """One login attempt: the URL for the user, and what the code exchange needs."""

    url: str
    state: str
    verifier: Secret = field(repr=False)
    redirect_uri: str = REDIRECT_URI


def start_login(authorize_url: str, *, client_id: str, redirect_uri: str = REDIRECT_URI,
                scope: str = SCOPES) -> LoginRequest:
    """A fresh PKCE verifier, its S256 challenge and a ``state``, built into the URL.

    Parameters:
        authorize_url: the authorization page (``https://claude.ai/oauth/authorize``).
        client_id: the OAuth client id.
        redirect_uri: where the page sends the code (the manual-copy callback page).
        scope: space-separated scopes.
    """
    verifier = _b64url(secrets.token_bytes(32))
    challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
    state = _b64url(secrets.token_bytes(32))
    query = urlencode({"code": "true", "client_id": client_id, "response_type": "code",
                       "redirect_uri": redirect_uri, "scope": scope,
                       "code_challenge": challenge, "code_challenge_method": "S256",
                       "state": state})
    sep = "&" if urlsplit(authorize_url).query else "?"
    return LoginRequest(authorize_url + sep + query, state, Secret(verifier), redirect_uri)


def parse_pasted_code(text: str) -> tuple[str, str | None]:
    """``(code, state)`` from what the user pasted: ``code#state``, or the callback URL."""
    text = text.strip()
    if "://" in text:
        params = dict(parse_qsl(urlsplit(text).query))
        code = params.get("code", "")
        state = params.get("state")
    else:
        code, _, rest = text.partition("#")
        state = rest or None
    if not code or any(c.isspace() for c in code):
        raise CCRotateError("that does not look like an authorization code "
                            "(expected code#state, as the callback page shows it)")
    return code, state


def exchange_code(request: LoginRequest, pasted: str, *, token_url: str, client_id: str,
                  account: str, http: httpx.Client | None = None) -> TokenAnswer:
    """Check ``state``, then trade the pasted code for tokens at ``token_url``.

    Raises :class:`CCRotateError` when the state does not match (a stale or foreign
    code) and :class:`RefreshError`/:class:`InvalidGrant` when the endpoint refuses.
    """
    code, state = parse_pasted_code(pasted)
    if state is None or not hmac.compare_digest(state, request.state):
        raise CCRotateError("the pasted code belongs to another login attempt (state does "
                            "not match); start again and paste the newest code")
    payload = {"grant_type": "authorization_code", "code": code,
               "redirect_uri": request.redirect_uri, "client_id": client_id,
               "code_verifier": request.verifier.reveal(), "state": state}
    answer = post_token_sync(token_url, payload, account=account, http=http,
                             grant="authorization code")
    if answer.refresh_token is None:
        raise CCRotateError("the token endpoint returned no refresh token; the account "
                            "could not be kept fresh, so it was not saved")
    return answer


def save_account(accounts_file: AccountsFile, account: Account) -> Account:
    """Add ``account`` to the file, or replace its credentials, through the locked write.

    Routing preferences and unknown keys of an existing entry are kept.
    """
    saved: list[Account] = []

    def change(accounts: dict[str, Account]) -> dict[str, Account]:
        old = accounts.get(account.name)
        new = account
        if old is not None:
            new = replace(old, kind=account.kind, access_token=account.access_token,
                          refresh_token=account.refresh_token, expires_at=account.expires_at,
                          api_key=account.api_key)
        accounts[account.name] = new
        saved.append(new)
        return accounts

    accounts_file.update(change)
    return saved[-1]


def login(name: str, *, accounts_file: AccountsFile, authorize_url: str, token_url: str,
          client_id: str, stdin: TextIO, stdout: TextIO, http: httpx.Client | None = None,
          clock: Callable[[], float] = time.time) -> Account:
    """The interactive login: print the URL, read ``code#state``, exchange, save as ``name``.

    Parameters:
        name: the account to create (or whose tokens to replace).
        accounts_file: where to save it.
        authorize_url, token_url, client_id: the OAuth endpoints and client.
        stdin, stdout: where the user pastes and reads (nothing secret is written).
        http: an ``httpx.Client`` for the exchange (a short-lived one otherwise).
        clock: epoch-seconds clock.
    """
    request = start_login(authorize_url, client_id=client_id)
    stdout.write(f"Log in account {name!r}: open this URL in a browser, approve, then copy "
                 "the code the page shows.\n\n" + request.url + "\n\n")
    stdout.write("Paste the code (code#state) here: ")
    stdout.flush()
    pasted = stdin.readline()
    if not pasted.strip():
        raise CCRotateError("no code was pasted; nothing was saved")
    answer = exchange_code(request, pasted, token_url=token_url, client_id=client_id,
                           account=name, http=http)
    now = clock()
    account = Account(name=name, kind=AccountKind.OAUTH, access_token=answer.access_token,
                      refresh_token=answer.refresh_token, expires_at=answer.expires_at(now))
    return save_account(accounts_file, account)
