"""The reference server's app: what ``ccrotate serve`` runs, built by a :class:`Rotator`."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

import msgspec

from ccrotate._accounts.file import AccountsFile
from ccrotate._asgi import ASGIApp
from ccrotate._observe.accesslog import LogSink, StreamSink
from ccrotate._pool.pool import AccountPool
from ccrotate._server.config import Settings
from ccrotate._server.rotator import Rotator

__all__ = ["WORKER_SETTINGS", "create_app", "create_app_from_env", "is_loopback",
           "serve_logging", "settings_json"]

WORKER_SETTINGS = "CCROTATE_WORKER_SETTINGS"
"""The environment variable through which ``serve --workers N`` hands its settings on."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(settings: Settings | None = None, *, pool: AccountPool | None = None,
               accounts_file: AccountsFile | None = None,
               access_sinks: Sequence[LogSink] | None = None) -> ASGIApp:
    """The reference server as an ASGI app (``Rotator(settings).app``).

    The proxy answers at ``/api``, with ``/health``, ``/status``, ``/logs``,
    ``/dashboard`` and ``/metrics`` beside it; the app's lifespan starts and stops
    the rotator, which stays reachable as ``app.rotator``.
    """
    return Rotator(settings, pool=pool, accounts_file=accounts_file,
                   access_sinks=access_sinks).app


def serve_logging(settings: Settings) -> list[LogSink]:
    """Configure logging as ``ccrotate serve`` does, and return its access-log sinks.

    Lines go to stderr as ``LEVEL message``. The access lines are written straight in
    that shape by a :class:`StreamSink` (a fifth of the cost of one log record per
    line), or not at all when the level is above ``info``.
    """
    level = logging.getLevelName(settings.log_level.upper())
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    if not isinstance(level, int) or level > logging.INFO:
        return []
    return [StreamSink(prefix=f"{logging.getLevelName(logging.INFO)} ")]


def settings_json(settings: Settings) -> str:
    """``settings`` as JSON that :func:`create_app_from_env` reads back (secrets included:
    it only ever travels to this server's own worker processes)."""
    from ccrotate._server.config import FIELDS

    def plain(value: object) -> object:
        if isinstance(value, PurePath):
            return str(value)
        if isinstance(value, tuple):
            return list(value)
        return dict(value) if isinstance(value, Mapping) else value

    return msgspec.json.encode({s.name: plain(getattr(settings, s.name))
                                for s in FIELDS}).decode()


def create_app_from_env() -> ASGIApp:
    """The app of one ``ccrotate serve --workers N`` process: a factory uvicorn imports.

    Reads the settings the parent put in ``CCROTATE_WORKER_SETTINGS``, else loads them
    from the environment and config file as ``ccrotate serve`` does.
    """
    from ccrotate._server.config import load_settings
    raw = os.environ.get(WORKER_SETTINGS)
    values: dict[str, Any] = msgspec.json.decode(raw) if raw else {}
    settings = Settings(**values) if values else load_settings()
    return create_app(settings, access_sinks=serve_logging(settings))
