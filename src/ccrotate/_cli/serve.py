"""``ccrotate serve``: run the reference server with uvicorn."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
from typing import Any

from ccrotate._cli.common import command, settings_from
from ccrotate._server.config import Settings

__all__ = ["run_server", "uvicorn_options"]

log = logging.getLogger("ccrotate")


def uvicorn_options() -> dict[str, Any]:
    """The fastest uvicorn set-up available here (httptools, uvloop), none required."""
    opts: dict[str, Any] = {"lifespan": "on", "access_log": False}
    if importlib.util.find_spec("httptools") is not None:
        opts["http"] = "httptools"
    if importlib.util.find_spec("uvloop") is not None:
        opts["loop"] = "uvloop"
    return opts


def check_bind(settings: Settings) -> str | None:
    """Refuse a public bind without client auth unless the user opted in; else a notice."""
    from ccrotate._server.app import is_loopback
    if settings.auth_tokens:
        return None
    if is_loopback(settings.host):
        return ("no client auth token is configured (CCROTATE_AUTH_TOKEN): "
                f"listening on loopback {settings.host} only")
    if not settings.allow_remote:
        from ccrotate._exceptions import ConfigError
        raise ConfigError(
            f"refusing to listen on {settings.host} without a client auth token: set "
            "CCROTATE_AUTH_TOKEN, or pass --allow-remote to expose the pool to anyone "
            "who can reach this address")
    return (f"WARNING: listening on {settings.host} with NO client authentication "
            "(--allow-remote)")


def run_server(settings: Settings) -> None:
    """Build the app from ``settings`` and serve it until interrupted."""
    try:
        import uvicorn
    except ImportError as exc:
        from ccrotate._exceptions import ConfigError
        raise ConfigError("the server needs uvicorn: pip install 'ccrotate[server]'") from exc
    from ccrotate._server.app import create_app
    notice = check_bind(settings)
    app = create_app(settings)
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(message)s")
    if notice:
        log.warning(notice)
    pool = app.state.ccrotate.pool
    log.info("ccrotate: %d account(s) from %s; clients use ANTHROPIC_BASE_URL=http://%s:%d/api",
             len(pool), app.state.ccrotate.accounts_file or "code", settings.host, settings.port)
    # Everything built so far lives for the whole process: keep the collector from
    # re-scanning it on every full collection (measurably shorter GC pauses under load).
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                **uvicorn_options())


@command("serve")
def _serve(args: argparse.Namespace) -> int:
    run_server(settings_from(args))
    return 0
