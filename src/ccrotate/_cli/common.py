"""What every sub-command shares: the registry, settings from the command line, binding."""

from __future__ import annotations

import argparse
import contextlib
import socket
from collections.abc import Callable
from typing import Any

from ccrotate._exceptions import CCRotateError
from ccrotate._server.config import Settings, load_settings

__all__ = ["COMMANDS", "BindError", "Handler", "bind_socket", "client_urls", "command",
           "settings_from"]

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Handler] = {}


class BindError(CCRotateError):
    """The server cannot listen where it was asked to (a busy port, an unknown address)."""

    exit_status = 1


def command(name: str) -> Callable[[Handler], Handler]:
    """Register a sub-command handler (``accounts list`` is registered as "accounts list")."""
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = fn
        return fn
    return register


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings with this command's options as the highest layer."""
    names = ("host", "port", "upstream_url", "allow_remote", "allowed_hosts", "accounts_path",
             "credentials_path", "workers")
    cli: dict[str, Any] = {n: getattr(args, n, None) for n in names}
    return load_settings(cli=cli, config_path=getattr(args, "config", None),
                         dotenv_path=getattr(args, "env_file", None))


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free one), ready to hand to uvicorn.

    Binding here rather than in uvicorn turns a busy port into one line (BindError)
    instead of a log and exit status 3, and tells the caller the port 0 picked.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = "the port is already in use" if exc.errno in (98, 48, 10048) else exc.strerror
        raise BindError(f"cannot listen on {host}:{port}: {reason} (pick another with "
                        "--port, or 0 for any free port)") from None
    sock.set_inheritable(True)
    return sock


def _outward_address() -> str | None:
    # The address this machine would use towards other hosts. connect() on a UDP socket
    # only picks a route: nothing is sent.
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))
        address: str = s.getsockname()[0]
        return None if address.startswith("127.") or address == "0.0.0.0" else address
    return None


def client_urls(settings: Settings, port: int) -> tuple[str, list[str]]:
    """A sentence saying where the server listens, and the base URLs clients can use.

    A wildcard bind (``0.0.0.0``, ``::``) is no address to connect to: clients on this
    machine use loopback, others this machine's address (the server answers to any IP
    literal when bound to all interfaces; names need ``allowed_hosts``).
    """
    host = settings.host
    if host not in ("0.0.0.0", "::", ""):
        shown = f"[{host}]" if ":" in host else host
        return f"listening on {shown}:{port}", [f"http://{shown}:{port}"]
    urls = [f"http://127.0.0.1:{port}"]
    names = [h for h in settings.allowed_hosts if h != "*"]
    if names:
        urls.append(f"http://{names[0]}:{port}")
    elif outward := _outward_address():
        urls.append(f"http://{outward}:{port}")
    return f"listening on all interfaces ({host or '0.0.0.0'}:{port})", urls
