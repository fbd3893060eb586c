"""The fake's OAuth side: token endpoint (refresh and PKCE code exchange) and authorize."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from ccrotate.testing._wire import CLAUDE_CODE_CLIENT_ID, DECODER, encode, mask


@dataclass(frozen=True, kw_only=True)
class TokenReply:
    """A one-shot variation of a successful token answer."""

    delay: float = 0.0
    omit_refresh_token: bool = False
    expires_in: int | None = None


@dataclass(frozen=True, kw_only=True)
class TokenError:
    """A one-shot failure of the token endpoint.

    ``consume=True`` uses up the presented refresh token anyway, as when the server
    rotated it but the answer got lost on the way back.
    """

    status: int = 500
    error: str = "server_error"
    description: str = "Internal server error"
    delay: float = 0.0
    consume: bool = False


@dataclass(frozen=True)
class TokenSet:
    """Tokens the fake issued (by a refresh, a code exchange, or :meth:`FakeOAuth.issue`)."""

    access_token: str
    refresh_token: str | None
    expires_in: int
    expires_at: float
    scope: str


@dataclass(frozen=True)
class _Code:
    challenge: str
    state: str | None
    redirect_uri: str | None
    client_id: str | None


class OAuthProblem(Exception):
    """An OAuth request the fake refuses; ``error`` is the RFC 6749 error code."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        self.error = error
        self.description = description
        self.status = status
        super().__init__(f"{error}: {description}")


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a PKCE ``verifier`` (base64url, no padding)."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(48)


