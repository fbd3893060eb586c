"""The rotating proxy: a pure ASGI app, and a middleware that mounts it under a prefix.

Both only route: a path names a dialect's route, and the one
:class:`~ccrotate._proxy.pipeline.Pipeline` serves it. Everything that runs per
request lives in the pipeline's locals, so one instance serves every request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ccrotate._asgi import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    api_path,
    has_encoded_separator,
    is_openai_client,
    send_bytes,
    serve_lifespan,
)
from ccrotate._exceptions import ConfigError
from ccrotate._pool.pool import AccountPool
from ccrotate._proxy.attempts import AttemptLoop, Failed, LoopConfig, Refresher
from ccrotate._proxy.dialects.anthropic import AnthropicRoute
from ccrotate._proxy.dialects.base import Route
from ccrotate._proxy.dialects.openai.route import OpenAIRoute
from ccrotate._proxy.dialects.openai.translator import OpenAITranslator
from ccrotate._proxy.pipeline import Authenticator, Pipeline
from ccrotate._proxy.record import Observer
from ccrotate._state.sync import StateSync
from ccrotate._upstream.base import Timeouts, Upstream
from ccrotate._upstream.httptools_transport import HttptoolsUpstream
from ccrotate._upstream.providers import Providers
from ccrotate._wire import CLAUDE_CODE_IDENTITY

__all__ = ["ProxyConfig", "RotatingProxy", "RotationMiddleware"]

# One path segment that cannot be a dot segment: anything else after /v1/models/
# (``..``, decoded ``%2f``) would let the upstream URL escape the models route.
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}")
_MESSAGES = AnthropicRoute("messages", "POST")
_COUNT_TOKENS = AnthropicRoute("count_tokens", "POST")
_MODELS = AnthropicRoute("models", "GET")
_CHAT = "/v1/chat/completions"

OpenAIOption = OpenAIRoute | OpenAITranslator | bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """How the proxy behaves. Immutable, checked when built; hand it to :class:`RotatingProxy`.

    Parameters:
        upstream_url: the Messages API host (an account's own ``baseUrl`` wins).
        max_attempts: accounts tried per request before giving up (at least 1).
        inject_identity: prepend Claude Code's identity system block for OAuth accounts
            when the request lacks one (the API refuses OAuth tokens without it).
        identity: the identity line to prepend.
        relocate_system: when injecting the identity, move the client's own system
            prompt into the first user turn (a workaround for subscription tokens that
            refuse long third-party system prompts with "out of extra usage").
        max_body_size: largest request body accepted (413 beyond).
        timeouts: upstream connect/read timeouts and pool size.
        backoff_base: pause before the next account after a 5xx/529.
        backoff_cap: the longest such pause.
        request_timeout: seconds a client request may wait, across every attempt, for an
            account to start answering (504 beyond). A started stream is bounded by
            ``timeouts.read`` between chunks instead.
        body_timeout: seconds the client has to send its whole body (408 and a closed
            connection beyond); ``None`` waits forever.
        capacity_wait: seconds a request waits for a slot when every account that can
            serve is at its ``maxConcurrent`` (429 beyond; 0: no waiting).
    """

    upstream_url: str = "https://api.anthropic.com"
    max_attempts: int = 4
    inject_identity: bool = True
    identity: str = CLAUDE_CODE_IDENTITY
    relocate_system: bool = False
    max_body_size: int = 32 * 1024 * 1024
    timeouts: Timeouts = field(default_factory=Timeouts)
    backoff_base: float = 0.05
    backoff_cap: float = 1.0
    request_timeout: float = 600.0
    body_timeout: float | None = 60.0
    capacity_wait: float = 30.0

    def __post_init__(self) -> None:
        if not self.upstream_url.startswith(("http://", "https://")):
            raise ConfigError("ProxyConfig.upstream_url must start with http:// or https://, "
                              f"not {self.upstream_url!r}")
        if self.max_attempts < 1:
            raise ConfigError(f"ProxyConfig.max_attempts must be at least 1, "
                              f"not {self.max_attempts!r}")
        if self.inject_identity and not self.identity.strip():
            raise ConfigError("ProxyConfig.identity must be a non-empty line")
        if self.max_body_size < 1:
            raise ConfigError(f"ProxyConfig.max_body_size must be positive, "
                              f"not {self.max_body_size!r}")
        if self.body_timeout is not None and not 0 < self.body_timeout < math.inf:
            raise ConfigError("ProxyConfig.body_timeout must be a positive number of seconds "
                              f"or None, not {self.body_timeout!r}")
        if not self.request_timeout > 0:
            raise ConfigError(f"ProxyConfig.request_timeout must be positive, "
                              f"not {self.request_timeout!r}")
        if not 0 <= self.capacity_wait < math.inf:
            raise ConfigError("ProxyConfig.capacity_wait must be >= 0 seconds, "
                              f"not {self.capacity_wait!r}")
        if self.backoff_base < 0 or self.backoff_cap < self.backoff_base:
            raise ConfigError("ProxyConfig.backoff_base must be >= 0 and backoff_cap >= "
                              f"backoff_base, not {self.backoff_base!r} and "
                              f"{self.backoff_cap!r}")


def _openai_route(openai: OpenAIOption) -> OpenAIRoute | None:
    if openai is None or openai is False:
        return None
    if openai is True:
        return OpenAIRoute()
    if isinstance(openai, OpenAITranslator):
        return OpenAIRoute(openai)
    if isinstance(openai, OpenAIRoute):
        return openai
    raise ConfigError(f"openai= takes an OpenAIRoute, an OpenAITranslator, True or None, "
                      f"not {type(openai).__name__}")


class RotatingProxy:
    """The proxy as an ASGI app: serves ``/v1/messages``, ``/v1/messages/count_tokens``,
    ``/v1/models`` (and ``/v1/chat/completions`` with the OpenAI dialect) relative to
    where it is mounted.

    Parameters:
        pool: the :class:`AccountPool` to rotate over.
        config: a :class:`ProxyConfig`.
        refresher: a token refresher (:class:`TokenRefresher`) for OAuth accounts.
        authenticate: ``headers -> bool``; requests it refuses get a 401 before any account
            is touched.
        observers: receive a :class:`RequestRecord` per request (metrics, access log).
        openai: the OpenAI dialect: an :class:`OpenAIRoute`, an :class:`OpenAITranslator`
            (wrapped in a route), ``True`` for the default, or ``None`` for none.
        upstream: the transport (:class:`HttptoolsUpstream` by default).
        sync: a :class:`~ccrotate._state.sync.StateSync` over a shared state backend
            (:class:`Rotator` builds one when ``state_url`` is set); its service must run.
        providers: how each kind of account is presented upstream (built from ``config``
            by default).

    Use it as the app of a server, mount it, or wrap an app with
    :class:`RotationMiddleware`. It opens its upstream on lifespan startup (or
    ``async with proxy:``) and closes it on shutdown.
    """

    def __init__(self, pool: AccountPool, *, config: ProxyConfig | None = None,
                 refresher: Refresher | None = None, authenticate: Authenticator | None = None,
                 observers: Sequence[Observer] = (), openai: OpenAIOption = None,
                 upstream: Upstream | None = None, providers: Providers | None = None,
                 sync: StateSync | None = None) -> None:
        self.config = config = config or ProxyConfig()
        self.upstream: Upstream = upstream or HttptoolsUpstream(timeouts=config.timeouts)
        self.openai = _openai_route(openai)
        self.providers = providers or Providers(
            config.upstream_url, relocate_system=config.relocate_system,
            identity=config.identity if config.inject_identity else None)
        self.observers: list[Observer] = list(observers)
        # Only a shared backend is asked on the request path; the memory one costs nothing.
        shared = sync if sync is not None and sync.backend.shared else None
        loop = AttemptLoop(pool, self.upstream, self.providers, refresher=refresher,
                           observers=self.observers, sync=shared,
                           config=LoopConfig(max_attempts=config.max_attempts,
                                             backoff_base=config.backoff_base,
                                             backoff_cap=config.backoff_cap,
                                             capacity_wait=config.capacity_wait))
        self.pipeline = Pipeline(loop, authenticate=authenticate, observers=self.observers,
                                 max_body_size=config.max_body_size,
                                 request_timeout=config.request_timeout,
                                 body_timeout=config.body_timeout)
        self._routes: dict[str, Route] = {
            "/v1/messages": _MESSAGES, "/v1/messages/count_tokens": _COUNT_TOKENS,
            "/v1/models": _MODELS}
        if self.openai is not None:
            self._routes[_CHAT] = self.openai.chat

    @property
    def pool(self) -> AccountPool:
        """The pool this proxy rotates over."""
        return self.pipeline.loop.pool

    @pool.setter
    def pool(self, pool: AccountPool) -> None:
        self.pipeline.loop.pool = pool

    @property
    def refresher(self) -> Refresher | None:
        """The token refresher, if any."""
        return self.pipeline.loop.refresher

    @property
    def authenticate(self) -> Authenticator | None:
        """The client authenticator, if any."""
        return self.pipeline.authenticate

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
            await serve_lifespan(self, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = api_path(scope)
        if path == "/" and scope["method"] in ("GET", "HEAD"):
            # Claude Code probes its base URL with HEAD before the first request.
            await send_bytes(send, 200, [(b"content-type", b"application/json")], b"{}")
            return
        route = self._routes.get(path)
        if (route is None and path.startswith("/v1/models/")
                and _MODEL_ID.fullmatch(path[len("/v1/models/"):])):
            route = _MODELS
        if route is None or has_encoded_separator(scope):
            # An encoded slash would let the upstream path escape the route it matched.
            await _answer(send, Failed.of(404, "not_found_error", f"ccrotate: no route {path}"))
            return
        if scope["method"] != route.method:
            await _answer(send, route.refusal(Failed.of(
                405, "invalid_request_error", f"ccrotate: {path} accepts {route.method} only")))
            return
        if route is _MODELS and self.openai is not None and is_openai_client(scope):
            route = self.openai.models
        await self.pipeline.handle(route, scope, receive, send)


async def _answer(send: Send, failed: Failed) -> None:
    await send_bytes(send, failed.status, failed.headers, failed.body)



class RotationMiddleware:
    """Proxy everything under ``prefix`` through ccrotate; pass all else to ``app``.

    ``Middleware(RotationMiddleware, pool=pool, prefix="/api")`` in Starlette or
    FastAPI, or ``RotationMiddleware(app, pool=pool)`` by hand. Lifespan events
    start and stop the proxy's upstream around the app's own lifespan.
    Websockets and every other path go to ``app`` untouched. The other keywords
    are :class:`RotatingProxy`'s, used when no ``proxy`` is given.

    Parameters:
        app: the ASGI app to wrap.
        pool: the pool to rotate over (or give ``proxy``).
        proxy: a ready :class:`RotatingProxy`.
        prefix: where the proxy answers: a path starting with ``/`` (``"/api"``).
    """

    # Explicit keywords, not **options: mypy cannot match a **kwargs signature against
    # Starlette's Middleware(cls, ...) ParamSpec, so Middleware(RotationMiddleware, ...)
    # would not type-check.
    def __init__(self, app: ASGIApp, *, pool: AccountPool | None = None,
                 proxy: RotatingProxy | None = None, prefix: str = "/api",
                 config: ProxyConfig | None = None, refresher: Refresher | None = None,
                 authenticate: Authenticator | None = None,
                 observers: Sequence[Observer] = (), openai: OpenAIOption = None,
                 upstream: Upstream | None = None) -> None:
        if not prefix.startswith("/") or "//" in prefix:
            raise ConfigError(f"RotationMiddleware prefix must be a path starting with '/', "
                              f"like '/api', not {prefix!r}")
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
                # Straight to the proxy's HTTP handler: one coroutine frame fewer on the
                # hot path, resumed at every await of every request.
                await self.proxy._http({**scope, "root_path": mount}, receive, send)
                return
        await self.app(scope, receive, send)
