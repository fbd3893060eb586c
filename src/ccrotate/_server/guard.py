"""``RequestGuard``: refuse what a web browser can be made to send to a local server.

A server on ``127.0.0.1`` is reachable from every page the user's browser opens. Two
attacks need nothing but that:

* **Cross-site requests.** A page on ``https://evil.example`` POSTs to
  ``http://127.0.0.1:8080/...``. Browsers mark such requests with an ``Origin`` header,
  which a page cannot remove or forge. The guard refuses every request whose ``Origin``
  is neither this server's own nor configured (403), and answers CORS preflights only
  for configured origins.
* **DNS rebinding.** The attacker's own name (``evil.example``) is made to resolve to
  ``127.0.0.1``; the page is then "same-origin" with the server and sends no foreign
  ``Origin``, but its ``Host`` header still says ``evil.example``. The guard admits only
  the names the server answers to (421 otherwise).

Both checks run before the app sees the request, so a refused request reaches no
route, no account and no upstream. The guard holds no per-request state.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import msgspec

from ccrotate._asgi import ASGIApp, Message, Receive, Scope, Send, send_bytes
from ccrotate._server.config import _hosts, _origins

__all__ = ["LOOPBACK_HOSTS", "RequestGuard"]

LOOPBACK_HOSTS: frozenset[str] = frozenset({"localhost", "127.0.0.1", "[::1]"})
"""Host names always admitted: they can only ever reach this machine."""

_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})
_HTTP_SCHEME = {"ws": "http", "wss": "https"}
_PREFLIGHT_METHODS = b"GET, HEAD, POST"
_JSON_HEADERS = ((b"content-type", b"application/json"), (b"cache-control", b"no-store"))


def _bind_host(name: str) -> str:
    # The bind address as a Host header names it: lower case, IPv6 compressed and in
    # brackets ("::1" -> "[::1]"), as browsers serialise it.
    name = name.strip().lower()
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    if ":" in bare:
        try:
            return f"[{ipaddress.IPv6Address(bare).compressed}]"
        except ValueError:
            return name
    return name


def _refusal(type_: str, message: str) -> bytes:
    # Anthropic's error shape; its "error" object holds the "message" that the status
    # API's and OpenAI's shapes use too, so every client shows the reason.
    return msgspec.json.encode({"type": "error", "error": {"type": type_, "message": message}})


_BAD_HOST = _refusal("invalid_request_error",
                     "ccrotate: this server does not answer to that Host name; add it to "
                     "allowed_hosts (CCROTATE_ALLOWED_HOSTS) if it is yours")
_BAD_ORIGIN = _refusal("permission_error",
                       "ccrotate: requests from other web origins are refused; add the "
                       "origin to allowed_origins (CCROTATE_ALLOWED_ORIGINS) to allow it")


class RequestGuard:
    """Refuse requests with a foreign ``Host`` (421) or ``Origin`` (403); answer CORS
    for configured origins only.

    Wrap the outermost app: ``RequestGuard(app, bind="127.0.0.1")`` or
    ``Middleware(RequestGuard, ...)``. ``lifespan`` passes through; websockets get the
    same checks and are closed (1008) when refused.

    Parameters:
        app: the ASGI app to protect.
        allowed_hosts: host names (no port) admitted besides ``localhost``,
            ``127.0.0.1`` and ``[::1]``, e.g. the public name behind a reverse proxy.
            ``"*"`` turns the Host check off.
        allowed_origins: origins (``https://app.example``) whose pages may call the
            server cross-origin: their preflights are answered and their responses
            carry ``Access-Control-Allow-Origin``. Same-origin requests always pass.
        bind: the address the server listens on, admitted as a host too. A wildcard
            (``0.0.0.0``, ``::``) admits every IP-literal ``Host``: the server answers
            on all of the machine's addresses, and DNS rebinding needs a name.
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str] = (),
                 allowed_origins: Iterable[str] = (), bind: str | None = None) -> None:
        self.app = app
        # The settings' own parsers: the same names are valid in code and in config files.
        try:
            hosts = set(_hosts(list(allowed_hosts)))
        except ValueError as exc:
            raise ValueError(f"allowed_hosts: expected {exc}") from None
        try:
            origins = _origins(list(allowed_origins))
        except ValueError as exc:
            raise ValueError(f"allowed_origins: expected {exc}") from None
        self.any_host = "*" in hosts
        self.any_ip = bind is not None and _bind_host(bind) in _WILDCARDS
        if bind is not None and not self.any_ip:
            hosts.add(_bind_host(bind))
        # Bytes, as the headers arrive: the per-request check is one lower() and a lookup.
        self.hosts = frozenset(h.encode("latin-1") for h in hosts | LOOPBACK_HOSTS)
        # Normalised as browsers serialise an origin (lower case, no default port), so a
        # set lookup decides; '*' is refused by the parser.
        self.origins = frozenset(o.encode("latin-1") for o in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        host = b""
        origin: bytes | None = None
        preflight = False
        for name, value in scope["headers"]:
            if name == b"host":
                # Every Host header must pass, so no server or proxy picks an unchecked one.
                # None at all passes: only HTTP/1.0 allows that, and no browser speaks it.
                if not self._host_ok(value):
                    await self._refuse(scope, send, 421, _BAD_HOST)
                    return
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                preflight = True
        if origin is None:  # not a cross-origin browser request
            await self.app(scope, receive, send)
            return
        origin = origin.strip().lower()
        if origin in self.origins:
            if preflight and kind == "http" and scope["method"] == "OPTIONS":
                await self._preflight(scope, send, origin)
                return
            await self.app(scope, receive, _with_cors(send, origin))
            return
        if not self._same_origin(origin, host.strip().lower(), scope.get("scheme", "http")):
            await self._refuse(scope, send, 403, _BAD_ORIGIN)
            return
        await self.app(scope, receive, send)

    def _host_ok(self, value: bytes) -> bool:
        if self.any_host:
            return True
        name = value.strip().lower()
        # Drop the port: "[::1]:8080" -> "[::1]", "localhost:8080" -> "localhost".
        if name.startswith(b"["):
            name = name[:name.find(b"]") + 1]
        elif b":" in name:
            name = name[:name.rfind(b":")]
        if name in self.hosts:
            return True
        if self.any_ip:
            # Only on a miss, so a name-addressed server never pays for the parse.
            try:
                ipaddress.ip_address((name[1:-1] if name.startswith(b"[") else name).decode())
            except ValueError:
                return False
            return True
        return False

    @staticmethod
    def _same_origin(origin: bytes, host: bytes, scheme: str) -> bool:
        # Same origin: the page came from the very scheme://host:port this request was
        # sent to (the Host, already checked). An https page may also call a server that
        # sees http: TLS ended at a proxy in front of it that did not say so.
        if not host:
            return False
        scheme = _HTTP_SCHEME.get(scheme, scheme)  # a websocket's page is http(s)
        if origin == scheme.encode() + b"://" + host:
            return True
        return scheme == "http" and origin == b"https://" + host

    async def _preflight(self, scope: Scope, send: Send, origin: bytes) -> None:
        headers = [(b"access-control-allow-origin", origin),
                   (b"access-control-allow-methods", _PREFLIGHT_METHODS),
                   (b"access-control-max-age", b"600"),
                   (b"vary", b"Origin, Access-Control-Request-Method, "
                             b"Access-Control-Request-Headers")]
        for name, value in scope["headers"]:
            if name == b"access-control-request-headers":
                # The origin is trusted by configuration; the app checks the key itself.
                headers.append((b"access-control-allow-headers", value))
                break
        await send_bytes(send, 204, headers, b"")

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, body: bytes) -> None:
        if scope["type"] == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_bytes(send, status, _JSON_HEADERS, body)


def _with_cors(send: Send, origin: bytes) -> Send:
    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", ())
                       if k != b"access-control-allow-origin"]
            headers.append((b"access-control-allow-origin", origin))
            headers.append((b"vary", b"Origin"))
            message = {**message, "headers": headers}
        await send(message)

    return send_with_cors
