"""The rotating proxy: a pure ASGI app, and a middleware that mounts it under a prefix.

Per request: authenticate the client, read and check the body, run the
failover loop (``_attempts``), then relay the winner. While the proxy waits on
the upstream or relays it, a sibling task listens for ``http.disconnect`` and
cancels everything the moment the client leaves, so no tokens are spent on an
answer nobody reads. Per-request state lives in locals only: one instance
serves every request concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec

from ccrotate._asgi import (
    ASGIApp,
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    api_path,
    is_openai_client,
    read_body,
    send_bytes,
)
from ccrotate._exceptions import ConfigError, UpstreamError
from ccrotate._pool.pool import AccountPool
from ccrotate._pool.strategy import SelectionContext
from ccrotate._proxy.attempts import Attempt, Failed, LoopConfig, Refresher, Won, run_attempts
from ccrotate._proxy.headers import request_headers, response_headers
from ccrotate._proxy.record import Observer, RequestRecord, apply_usage
from ccrotate._upstream.aiohttp_transport import AiohttpUpstream
from ccrotate._upstream.base import Timeouts, Upstream
from ccrotate._wire import (
    CLAUDE_CODE_IDENTITY,
    error_event,
    needs_identity,
    parse_error,
    peek_request,
    usage_of_body,
)

__all__ = ["ProxyConfig", "RotatingProxy", "RotationMiddleware"]

log = logging.getLogger("ccrotate.proxy")

Authenticator = Callable[[Sequence[tuple[bytes, bytes]]], bool]

# One path segment that cannot be a dot segment: anything else after /v1/models/
# (``..``, decoded ``%2f``) would let the upstream URL escape the models route.
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}")
_ROUTES = {
    "/v1/messages": ("messages", "POST"),
    "/v1/messages/count_tokens": ("count_tokens", "POST"),
    "/v1/models": ("models", "GET"),
    "/v1/chat/completions": ("chat_completions", "POST"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """How the proxy behaves. Immutable; build one and hand it to :class:`RotatingProxy`.

    Parameters:
        upstream_url: the Messages API host.
        max_attempts: accounts tried per request before giving up.
        inject_identity: prepend Claude Code's identity system block for OAuth accounts
            when the request lacks one (the API refuses OAuth tokens without it).
        identity: the identity line to prepend.
        relocate_system: when injecting the identity, move the client's own system
            prompt into the first user turn (a workaround for subscription tokens that
            refuse long third-party system prompts with "out of extra usage").
        max_body_size: largest request body accepted (413 beyond).
        body_timeout: seconds allowed to receive the whole request body (408 beyond);
            ``None`` waits forever.
        timeouts: upstream connect/read timeouts and pool size.
        backoff_base, backoff_cap: pause before the next account after a 5xx/529.
    """

    upstream_url: str = "https://api.anthropic.com"
    max_attempts: int = 4
    inject_identity: bool = True
    identity: str = CLAUDE_CODE_IDENTITY
    relocate_system: bool = False
    max_body_size: int = 32 * 1024 * 1024
    body_timeout: float | None = 60.0
    timeouts: Timeouts = field(default_factory=Timeouts)
    backoff_base: float = 0.05
    backoff_cap: float = 1.0

    def __post_init__(self) -> None:
        if self.body_timeout is not None and not 0 < self.body_timeout < math.inf:
            raise ConfigError("ProxyConfig.body_timeout must be a positive number of seconds "
                              f"or None, not {self.body_timeout!r}")


class RotatingProxy:
    """The proxy as an ASGI app: serves ``/v1/messages``, ``/v1/messages/count_tokens``,
    ``/v1/models`` (and ``/v1/chat/completions`` when an OpenAI translator is given)
    relative to where it is mounted.

    Parameters:
        pool: the :class:`AccountPool` to rotate over.
        config: a :class:`ProxyConfig`.
        refresher: a token refresher (:class:`TokenRefresher`) for OAuth accounts.
        authenticate: ``headers -> bool``; requests it refuses get a 401 before any account
            is touched.
        observers: receive a :class:`RequestRecord` per request (metrics, access log).
        openai: an :class:`OpenAITranslator` to enable the chat-completions route.

    Use it as the app of a server, mount it, or wrap an app with
    :class:`RotationMiddleware`. It starts its connection pool on lifespan
    startup (or ``async with proxy:``) and closes it on shutdown.
    """

    def __init__(self, pool: AccountPool, *, config: ProxyConfig | None = None,
                 refresher: Refresher | None = None, authenticate: Authenticator | None = None,
                 observers: Sequence[Observer] = (), openai: Any = None,
                 upstream: Upstream | None = None) -> None:
        self.pool = pool
        self.config = config = config or ProxyConfig()
        self.upstream: Upstream = upstream or AiohttpUpstream(timeouts=config.timeouts)
        self.refresher = refresher
        self.authenticate = authenticate
        self.observers = list(observers)
        self.openai = openai
        self.loop_config = LoopConfig(base_url=config.upstream_url.rstrip("/"),
                                      max_attempts=config.max_attempts,
                                backoff_base=config.backoff_base,
                                backoff_cap=config.backoff_cap)
        self._identity = config.identity if config.inject_identity else None

    async def __aenter__(self) -> RotatingProxy:
        await self.upstream.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.upstream.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(self, receive, send)

    # -- the request ---------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = api_path(scope)
        if path == "/" and scope["method"] in ("GET", "HEAD"):
            # Claude Code probes its base URL with HEAD before the first request.
            await send_bytes(send, 200, [(b"content-type", b"application/json")], b"{}")
            return
        route = _ROUTES.get(path)
        if (route is None and path.startswith("/v1/models/")
                and _MODEL_ID.fullmatch(path[len("/v1/models/"):])):
            route = ("models", "GET")
        openai = route is not None and route[0] == "chat_completions"
        if route is None or (openai and self.openai is None):
            await _reply(send, Failed.of(404, "not_found_error", f"ccrotate: no route {path}"))
            return
        name, method = route
        if scope["method"] != method:
            await _reply(send, Failed.of(405, "invalid_request_error",
                                         f"ccrotate: {path} accepts {method} only"))
            return
        record = RequestRecord(request_id=secrets.token_hex(8), started_at=time.time(),
                               route=name, method=method)
        t0 = time.perf_counter()
        try:
            if self.openai is not None and openai:
                await self.openai.handle(self, scope, receive, send, record, t0)
            elif self.openai is not None and name == "models" and is_openai_client(scope):
                await self.openai.handle_models(self, scope, receive, send, record, t0)
            else:
                await self._anthropic(scope, receive, send, record, t0)
        finally:
            record.latency = time.perf_counter() - t0
            for observer in self.observers:
                # One broken observer must not silence the others nor fail the request.
                try:
                    observer.on_request(record)
                except Exception:
                    log.exception("observer %r failed on a request record", observer)

    async def prepare(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord,
                      ) -> bytes | None:
        """Authenticate and read the body; on refusal, answer and return ``None``."""
        # Refusals speak the error shape of whoever asked: OpenAI clients (the chat
        # route, and the models route as _http dispatches it) understand only theirs.
        openai = record.route == "chat_completions" or (
            record.route == "models" and self.openai is not None and is_openai_client(scope))
        if self.authenticate is not None and not self.authenticate(scope["headers"]):
            record.status, record.error_type = 401, "authentication_error"
            await _refuse(send, openai, Failed.of(401, "authentication_error",
                                                  "ccrotate: invalid or missing client key"))
            return None
        try:
            return await read_body(scope, receive, self.config.max_body_size,
                                   self.config.body_timeout)
        except BodyTooLarge:
            record.status, record.error_type = 413, "request_too_large"
            await _refuse(send, openai, Failed.of(
                413, "request_too_large",
                f"ccrotate: request body exceeds {self.config.max_body_size} bytes"))
        except BodyTimeout:
            record.status, record.error_type = 408, "timeout_error"
            failed = Failed.of(408, "timeout_error", "ccrotate: request body not received "
                               f"within {self.config.body_timeout:g} s")
            # The rest of the body may still be trickling in: end the connection with it.
            failed.headers.append((b"connection", b"close"))
            await _refuse(send, openai, failed)
        except ClientGone:
            record.status, record.client_disconnected = 499, True
        return None

    async def _anthropic(self, scope: Scope, receive: Receive, send: Send,
                         record: RequestRecord, t0: float) -> None:
        body = await self.prepare(scope, receive, send, record)
        if body is None:
            return
        identity = None
        context = SelectionContext()
        if record.route != "models":
            try:
                peek = peek_request(body)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                record.status, record.error_type = 400, "invalid_request_error"
                await _reply(send, Failed.of(400, "invalid_request_error",
                                             f"ccrotate: request body is not valid JSON ({exc})"))
                return
            record.model, record.stream = peek.model, peek.stream
            if (record.route == "messages" and self._identity is not None
                    and needs_identity(peek.system)):
                identity = self._identity
            user = peek.metadata.user_id if peek.metadata is not None else None
            context = SelectionContext(model=peek.model, session_key=user)
        fwd, beta, pinned = request_headers(scope["headers"])
        query = scope.get("query_string", b"")
        path = api_path(scope) + ("?" + query.decode("latin-1") if query else "")
        attempt = Attempt(scope["method"], path, fwd, beta, body or None, pinned, identity,
                          context, relocate_system=self.config.relocate_system)
        await self.serve(attempt, receive, send, record, t0, relay=self._relay)

    async def serve(self, attempt: Attempt, receive: Receive, send: Send,
                    record: RequestRecord, t0: float, *, relay: Any) -> None:
        """Run the failover loop and ``relay`` the winner while watching for a disconnect."""
        relayed = False
        # A cancel scope and one plain task rather than a task group: the same semantics
        # (the watcher cancels the scope; shielded cleanup inside still completes) for a
        # fraction of the cost, as anyio's task group took ~50 µs of CPU per request
        # (docs/benchmarks.md). The watcher is never awaited: it is parked in receive().
        with anyio.CancelScope() as scope:
            watcher = asyncio.get_running_loop().create_task(
                _watch_disconnect(receive, scope, record))
            try:
                outcome = await run_attempts(attempt, pool=self.pool, upstream=self.upstream,
                                             record=record, config=self.loop_config,
                                             refresher=self.refresher,
                                             observers=self.observers)
                if isinstance(outcome, Failed):
                    record.account = outcome.account
                    record.status = outcome.status
                    await relay(send, outcome, record, t0)
                    relayed = True
                else:
                    record.account = outcome.account.name
                    try:
                        await relay(send, outcome, record, t0)
                        relayed = True
                    finally:
                        await outcome.response.aclose()
                        self.pool.release(outcome.account.name)
            except OSError:
                # ASGI spec 2.4 servers raise on send() once the client is gone.
                record.client_disconnected = True
            finally:
                watcher.cancel()
        failed = watcher.exception() if watcher.done() and not watcher.cancelled() else None
        if failed is not None:
            raise failed  # receive() itself failed, as a task group would have raised it
        if relayed:
            # Servers answer receive() with http.disconnect once the response is complete,
            # and the watcher may read that before it is cancelled: not a client leaving.
            record.client_disconnected = False
        if record.client_disconnected:
            record.status = 499

    async def _relay(self, send: Send, outcome: Won | Failed, record: RequestRecord,
                     t0: float) -> None:
        if isinstance(outcome, Failed):
            record.error_type = parse_error(outcome.body)[0]
            await _reply(send, outcome)
            return
        resp = outcome.response
        headers = response_headers(resp.raw_headers)
        headers.append((b"x-ccrotate-account", outcome.account.name.encode()))
        record.status = resp.status
        if not outcome.streaming:
            body = outcome.head[0]
            if record.route == "messages" and resp.content_encoding is None:
                apply_usage(record, usage_of_body(body))
            record.ttfb = time.perf_counter() - t0
            await send_bytes(send, resp.status, headers, body)
            return
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        record.ttfb = time.perf_counter() - t0
        scanner = outcome.scanner
        for chunk in outcome.head:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        tail = b""
        try:
            async for chunk in resp.chunks():
                if scanner is not None:
                    scanner.feed(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            # Only the upstream dying mid-stream: an OSError from send() is the client
            # leaving (ASGI 2.4) and must reach serve() untouched, not become an api_error.
            record.error_type = "api_error"
            if scanner is None:
                # Still-encoded bytes (the upstream ignored accept-encoding: identity): a
                # plain-text error event would corrupt them. Abort instead, so the server
                # drops the connection and the client sees a truncated body.
                raise
            tail = error_event("api_error", f"ccrotate: upstream stream failed: {exc}")
        else:
            if scanner is not None and not scanner.finished and scanner.error is None:
                record.error_type = "api_error"
                tail = error_event("api_error", "ccrotate: upstream stream ended early")
        if scanner is not None:
            if scanner.error is not None:
                record.error_type = scanner.error[0]
            apply_usage(record, scanner.usage)
        await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _reply(send: Send, failed: Failed) -> None:
    await send_bytes(send, failed.status, failed.client_headers(), failed.body)


async def _refuse(send: Send, openai: bool, failed: Failed) -> None:
    # A refusal before any account is involved, in Anthropic's shape or OpenAI's
    # ({"error": {"message", "type", "param", "code"}}).
    if openai:
        from ccrotate._proxy.dialects.openai.errors import anthropic_error_to_openai
        failed.status, failed.body = anthropic_error_to_openai(failed.status, failed.body)
    await _reply(send, failed)


async def _watch_disconnect(receive: Receive, scope: anyio.CancelScope,
                            record: RequestRecord) -> None:
    # The body has been read in full, so this task is the only consumer of receive().
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                record.client_disconnected = True
                scope.cancel()
                return
    except Exception:
        scope.cancel()  # stop the work; serve() re-raises this once the scope is left
        raise


async def _lifespan(proxy: Any, receive: Receive, send: Send) -> None:
    started = False
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await proxy.__aenter__()
                started = True
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if started:
                await proxy.__aexit__(None, None, None)
            await send({"type": "lifespan.shutdown.complete"})
            return


class RotationMiddleware:
    """Proxy everything under ``prefix`` through ccrotate; pass all else to ``app``.

    ``Middleware(RotationMiddleware, pool=pool, prefix="/api")`` in Starlette or
    FastAPI, or ``RotationMiddleware(app, pool=pool)`` by hand. Lifespan events
    start and stop the proxy's connection pool around the app's own lifespan.
    Websockets and every other path go to ``app`` untouched. The other keywords
    are :class:`RotatingProxy`'s, used when no ``proxy`` is given.
    """

    # Explicit keywords, not **options: mypy cannot match a **kwargs signature against
    # Starlette's Middleware(cls, ...) ParamSpec, so Middleware(RotationMiddleware, ...)
    # would not type-check.
    def __init__(self, app: ASGIApp, *, pool: AccountPool | None = None,
                 proxy: RotatingProxy | None = None, prefix: str = "/api",
                 config: ProxyConfig | None = None, refresher: Refresher | None = None,
                 authenticate: Authenticator | None = None,
                 observers: Sequence[Observer] = (), openai: Any = None,
                 upstream: Upstream | None = None) -> None:
        if proxy is None:
            if pool is None:
                raise TypeError("RotationMiddleware needs pool= or proxy=")
            proxy = RotatingProxy(pool, config=config, refresher=refresher,
                                  authenticate=authenticate, observers=observers,
                                  openai=openai, upstream=upstream)
        self.app = app
        self.proxy = proxy
        self.prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            proxy = self.proxy

            async def send_after_close(message: Any) -> None:
                # Servers tear the loop down right after shutdown.complete (cancelling
                # this task), so the pool must be closed before it is reported.
                if message["type"] == "lifespan.shutdown.complete":
                    await proxy.__aexit__(None, None, None)
                await send(message)

            async with proxy:
                await self.app(scope, receive, send_after_close)
            return
        if scope["type"] == "http":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            mount = root + self.prefix
            if path == mount or path.startswith(mount + "/"):
                await self.proxy({**scope, "root_path": mount}, receive, send)
                return
        await self.app(scope, receive, send)
