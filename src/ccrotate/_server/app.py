"""The reference server's app: what ``ccrotate serve`` runs, built by a :class:`Rotator`."""

from __future__ import annotations

import ipaddress

from ccrotate._accounts.file import AccountsFile
from ccrotate._asgi import ASGIApp
from ccrotate._pool.pool import AccountPool
from ccrotate._server.config import Settings
from ccrotate._server.rotator import Rotator

__all__ = ["create_app", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(settings: Settings | None = None, *, pool: AccountPool | None = None,
               accounts_file: AccountsFile | None = None) -> ASGIApp:
    """The reference server as an ASGI app (``Rotator(settings).app``).

    The proxy answers at ``/api``, with ``/health``, ``/status``, ``/logs``,
    ``/dashboard`` and ``/metrics`` beside it; the app's lifespan starts and stops
    the rotator, which stays reachable as ``app.rotator``.
    """
    return Rotator(settings, pool=pool, accounts_file=accounts_file).app
