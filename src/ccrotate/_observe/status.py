"""The status API: see the pool and act on it, as a small Starlette app to mount anywhere.

Routes, relative to the mount point (the reference server mounts it at ``/status``)::

    GET  /                          the pool: counts per state, next account, every account
    GET  /accounts                  every account
    GET  /accounts/{name}           one account
    POST /accounts/{name}/refresh   force an OAuth token refresh now
    POST /accounts/{name}/enable    put an account back into rotation
    POST /accounts/{name}/disable   take it out (survives reloads of the accounts file)

Who may call what is decided before routing (so unknown names are not even
probed without a key): reads (``GET``/``HEAD``) need ``read_auth`` or
``admin_auth``, everything else needs ``admin_auth``. An authenticator left at
``None`` admits loopback peers only, which makes ``status_app(pool)`` safe to
mount on any server; for actions, only loopback peers that are not web browsers
(no ``Origin``, no ``Sec-Fetch-*``), since any page can make a browser POST.
Responses never hold a credential: at most ``…a1b2``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Mount, Route

from ccrotate._accounts.model import Account, AccountKind
from ccrotate._asgi import ASGIApp, Receive, Scope, Send, from_browser, route_path, send_bytes
from ccrotate._checks import has_methods, is_callable
from ccrotate._exceptions import InvalidGrant, RefreshError, UnknownAccount
from ccrotate._observe.health import (
    AccountView,
    ActionResult,
    PoolView,
    account_view,
    count_states,
    scrub,
    state_view,
)
from ccrotate._pool.pool import AccountPool, AccountStatus
from ccrotate._proxy.auth import ClientAuth, presented_token
from ccrotate._state.backend import StateBackend

__all__ = ["ForceRefresher", "StatusMount", "is_loopback_peer", "status_app", "status_auth"]

Authenticator = Callable[[Sequence[tuple[bytes, bytes]]], bool]
log = logging.getLogger("ccrotate.status")
_ENCODER = msgspec.json.Encoder()
_READ_METHODS = frozenset({"GET", "HEAD"})
_JSON_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


class ForceRefresher(Protocol):
    """What the refresh route needs (``TokenRefresher`` has it)."""

    async def refresh(self, name: str, *, reason: str) -> Account:
        """Refresh ``name``'s access token now; raises :class:`RefreshError`."""
        ...


# -- errors ---------------------------------------------------------------------------------


class _ErrorDetail(msgspec.Struct):
    type: str
    message: str


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail


def _error_bytes(type_: str, message: str) -> bytes:
    return _ENCODER.encode(_ErrorBody(_ErrorDetail(type_, message)))


def _error(status: int, type_: str, message: str) -> Response:
    return Response(_error_bytes(type_, message), status_code=status,
                    media_type="application/json", headers={"cache-control": "no-store"})


def _json(value: object, status: int = 200) -> Response:
    return Response(_ENCODER.encode(value), status_code=status, media_type="application/json",
                    headers={"cache-control": "no-store"})


_HTTP_TYPES = {404: "not_found_error", 405: "invalid_request_error"}


async def _http_error(request: Request, exc: Exception) -> Response:
    # Registered for HTTPException only; Starlette's handler type is the general one.
    if not isinstance(exc, HTTPException):
        raise exc
    type_ = _HTTP_TYPES.get(exc.status_code, "invalid_request_error")
    response = _error(exc.status_code, type_, f"ccrotate status: {exc.detail}")
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _server_error(request: Request, exc: Exception) -> Response:
    # The exception text is not shown: it is logged by the server, not sent to clients.
    return _error(500, "api_error", "ccrotate status: internal error")


def _audit(request: Request, action: str, name: str) -> None:
    # Who changed the pool, for the server log: the peer address, never the key.
    peer = request.client.host if request.client is not None else "unknown peer"
    log.info("status API: %s of account %r requested by %s", action, name, peer)


# -- access control -------------------------------------------------------------------------


def is_loopback_peer(scope: Scope) -> bool:
    """Whether the request comes from this machine (by the ASGI ``client`` address)."""
    client = scope.get("client")
    if not client:
        return False  # unknown peer (some servers, unix sockets): not provably local
    try:
        addr = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