class FakeOAuth:
    """OAuth state of a :class:`FakeUpstream`, reached as ``fake.oauth``.

    Refresh tokens are single-use and must be registered first (:meth:`add_refresh_token`
    or :meth:`issue`). Access tokens it issues become valid credentials of the fake, and
    expire after ``expires_in`` seconds.
    """

    def __init__(self, on_access_token: Callable[[str, float], None]) -> None:
        self.client_id: str | None = CLAUDE_CODE_CLIENT_ID
        self.expires_in = 28800
        self.scope = "user:inference user:profile"
        self.rotate_refresh_tokens = True
        self._on_access_token = on_access_token
        self._lock = threading.Lock()
        self._live: set[str] = set()
        self._counts: dict[str, int] = {}
        self._codes: dict[str, _Code] = {}
        self._script: deque[TokenReply | TokenError] = deque()
        self._issued: list[TokenSet] = []

    # -- scripting ------------------------------------------------------------------

    def add_refresh_token(self, token: str | None = None) -> str:
        """Register a usable refresh token (a fresh ``sk-ant-ort01-…`` if none given)."""
        token = token or _token("sk-ant-ort01-")
        with self._lock:
            self._live.add(token)
        return token

    def issue(self) -> TokenSet:
        """Mint a valid access/refresh token pair, as a completed login would."""
        return self._mint(rotate=True, expires_in=None)

    def register_code(self, code: str | None = None, *, code_challenge: str,
                      state: str | None = None, redirect_uri: str | None = None,
                      client_id: str | None = None) -> str:
        """Register an authorization code bound to a PKCE S256 challenge; returns it."""
        code = code or secrets.token_urlsafe(32)
        with self._lock:
            self._codes[code] = _Code(code_challenge, state, redirect_uri, client_id)
        return code

    def approve(self, authorize_url: str) -> str:
        """Play the user approving ``authorize_url``; returns the ``code#state`` to paste.

        The URL's host is ignored, so an app can keep ``https://claude.ai/oauth/authorize``.
        Raises :class:`OAuthProblem` when the URL lacks what the real page requires.
        """
        params = dict(parse_qsl(urlsplit(authorize_url).query))
        code = self.authorize(params)
        return f"{code}#{params['state']}"

    def script(self, *behaviours: TokenReply | TokenError) -> None:
        """Queue one-shot answers for the next token requests (any grant type)."""
        with self._lock:
            self._script.extend(behaviours)

    def refresh_count(self, token: str | None = None) -> int:
        """Refresh requests seen for ``token`` (all refresh requests when ``None``)."""
        with self._lock:
            if token is None:
                return sum(self._counts.values())
            return self._counts.get(token, 0)

    def is_live(self, refresh_token: str) -> bool:
        """Whether ``refresh_token`` can still be used."""
        with self._lock:
            return refresh_token in self._live

    @property
    def issued(self) -> list[TokenSet]:
        """Every token set issued so far, oldest first."""
        with self._lock:
            return list(self._issued)

    # -- protocol -------------------------------------------------------------------

    def _mint(self, *, rotate: bool, expires_in: int | None) -> TokenSet:
        lifetime = self.expires_in if expires_in is None else expires_in
        access = _token("sk-ant-oat01-")
        refresh = _token("sk-ant-ort01-") if rotate else None
        tokens = TokenSet(access, refresh, lifetime, time.time() + lifetime, self.scope)
        with self._lock:
            if refresh is not None:
                self._live.add(refresh)
            self._issued.append(tokens)
        self._on_access_token(access, tokens.expires_at)
        return tokens

    def authorize(self, params: Mapping[str, str]) -> str:
        """Validate authorize-URL parameters and register a code for them."""
        if params.get("response_type") != "code":
            raise OAuthProblem("unsupported_response_type", "response_type must be 'code'")
        if self.client_id is not None and params.get("client_id") != self.client_id:
            raise OAuthProblem("invalid_client", "Unknown client_id")
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            raise OAuthProblem("invalid_request",
                               "PKCE with code_challenge_method=S256 is required")
        if not params.get("state"):
            raise OAuthProblem("invalid_request", "state is required")
        if not params.get("redirect_uri"):
            raise OAuthProblem("invalid_request", "redirect_uri is required")
        return self.register_code(code_challenge=params["code_challenge"], state=params["state"],
                                  redirect_uri=params["redirect_uri"],
                                  client_id=params.get("client_id"))

    def authorize_response(self, query: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """``GET /oauth/authorize``: approve at once and redirect back with ``code``."""
        params = dict(parse_qsl(query))
        try:
            code = self.authorize(params)
        except OAuthProblem as exc:
            status, body = self._error(exc)
            return status, [], body
        state, redirect = params["state"], params["redirect_uri"]
        sep = "&" if "?" in redirect else "?"
        location = redirect + sep + urlencode({"code": code, "state": state})
        body = encode({"code": code, "state": state, "paste": f"{code}#{state}"})
        return 302, [(b"location", location.encode())], body

    def token_response(self, body: bytes) -> tuple[int, bytes, float]:
        """``POST /v1/oauth/token``: status, body, and the delay before answering.

        Tokens are consumed and minted at once; only the answer waits, so a client that
        gives up meanwhile loses them, as it would against the real endpoint.
        """
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        delay = scripted.delay if scripted is not None else 0.0
        try:
            data = DECODER.decode(body)
        except Exception:
            data = None
        try:
            if not isinstance(data, dict):
                raise OAuthProblem("invalid_request", "Request body must be a JSON object")
            if data.get("grant_type") == "refresh_token":
                tokens = self._refresh(data, scripted)
            elif data.get("grant_type") == "authorization_code":
                tokens = self._exchange(data, scripted)
            else:
                raise OAuthProblem("unsupported_grant_type", "Unsupported grant_type")
        except OAuthProblem as exc:
            return (*self._error(exc), delay)
        answer: dict[str, Any] = {"token_type": "Bearer", "access_token": tokens.access_token,
                                  "expires_in": tokens.expires_in, "scope": tokens.scope}
        if tokens.refresh_token is not None:
            answer["refresh_token"] = tokens.refresh_token
        if data["grant_type"] == "authorization_code":
            answer["account"] = {"uuid": "00000000-0000-4000-8000-000000000001",
                                 "email_address": "tester@example.com"}
            answer["organization"] = {"uuid": "00000000-0000-4000-8000-000000000002",
                                      "name": "Fake Org"}
        return 200, encode(answer), delay

    @staticmethod
    def _error(exc: OAuthProblem) -> tuple[int, bytes]:
        return exc.status, encode({"error": exc.error, "error_description": exc.description})

    def _check_client(self, data: Mapping[str, Any]) -> None:
        if self.client_id is not None and data.get("client_id") != self.client_id:
            raise OAuthProblem("invalid_client", "Client authentication failed", 401)

    def _fail(self, scripted: TokenError, token: str | None) -> None:
        if scripted.consume and token is not None:
            with self._lock:
                self._live.discard(token)
        raise OAuthProblem(scripted.error, scripted.description, scripted.status)

    def _refresh(self, data: Mapping[str, Any],
                       scripted: TokenReply | TokenError | None) -> TokenSet:
        token = data.get("refresh_token")
        if not isinstance(token, str) or not token:
            raise OAuthProblem("invalid_request", "refresh_token is required")
        with self._lock:
            self._counts[token] = self._counts.get(token, 0) + 1
        if isinstance(scripted, TokenError):
            self._fail(scripted, token)
        self._check_client(data)
        reply = scripted if isinstance(scripted, TokenReply) else TokenReply()
        rotate = self.rotate_refresh_tokens and not reply.omit_refresh_token
        with self._lock:
            # Checked and consumed under one lock: two racing refreshes cannot both win.
            if token not in self._live:
                raise OAuthProblem("invalid_grant",
                                   f"Refresh token {mask(token)} is invalid or already used")
            if rotate:
                self._live.discard(token)
        return self._mint(rotate=rotate, expires_in=reply.expires_in)

    def _exchange(self, data: Mapping[str, Any],
                        scripted: TokenReply | TokenError | None) -> TokenSet:
        for name in ("code", "redirect_uri", "client_id", "code_verifier"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise OAuthProblem("invalid_request", f"{name} is required")
        if isinstance(scripted, TokenError):
            self._fail(scripted, None)
        self._check_client(data)
        code = data["code"].split("#", 1)[0]
        with self._lock:
            entry = self._codes.pop(code, None)  # codes are single-use, even when refused
        if entry is None:
            raise OAuthProblem("invalid_grant", "Invalid 'code' in request.")
        if entry.redirect_uri is not None and data["redirect_uri"] != entry.redirect_uri:
            raise OAuthProblem("invalid_grant", "redirect_uri does not match the authorization")
        if entry.client_id is not None and data["client_id"] != entry.client_id:
            raise OAuthProblem("invalid_grant", "client_id does not match the authorization")
        if entry.state is not None and data.get("state") != entry.state:
            raise OAuthProblem("invalid_grant", "state does not match the authorization")
        if pkce_challenge(data["code_verifier"]) != entry.challenge:
            raise OAuthProblem("invalid_grant", "Invalid code_verifier")
        reply = scripted if isinstance(scripted, TokenReply) else TokenReply()
        return self._mint(rotate=True, expires_in=reply.expires_in)
