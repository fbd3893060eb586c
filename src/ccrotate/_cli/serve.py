"""``ccrotate serve``: run the reference server with uvicorn, guarded against slow clients."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
from typing import Any

from ccrotate._cli.common import command, settings_from
from ccrotate._server.config import Settings

__all__ = ["fd_budget", "run_server", "uvicorn_options"]

log = logging.getLogger("ccrotate")

# Descriptors beyond connections: the listening socket, epoll, logs, the accounts file
# and its lock, DuckDB, uvloop's internals, the odd token-refresh connection.
FD_MARGIN = 64


def uvicorn_options(settings: Settings | None = None) -> dict[str, Any]:
    """uvicorn's options for ccrotate: httptools and uvloop when installed; with
    ``settings``, the request-head deadline and the connection cap, which need httptools.
    """
    opts: dict[str, Any] = {"lifespan": "on", "access_log": False}
    if importlib.util.find_spec("httptools") is not None:
        opts["http"] = "httptools"
        if settings is not None:
            from ccrotate._server.uvicorn_guard import guarded_protocol
            opts["http"] = guarded_protocol(header_timeout=settings.header_timeout,
                                            max_connections=settings.max_connections)
    elif settings is not None:
        from ccrotate._exceptions import ConfigError
        raise ConfigError("the server's request-head deadline and connection cap need "
                          "httptools: pip install 'ccrotate[server]'")
    if importlib.util.find_spec("uvloop") is not None:
        opts["loop"] = "uvloop"
    return opts


def fd_budget(settings: Settings, upstream_pool: int) -> int:
    """File descriptors the server may need at worst: every client connection, the
    refused ones lingering on their 503, the upstream pool, and a margin."""
    from ccrotate._server.uvicorn_guard import MAX_LINGERING
    # An upstream connection serves one client request at a time, so the pool never
    # holds more than there are client connections.
    return (settings.max_connections + MAX_LINGERING
            + min(upstream_pool, settings.max_connections) + FD_MARGIN)


def _raise_fd_limit(needed: int, max_connections: int) -> str | None:
    """Raise the soft RLIMIT_NOFILE to ``needed`` if the hard limit allows; else a warning."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    if hard == resource.RLIM_INFINITY or hard >= needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return None
    return (f"max_connections={max_connections} may need {needed} file descriptors but the "
            f"limit is {hard}: raise LimitNOFILE, or lower CCROTATE_MAX_CONNECTIONS")


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
    # Logged at WARNING level, which the log line already says.
    return (f"listening on {settings.host} with NO client authentication (--allow-remote)")


NO_ACCOUNTS = (
    "no accounts yet: {path} does not exist (nor a Claude CLI login at {cli}). Add one:\n"
    "  ccrotate accounts login NAME               (a Claude subscription, in the browser)\n"
    "  ccrotate accounts add NAME --api-key-stdin (an API key, read from standard input)\n"
    "  ccrotate accounts import-cli NAME          (this machine's Claude CLI login)\n"
    "or try everything against a fake upstream first: ccrotate demo")


def check_accounts(settings: Settings) -> None:
    """Stop with what to do next when there is no accounts file and no CLI login."""
    from ccrotate._accounts.file import discover_accounts_file
    from ccrotate._exceptions import ConfigError
    if not discover_accounts_file(settings.accounts_path, settings.credentials_path).exists():
        raise ConfigError(NO_ACCOUNTS.format(path=settings.accounts_path,
                                             cli=settings.credentials_path))


def _announce(rotator: Any, settings: Settings, port: int) -> None:
    from ccrotate._cli.common import client_urls
    where, urls = client_urls(settings, port)
    source = rotator.accounts_file.path if rotator.accounts_file else "code"
    log.info("ccrotate: %d account(s) from %s; %s", len(rotator.pool), source, where)
    log.info("clients use ANTHROPIC_BASE_URL=%s", " or ".join(f"{u}/api" for u in urls))
    log.info("dashboard: %s/dashboard", urls[0])
    if getattr(rotator, "sdk", None) is not None:
        from ccrotate._sdk.app import sdk_available
        log.info("SDK mode: %s/sdk%s", urls[0], "" if sdk_available()
                 else " (answers 501 until `pip install 'ccrotate[sdk]'`)")


WORKERS_NEED_STATE = (
    "--workers {n} needs shared state: set CCROTATE_STATE_URL (or [state] url) to a Redis "
    "URL. Without it each worker process would keep its own cooldowns, rotation and copy "
    "of the OAuth tokens, send requests to accounts another worker saw rate-limited, and "
    "could refresh the same single-use refresh token twice (logging the account out).")


def check_workers(settings: Settings) -> None:
    """Refuse several worker processes without a shared state store (see the message)."""
    if settings.workers > 1 and settings.state_url is None:
        from ccrotate._exceptions import ConfigError
        raise ConfigError(WORKERS_NEED_STATE.format(n=settings.workers))


def _serve_workers(settings: Settings, sock: Any, options: dict[str, Any]) -> None:
    # uvicorn's own multi-process supervisor; each worker builds its app from the factory,
    # with these settings handed on through the environment.
    import os

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from ccrotate._server.app import WORKER_SETTINGS, settings_json
    os.environ[WORKER_SETTINGS] = settings_json(settings)
    config = uvicorn.Config("ccrotate._server.app:create_app_from_env", factory=True,
                            host=settings.host, port=settings.port, workers=settings.workers,
                            log_level=settings.log_level, **options)
    Multiprocess(config, sockets=[sock]).run()


def run_server(settings: Settings) -> None:
    """Build the app from ``settings`` and serve it until interrupted."""
    try:
        import uvicorn
    except ImportError as exc:
        from ccrotate._exceptions import ConfigError
        raise ConfigError("the server needs uvicorn: pip install 'ccrotate[server]'") from exc
    from ccrotate._cli.common import bind_socket
    from ccrotate._server.app import serve_logging
    from ccrotate._server.rotator import Rotator
    notice = check_bind(settings)
    check_workers(settings)
    check_accounts(settings)
    options = uvicorn_options(settings)
    rotator = Rotator(settings, access_sinks=serve_logging(settings))
    sock = bind_socket(settings.host, settings.port)  # a busy port: one line, exit 1
    if notice:
        log.warning(notice)
    needed = fd_budget(settings, rotator.config.timeouts.pool_size)
    if warning := _raise_fd_limit(needed, settings.max_connections):
        log.warning(warning)
    _announce(rotator, settings, sock.getsockname()[1])
    if settings.workers > 1:
        log.info("ccrotate: %d worker processes sharing state at %s", settings.workers,
                 rotator.state.health().target)
        with sock:
            _serve_workers(settings, sock, options)
        return
    # Everything built so far lives for the whole process: keep the collector from
    # re-scanning it on every full collection (measurably shorter GC pauses under load).
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(rotator.app, host=settings.host, port=settings.port,
                            log_level=settings.log_level, **options)
    with sock:
        uvicorn.Server(config).run(sockets=[sock])


@command("serve")
def _serve(args: argparse.Namespace) -> int:
    run_server(settings_from(args))
    return 0
