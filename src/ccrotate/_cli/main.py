"""The ``ccrotate`` command: ``serve``, ``demo``, ``accounts …`` and ``auth status``.

Errors a user can fix (bad settings, a malformed accounts file) end the command
with one line naming the problem and exit status 2; no traceback, no token. A port
the server cannot listen on ends it with status 1. A mistake on the command line
prints the usage of the sub-command it was made in.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ccrotate._cli.common import COMMANDS
from ccrotate._exceptions import CCRotateError

__all__ = ["main"]

log = logging.getLogger("ccrotate")

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help="TOML config file "
                   "(default: ~/.config/ccrotate/config.toml if present)")
    p.add_argument("--accounts", metavar="PATH", dest="accounts_path",
                   help="accounts file (default: ~/.claude/accounts.json)")
    p.add_argument("--env-file", metavar="PATH", dest="env_file",
                   help="read settings from this .env file (default: $CCROTATE_ENV_FILE; "
                   "a ./.env is never read unless named)")


def _serve_options(serve: argparse.ArgumentParser) -> None:
    _common(serve)
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080)")
    serve.add_argument("--upstream-url", dest="upstream_url", metavar="URL",
                       help="Anthropic API base URL (default https://api.anthropic.com)")
    serve.add_argument("--allow-remote", dest="allow_remote", action="store_true", default=None,
                       help="allow a non-loopback bind without a client auth token")
    serve.add_argument("--allowed-hosts", dest="allowed_hosts", metavar="NAMES",
                       help="comma-separated host names the server answers to besides "
                       "localhost and the bound address (e.g. its name behind a reverse proxy)")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="server processes (default 1); more need a shared state store "
                       "(CCROTATE_STATE_URL)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(prog="ccrotate", description=(
        "Share a pool of Claude accounts behind one Anthropic-compatible endpoint."))
    from ccrotate._version import __version__
    parser.add_argument("--version", action="version", version=f"ccrotate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _serve_options(sub.add_parser("serve", help="run the proxy server"))

    demo = sub.add_parser("demo", help="run the proxy in front of a fake upstream with three "
                          "demo accounts, show rotation and failover, then keep serving")
    demo.add_argument("--port", type=int, default=0,
                      help="proxy port (default: 8080 if free, else any free one)")
    demo.add_argument("--exit", dest="exit_after", action="store_true",
                      help="exit after the guided tour instead of serving")

    # Only listed here: main() hands its arguments to ccrotate.testing's own parser.
    sub.add_parser("fake-upstream", add_help=False, help="serve a fake Anthropic API on a "
                   "port, behaviours scripted from flags (see: ccrotate fake-upstream --help)")

    accounts = sub.add_parser("accounts", help="list and add accounts")
    acc_sub = accounts.add_subparsers(dest="accounts_command", required=True, metavar="ACTION")
    p = acc_sub.add_parser("list", help="names, kinds, states and expiry (never tokens)")
    _common(p)
    p = acc_sub.add_parser("add", help="add an API-key account (key read from stdin)")
    _common(p)
    p.add_argument("name")
    p.add_argument("--api-key-stdin", action="store_true", required=True,
                   help="read the API key from standard input")
    p.add_argument("--force", action="store_true",
                   help="replace the key of an existing API-key account of that name")
    p = acc_sub.add_parser("import-cli", help="import the Claude CLI's login as an account")
    _common(p)
    p.add_argument("name")
    p.add_argument("--credentials", metavar="PATH", dest="credentials_path",
                   help="the CLI's credentials file (default ~/.claude/.credentials.json)")
    p = acc_sub.add_parser("login", help="log in a Claude subscription account (OAuth)")
    _common(p)
    p.add_argument("name")
    p = acc_sub.add_parser("remove", help="remove an account")
    _common(p)
    p.add_argument("name")

    auth = sub.add_parser("auth", help="token status")
    auth_sub = auth.add_subparsers(dest="auth_command", required=True, metavar="ACTION")
    p = auth_sub.add_parser("status", help="per account: token valid?, expiry")
    _common(p)
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    # argparse reports an unknown option with the top-level usage; the sub-command's
    # (innermost parser's) usage is the one that shows what was possible.
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        innermost = parser
        for attr in ("command", "accounts_command", "auth_command"):
            action = next((a for a in innermost._actions
                           if isinstance(a, argparse._SubParsersAction)), None)
            name = getattr(args, attr, None)
            if action is None or name is None or name not in action.choices:
                continue
            innermost = action.choices[name]
        innermost.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ccrotate`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fake-upstream"]:
        from ccrotate.testing._cli import main as fake_upstream
        return fake_upstream(argv[1:], prog="ccrotate fake-upstream")
    args = _parse(argv)
    key = args.command
    for attr in ("accounts_command", "auth_command"):
        if getattr(args, attr, None):
            key += " " + getattr(args, attr)
    _load_commands()
    handler = COMMANDS.get(key)
    if handler is None:
        print(f"ccrotate: {key} is not available in this build", file=sys.stderr)
        return 2
    try:
        return handler(args)
    except CCRotateError as exc:
        print(f"ccrotate: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_status", 2))
    except KeyboardInterrupt:
        return 130


def _load_commands() -> None:
    # Commands live beside what they drive; importing them registers them.
    from ccrotate._cli import accounts, demo, serve  # noqa: F401


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
