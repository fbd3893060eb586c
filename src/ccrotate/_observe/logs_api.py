"""The access-log query API: ``GET /logs/entries`` and ``GET /logs/analytics``.

Both read a :class:`~ccrotate._observe.logstore.LogStore` (the memory ring, DuckDB or
PostgreSQL) and take the same filters::

    since, until   ISO 8601 ("2026-11-20T10:00:00Z"; no zone means UTC), epoch
                   seconds, or an age such as 30s, 15m, 2h, 7d (that long ago)
    account        an account name; repeat for several
    model          a model id; repeat for several
    status         a status code (429) or class (5xx); repeat for several

``/entries`` pages newest first with ``limit`` (1..1000, default 100) and either
the ``cursor`` of the previous page or an ``offset``. ``/analytics`` summarises a
window (default: the last hour) in time buckets of ``bucket`` seconds. A bad
value gets a 400 naming the parameter; a store whose database is away, a 503.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ccrotate._asgi import ASGIApp, Receive, Scope, Send, send_bytes
from ccrotate._checks import has_methods, is_callable
from ccrotate._exceptions import ConfigError
from ccrotate._observe.entries import LogFilter
from ccrotate._observe.logstore import LogStore, decode_cursor

__all__ = ["BadParameter", "ReadGuard", "logs_app", "logs_routes", "parse_filter"]

Authenticator = Callable[[Sequence[tuple[bytes, bytes]]], bool]

_ENCODER = msgspec.json.Encoder()
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_STATUS_CLASS = re.compile(r"([1-5])xx")
_FILTERS = ("since", "until", "account", "model", "status")
_NICE_BUCKETS = (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
                 43200, 86400, 7 * 86400)
MAX_LIMIT = 1000
MAX_BUCKETS = 10_000
DEFAULT_WINDOW = 3600.0


class BadParameter(ValueError):
    """A query parameter with a value the API cannot use."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


def parse_time(value: str, now: float, parameter: str) -> float:
    """ISO 8601, epoch seconds, or an age ("15m") as epoch seconds."""
    text = value.strip()
    if m := _AGE.fullmatch(text.lower()):
        return now - float(m[1]) * _AGE_UNITS[m[2]]
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number) or number < 0:
            raise BadParameter(parameter, "expected a time, got a negative or odd number")
        if number > 1e11:
            raise BadParameter(parameter, "looks like milliseconds: give epoch seconds")
        return number
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadParameter(parameter, "expected ISO 8601 (2026-11-20T10:00:00Z), epoch "
                           "seconds, or an age such as 15m, 2h, 7d") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _status(value: str) -> tuple[int, int]:
    text = value.strip().lower()
    if m := _STATUS_CLASS.fullmatch(text):
        base = int(m[1]) * 100
        return base, base + 99
    if text.isdigit() and 100 <= int(text) <= 599:
        return int(text), int(text)
    raise BadParameter("status", "expected a status code (429) or class (5xx)")


def _int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise BadParameter(name, f"expected an integer from {lo} to {hi}")
    return int(text)


def _check_names(request: Request, allowed: Sequence[str]) -> None:
    for name in request.query_params:
        # "_" names are cache-busters and the like; anything else unknown is a typo.
        if name not in allowed and not name.startswith("_"):
            raise BadParameter(name, "unknown parameter; expected one of " + ", ".join(allowed))


def parse_filter(request: Request, now: float) -> LogFilter:
    """The :class:`LogFilter` of a request's query string; raises :class:`BadParameter`."""
    params = request.query_params
    since = until = None
    if (raw := params.get("since")) is not None:
        since = parse_time(raw, now, "since")
    if (raw := params.get("until")) is not None:
        until = parse_time(raw, now, "until")
    if since is not None and until is not None and until <= since:
        raise BadParameter("until", "must be later than since")
    values: dict[str, tuple[str, ...]] = {}
    for name in ("account", "model"):
        given = tuple(v.strip() for v in params.getlist(name))
        if any(not v for v in given):
            raise BadParameter(name, "must not be empty")
        values[name] = given
    statuses = tuple(_status(v) for v in params.getlist("status"))
    return LogFilter(since=since, until=until, accounts=values["account"],
                     models=values["model"], statuses=statuses)


def _json(value: Any, status: int = 200) -> Response:
    return Response(_ENCODER.encode(value), status_code=status, media_type="application/json",
                    headers={"cache-control": "no-store"})


def _bad(exc: BadParameter) -> Response:
    return _json({"type": "error", "error": {"type": "invalid_request_error",
                                             "message": f"ccrotate logs: {exc}",
                                             "parameter": exc.parameter}}, 400)


async def _answer(result: Awaitable[Any]) -> Response:
    try:
        return _json(await result)
    except ConnectionError:  # a store whose database is away; the store logs which one
        return _json({"type": "error", "error": {
            "type": "api_error",
            "message": "ccrotate logs: the access log database is unavailable; try again"}},
            503)


