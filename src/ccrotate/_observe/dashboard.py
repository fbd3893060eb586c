"""The dashboard page: one self-contained HTML page over the status and log APIs.

``GET /dashboard`` serves one self-contained HTML page (inline CSS and JS, no
CDN, no build step) that polls the status API and the access-log analytics
every two seconds. The page itself holds no data, so it is served to anyone;
what it fetches is guarded like the status API, and the page asks for a key
when the server wants one.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    pass

__all__ = ["dashboard_endpoint", "either"]

log = logging.getLogger("ccrotate")

Authenticator = Callable[[Sequence[tuple[bytes, bytes]]], bool]


@functools.cache
def _template() -> str:
    return resources.files("ccrotate").joinpath("dashboard.html").read_text("utf-8")


def dashboard_endpoint(*, status: str = "/status/", analytics: str | None = "/logs/analytics",
                       entries: str | None = "/logs/entries", interval: float = 2.0,
                       window: int = 1800, bucket: int = 30, recent: int = 15) -> Any:
    """A Starlette endpoint serving the dashboard page.

    URLs are absolute paths on this server; the app's ``root_path`` is put in
    front, so the page works behind a path prefix too.

    Parameters:
        status: the status API (``GET`` gives the pool view).
        analytics, entries: the access-log query routes, or ``None`` without a log.
        interval: seconds between refreshes.
        window, bucket: seconds shown in the chart, and per bar.
        recent: requests listed in the recent-traffic table.
    """

    async def dashboard(request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        config = {"status": root + status,
                  "analytics": None if analytics is None else root + analytics,
                  "entries": None if entries is None else root + entries,
                  "interval": int(interval * 1000), "window": window, "bucket": bucket,
                  "recent": recent}
        nonce = secrets.token_urlsafe(16)
        # "<" escaped so no value can close the <script> element it sits in.
        blob = json.dumps(config).replace("<", "\\u003c")
        page = _template().replace("{{CONFIG}}", blob).replace("{{NONCE}}", nonce)
        policy = (f"default-src 'none'; script-src 'nonce-{nonce}'; "
                  f"style-src 'nonce-{nonce}'; connect-src 'self'; img-src 'self' data:; "
                  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        return Response(page, media_type="text/html; charset=utf-8", headers={
            "content-security-policy": policy, "cache-control": "no-store",
            "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"})

    return dashboard


def either(read_auth: Authenticator | None, admin_auth: Authenticator | None,
            ) -> Authenticator | None:
    if read_auth is None and admin_auth is None:
        return None

    def authorize(headers: Sequence[tuple[bytes, bytes]]) -> bool:
        return any(auth is not None and auth(headers) for auth in (read_auth, admin_auth))

    return authorize
