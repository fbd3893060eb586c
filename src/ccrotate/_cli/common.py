"""What every sub-command shares: the registry and settings from the command line."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ccrotate._server.config import Settings, load_settings

__all__ = ["COMMANDS", "Handler", "command", "settings_from"]

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    """Register a sub-command handler (``accounts list`` is registered as "accounts list")."""
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = fn
        return fn
    return register


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings with this command's options as the highest layer."""
    names = ("host", "port", "upstream_url", "allow_remote", "allowed_hosts", "accounts_path",
             "credentials_path")
    cli: dict[str, Any] = {n: getattr(args, n, None) for n in names}
    return load_settings(cli=cli, config_path=getattr(args, "config", None))