async def _page(store: LogStore, where: LogFilter, limit: int, cursor: str | None,
                offset: int) -> dict[str, Any]:
    page = await store.entries(where, limit=limit, cursor=cursor, offset=offset)
    return {"entries": page.entries, "next_cursor": page.next_cursor, "limit": limit}


def _auto_bucket(span: float) -> float:
    for seconds in _NICE_BUCKETS:
        if span / seconds <= 120:
            return float(seconds)
    return float(_NICE_BUCKETS[-1])


def logs_routes(store: LogStore, *, prefix: str = "/logs",
                clock: Callable[[], float] = time.time) -> list[Route]:
    """The two query routes under ``prefix``, to add to a Starlette app's routes.

    Parameters:
        store: the :class:`LogStore` to read (``AccessLog.store``).
        prefix: where the routes live.
        clock: epoch-seconds clock for ages and the default window.
    """
    has_methods("logs_routes", "store", store, "entries", "analytics")
    if not isinstance(prefix, str) or (prefix and (not prefix.startswith("/")
                                                   or prefix.endswith("/"))):
        raise ConfigError(f"logs_routes.prefix: must be empty or start with / and not end "
                          f"with one (got {prefix!r})")
    is_callable("logs_routes", "clock", clock)

    async def entries(request: Request) -> Response:
        try:
            _check_names(request, (*_FILTERS, "limit", "cursor", "offset"))
            where = parse_filter(request, clock())
            limit = _int(request, "limit", 100, 1, MAX_LIMIT)
            offset = _int(request, "offset", 0, 0, 10_000_000)
            cursor = request.query_params.get("cursor")
            if cursor is not None:
                if "offset" in request.query_params:
                    raise BadParameter("offset", "give cursor or offset, not both")
                try:
                    decode_cursor(cursor)
                except ValueError as exc:
                    raise BadParameter("cursor", "not a cursor from this API") from exc
        except BadParameter as exc:
            return _bad(exc)
        return await _answer(_page(store, where, limit, cursor, offset))

    async def analytics(request: Request) -> Response:
        now = clock()
        try:
            _check_names(request, (*_FILTERS, "bucket"))
            where = parse_filter(request, now)
            until = where.until if where.until is not None else now
            since = where.since if where.since is not None else until - DEFAULT_WINDOW
            if since >= until:
                raise BadParameter("since", "must be earlier than until")
            span = until - since
            bucket = float(_int(request, "bucket", 0, 1, 366 * 86400)) or _auto_bucket(span)
            if span / bucket > MAX_BUCKETS:
                raise BadParameter("bucket", f"too small for this window: at most "
                                   f"{MAX_BUCKETS} buckets")
        except BadParameter as exc:
            return _bad(exc)
        window = LogFilter(since=since, until=until, accounts=where.accounts,
                           models=where.models, statuses=where.statuses)
        return await _answer(store.analytics(window, bucket=bucket))

    return [Route(f"{prefix}/entries", entries, methods=["GET"]),
            Route(f"{prefix}/analytics", analytics, methods=["GET"])]


def logs_app(store: LogStore, *, clock: Callable[[], float] = time.time) -> Starlette:
    """The query API as an app of its own (``/entries``, ``/analytics``) to mount anywhere."""
    app = Starlette(routes=logs_routes(store, prefix="", clock=clock))
    # Starlette's trailing-slash redirect builds its Location from the Host header.
    app.router.redirect_slashes = False
    return app


class ReadGuard:
    """Admit a request to a read-only ASGI app by key, else refuse it (pure ASGI).

    The reference server's rule, shared with the status API: ``authorize`` is
    ``headers -> bool``; with ``None``, only loopback peers get in.

    Parameters:
        app: the app to guard.
        authorize: checks the presented key, or ``None`` for loopback only.
    """

    def __init__(self, app: ASGIApp, *, authorize: Authenticator | None) -> None:
        self.app = app
        self.authorize = authorize

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._admits(scope):
            await self.app(scope, receive, send)
            return
        if self.authorize is None:
            status, type_, message = 403, "permission_error", (
                "open to loopback clients only; configure a token to allow remote access")
        else:
            status, type_, message = 401, "authentication_error", (
                "a valid key is required (x-api-key or Authorization: Bearer)")
        body = _ENCODER.encode({"type": "error", "error": {"type": type_,
                                                          "message": f"ccrotate: {message}"}})
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="ccrotate"'))
        await send_bytes(send, status, headers, body)

    def _admits(self, scope: Scope) -> bool:
        if self.authorize is None:
            from ccrotate._observe.status import is_loopback_peer
            return is_loopback_peer(scope)
        return self.authorize(scope["headers"])