class _Guard:
    # Pure ASGI, outside the router: the verdict never depends on whether the path
    # or account exists, so a caller without a key learns nothing about the pool.

    def __init__(self, app: ASGIApp, *, read_auth: Authenticator | None,
                 admin_auth: Authenticator | None) -> None:
        self.app = app
        self.read_auth = read_auth
        self.admin_auth = admin_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, type_, message = refusal
        headers = list(_JSON_HEADERS)
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="ccrotate"'))
        await send_bytes(send, status, headers, _error_bytes(type_, message))

    def _check(self, scope: Scope) -> tuple[int, str, str] | None:
        admin_ok = self._passes(self.admin_auth, scope)
        if scope["method"] in _READ_METHODS:
            if admin_ok or self._passes(self.read_auth, scope):
                return None
            return self._refuse(scope, read=True)
        if admin_ok:
            if self.admin_auth is None and from_browser(scope):
                # The loopback rule trusts this machine's programs, not the web pages its
                # browser shows: any page can make the browser POST here (docs/security.md).
                return (403, "permission_error",
                        "ccrotate status: admin actions from a web browser need the admin "
                        "token; set CCROTATE_ADMIN_TOKEN and send it as x-api-key or "
                        "Authorization: Bearer")
            return None
        if self.read_auth is not None and self.read_auth(scope["headers"]):
            return (403, "permission_error",
                    "ccrotate status: this key may read the status but not change it; "
                    "admin actions need the admin token (CCROTATE_ADMIN_TOKEN)")
        return self._refuse(scope, read=False)

    @staticmethod
    def _passes(auth: Authenticator | None, scope: Scope) -> bool:
        if auth is None:
            return is_loopback_peer(scope)
        return auth(scope["headers"])

    def _refuse(self, scope: Scope, *, read: bool) -> tuple[int, str, str]:
        what = "reading the status" if read else "admin actions"
        # A key would have helped if any authenticator (not the loopback rule) was in play.
        if self.admin_auth is not None or (read and self.read_auth is not None):
            given = presented_token(scope["headers"]) is not None
            return (401, "authentication_error",
                    "ccrotate status: " + ("invalid key" if given else "a key is required")
                    + f" for {what} (x-api-key or Authorization: Bearer)")
        return (403, "permission_error",
                f"ccrotate status: {what} is open to loopback clients only; configure a "
                "token to allow remote access")


