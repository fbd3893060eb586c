"""``python -m ccrotate.testing`` (and ``ccrotate fake-upstream``): the fake upstream on a
port, with behaviours scripted from flags, so any client can be tried against it.

Only the testing package is imported here: ``ccrotate.testing`` stands alone.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ccrotate.testing._behaviours import RateLimited, Reply, SpendCapReached
from ccrotate.testing._fake import FakeUpstream

__all__ = ["build_fake", "build_parser", "main"]


def build_parser(prog: str = "python -m ccrotate.testing") -> argparse.ArgumentParser:
    """The options of the fake upstream command."""
    p = argparse.ArgumentParser(prog=prog, description=(
        "Serve a fake Anthropic API (Messages, count_tokens, models, OAuth) for trying "
        "clients and proxies without spending anything. Nothing reaches Anthropic."))
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: any free one)")
    p.add_argument("--api-key", dest="api_keys", action="append", default=[], metavar="KEY",
                   help="an API key the fake accepts (repeatable; default: one is made up "
                   "and printed)")
    p.add_argument("--accept-any-key", action="store_true",
                   help="accept any credential (Bearer tokens count as API keys)")
    p.add_argument("--latency", type=float, default=0.0, metavar="SECONDS",
                   help="delay before each reply starts")
    p.add_argument("--stream-events", type=int, default=3, metavar="N",
                   help="text deltas per streamed reply (default 3)")
    p.add_argument("--event-gap", type=float, default=0.0, metavar="SECONDS",
                   help="pause between streamed events")
    p.add_argument("--text", default=Reply.text, help="the reply text")
    p.add_argument("--rate-limit-every", type=int, default=0, metavar="N",
                   help="answer every Nth messages request with 429 rate_limit_error")
    p.add_argument("--retry-after", type=float, default=30.0, metavar="SECONDS",
                   help="retry-after of those 429s (default 30)")
    p.add_argument("--spend-cap", dest="spend_capped", action="append", default=[],
                   metavar="KEY", help="this credential always gets the spend-cap 429 "
                   "(repeatable)")
    return p


class _EveryNth:
    """ASGI wrapper: before every Nth ``POST /v1/messages``, script a 429 for it."""

    def __init__(self, fake: FakeUpstream, every: int, retry_after: float) -> None:
        self.fake, self.every, self.retry_after, self.count = fake, every, retry_after, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"].rstrip("/") == "/v1/messages"):
            self.count += 1  # one event loop: no lock needed
            if self.count % self.every == 0:
                self.fake.script_any(RateLimited(retry_after=self.retry_after))
        await self.fake(scope, receive, send)


def build_fake(args: argparse.Namespace) -> tuple[FakeUpstream, Any, list[str]]:
    """The fake, the ASGI app serving it, and the API keys it accepts (empty: any)."""
    if args.rate_limit_every < 0 or args.stream_events < 1:
        raise SystemExit("error: --rate-limit-every must be >= 0 and --stream-events >= 1")
    fake = FakeUpstream(
        default=Reply(text=args.text, text_deltas=args.stream_events, delay=args.latency,
                      event_gap=args.event_gap),
        strict_auth=not args.accept_any_key,
        bearer_kind="api_key" if args.accept_any_key else "oauth")
    keys: list[str] = []
    if not args.accept_any_key:
        keys = [fake.add_api_key(key) for key in args.api_keys] or [fake.add_api_key()]
    for key in args.spend_capped:
        if not args.accept_any_key:
            fake.add_api_key(key)
        fake.set_default(key, SpendCapReached())
    app: Any = fake
    if args.rate_limit_every:
        app = _EveryNth(fake, args.rate_limit_every, args.retry_after)
    return fake, app, keys


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"error: cannot listen on {host}:{port}: {exc.strerror}") from None
    # Listen before the URL is printed: a client that reads it and connects at once
    # would otherwise be refused until uvicorn starts (the backlog holds it meanwhile).
    sock.listen(2048)
    return sock


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m ccrotate.testing",
         out: TextIO | None = None) -> int:
    """Serve the fake upstream until interrupted; prints its URL (and keys) first."""
    import uvicorn

    out = out or sys.stdout
    args = build_parser(prog).parse_args(argv)
    _, app, keys = build_fake(args)
    sock = _bind(args.host, args.port)
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{sock.getsockname()[1]}"
    print(f"fake Anthropic upstream on {url}", file=out)
    print("accepts any API key" if not keys else "API keys: " + " ".join(keys), file=out)
    print(f"try: ANTHROPIC_BASE_URL={url} ANTHROPIC_API_KEY={keys[0] if keys else 'any'} "
          "your-client    (Ctrl-C stops)", file=out, flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    with sock, contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
    return 0