def _deny(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    return False


def status_auth(auth_tokens: Sequence[str], admin_token: str | None,
                ) -> tuple[Authenticator | None, Authenticator | None]:
    """``(read_auth, admin_auth)`` for :func:`status_app` under the reference server's rule.

    No token configured at all: both ``None`` (loopback peers only; the server then
    binds loopback anyway). Otherwise every request needs a key: reads take a client
    token or the admin token, actions the admin token alone, and without an admin
    token no key can act.
    """
    if not auth_tokens and not admin_token:
        return None, None
    read_auth: Authenticator = ClientAuth(auth_tokens) if auth_tokens else _deny
    admin_auth: Authenticator = ClientAuth([admin_token]) if admin_token else _deny
    return read_auth, admin_auth


# -- the app --------------------------------------------------------------------------------


class _Endpoints:
    # The status API's handlers over one pool; status_app() routes to its methods.

    def __init__(self, pool: AccountPool, refresher: ForceRefresher | None,
                 reload_error: Callable[[], str | None] | None,
                 state: StateBackend | None = None) -> None:
        self.pool = pool
        self.refresher = refresher
        self.reload_error = reload_error
        self.state = state

    def known(self, request: Request) -> AccountStatus | Response:
        name: str = request.path_params["name"]
        try:
            return self.pool.status(name)
        except UnknownAccount as exc:
            return _error(404, "not_found_error", str(exc))

    def view(self, status: AccountStatus, **kwargs: Any) -> AccountView:
        try:
            account: Account | None = self.pool.account(status.name)
        except UnknownAccount:  # removed by a reload meanwhile
            account = None
        return account_view(status, self.pool.now(), account=account, **kwargs)

    async def overview(self, request: Request) -> Response:
        statuses = self.pool.statuses()
        return _json(PoolView(
            next_account=self.pool.peek(),
            reload_error=self.reload_error() if self.reload_error is not None else None,
            accounts=[self.view(s) for s in statuses], affinity=dict(self.pool.affinity_counts),
            state=state_view(self.state), **count_states(statuses)))

    async def accounts(self, request: Request) -> Response:
        return _json([self.view(s) for s in self.pool.statuses()])

    async def one(self, request: Request) -> Response:
        status = self.known(request)
        return status if isinstance(status, Response) else _json(self.view(status))

    async def enable(self, request: Request) -> Response:
        return self.act(request, "enable", self.pool.enable)

    async def disable(self, request: Request) -> Response:
        return self.act(request, "disable", self.pool.disable)

    def act(self, request: Request, action: str, fn: Callable[[str], None]) -> Response:
        name: str = request.path_params["name"]
        try:
            fn(name)
            status = self.pool.status(name)
        except UnknownAccount as exc:
            return _error(404, "not_found_error", str(exc))
        _audit(request, action, name)
        return _json(ActionResult(action=action, account=self.view(status)))

    async def refresh(self, request: Request) -> Response:
        status = self.known(request)
        if isinstance(status, Response):
            return status
        if status.kind is not AccountKind.OAUTH:
            return _error(409, "invalid_request_error",
                          f"account {status.name!r} is not an OAuth account: "
                          "an API key has nothing to refresh")
        if self.refresher is None:
            return _error(501, "refresh_unavailable",
                          "ccrotate status: token refresh is unavailable in this server")
        before = self.pool.account(status.name)
        _audit(request, "refresh", status.name)
        try:
            renewed = await self.refresher.refresh(status.name, reason="forced by operator")
        except UnknownAccount as exc:  # removed by a reload while refreshing
            return _error(404, "not_found_error", str(exc))
        except InvalidGrant as exc:
            return _error(409, "invalid_grant", scrub(str(exc), before) or "")
        except RefreshError as exc:
            return _error(502, "refresh_failed", scrub(str(exc), before) or "")
        try:
            status = self.pool.status(status.name)
        except UnknownAccount as exc:
            return _error(404, "not_found_error", str(exc))
        return _json(ActionResult(action="refresh",
                                  account=self.view(status, expires_at=renewed.expires_at)))


def status_app(pool: AccountPool, *, refresher: ForceRefresher | None = None,
               admin_auth: Authenticator | None = None, read_auth: Authenticator | None = None,
               reload_error: Callable[[], str | None] | None = None,
               state: StateBackend | None = None) -> Starlette:
    """The status API as a Starlette app; mount it with :class:`StatusMount` (or ``Mount``).

    Parameters:
        pool: the :class:`AccountPool` to show and act on.
        refresher: forces OAuth refreshes (``refresh(name, *, reason) -> Account``);
            without it the refresh route answers 501.
        admin_auth: ``headers -> bool`` for actions (and reads); ``None``: loopback peers
            only, and for actions never a web browser.
        read_auth: ``headers -> bool`` for reads; ``None``: loopback peers only.
        reload_error: returns the last accounts-file reload error, shown as ``reloadError``.
        state: the pool's state backend, shown as ``state`` (where, shared, degraded).
    """

    # Checked here, not at the first request: a wrong argument is a 500 much later.
    has_methods("status_app", "pool", pool, "statuses", "status", "account", "now")
    if refresher is not None:
        has_methods("status_app", "refresher", refresher, "refresh")
    is_callable("status_app", "admin_auth", admin_auth, optional=True)
    is_callable("status_app", "read_auth", read_auth, optional=True)
    is_callable("status_app", "reload_error", reload_error, optional=True)

    e = _Endpoints(pool, refresher, reload_error, state)
    routes = [
        Route("/", e.overview, methods=["GET"]),
        Route("/accounts", e.accounts, methods=["GET"]),
        Route("/accounts/{name}", e.one, methods=["GET"]),
        Route("/accounts/{name}/refresh", e.refresh, methods=["POST"]),
        Route("/accounts/{name}/enable", e.enable, methods=["POST"]),
        Route("/accounts/{name}/disable", e.disable, methods=["POST"]),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: _http_error, Exception: _server_error}
    app = Starlette(routes=routes, exception_handlers=handlers, middleware=[
        Middleware(_Guard, read_auth=read_auth, admin_auth=admin_auth)])
    # Starlette's trailing-slash redirect builds its Location from the Host header.
    app.router.redirect_slashes = False
    return app


class StatusMount(Mount):
    """A ``Mount`` that also serves its bare path: ``/status`` as well as ``/status/``.

    Starlette's ``Mount("/status", app)`` only matches below ``/status/`` and
    redirects the bare path, which ``curl`` without ``-L`` shows as an empty answer.

    Parameters:
        path: where to mount, e.g. ``"/status"``.
        app: the app, usually from :func:`status_app`.
    """

    def __init__(self, path: str, app: ASGIApp, *, name: str | None = None) -> None:
        super().__init__(path, app=app, name=name)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and route_path(scope) == self.path:
            bare = {**scope, "path": scope["path"] + "/"}
            match, child = super().matches(bare)
            if match is not Match.NONE:
                child["path"] = bare["path"]
            return match, child
        return super().matches(scope)
