"""``ccrotate demo``: the real server in front of the fake upstream, with a guided tour.

Nothing here talks to Anthropic: three demo accounts live in a temporary
accounts file, and the upstream is :class:`ccrotate.testing.FakeUpstream` on a
loopback port. The tour sends real HTTP requests through the proxy and prints
what the pool does; then the server keeps running for the user's own clients.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ccrotate._cli.common import BindError, bind_socket, command

if TYPE_CHECKING:
    import httpx

    from ccrotate._server.config import Settings

__all__ = ["run_demo"]

_MODEL = "claude-sonnet-4-6"


def _write_accounts(folder: Path, fake: Any) -> Path:
    now_ms = int(time.time() * 1000)
    accounts: dict[str, Any] = {}
    for name in ("alice", "bob"):
        tokens = fake.oauth.issue()
        accounts[name] = {"accessToken": tokens.access_token,
                          "refreshToken": tokens.refresh_token,
                          "expiresAt": now_ms + 8 * 3600 * 1000, "note": "demo account"}
    accounts["team-key"] = {"apiKey": fake.add_api_key()}
    path = folder / "accounts.json"
    path.write_text(json.dumps({"version": 1, "accounts": accounts}, indent=2))
    path.chmod(0o600)
    return path


def _ask(client: httpx.Client, text: str, **headers: str) -> httpx.Response:
    return client.post("/api/v1/messages", headers={"x-api-key": "demo", **headers}, json={
        "model": _MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}]})


def _tour(client: httpx.Client, fake: Any, pool: Any, out: TextIO) -> None:
    from ccrotate.testing import RateLimited, Reply

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    say("1. Rotation: three requests, three accounts")
    for i in range(3):
        r = _ask(client, f"hello #{i + 1}")
        say(f"   request {i + 1} -> {r.status_code}, served by {r.headers['x-ccrotate-account']}")

    say("\n2. Failover: the upstream answers 429 for the next account")
    nxt = pool.peek()
    fake.script(pool.account(nxt).credential.reveal(), RateLimited(retry_after=90, reset_after=90))
    r = _ask(client, "are you there?")
    st = pool.status(nxt)
    wait = (st.cooldown_until or time.time()) - time.time()
    say(f"   {nxt} got a 429 and now rests {wait:.0f}s ({st.state.value}); the client saw "
        f"{r.status_code} from {r.headers['x-ccrotate-account']} and never knew")

    say("\n3. Streaming relays each event as it arrives (no buffering)")
    fake.script_any(Reply(text="Streaming through ccrotate works.", text_deltas=5,
                          event_gap=0.05))
    t0 = time.perf_counter()
    with client.stream("POST", "/api/v1/messages", headers={"x-api-key": "demo"}, json={
            "model": _MODEL, "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "stream please"}]}) as s:
        events = [line[7:] for line in s.iter_lines() if line.startswith("event: ")]
    say(f"   {len(events)} events in {time.perf_counter() - t0:.2f}s: "
        f"{', '.join(dict.fromkeys(events))}")

    say("\n4. Pinning with X-Account-Name")
    r = _ask(client, "pinned", **{"x-account-name": "team-key"})
    say(f"   X-Account-Name: team-key -> served by {r.headers['x-ccrotate-account']}")

    say("\n5. The pool now")
    for st in pool.statuses():
        extra = ""
        if st.cooldown_until:
            extra = f", back in {st.cooldown_until - time.time():.0f}s"
        say(f"   {st.name:9} {st.kind.value:8} {st.state.value:13} requests={st.requests}"
            f" credential={st.credential_hint}{extra}")


DEFAULT_PORT = 8080


def _bind(port: int) -> socket.socket:
    # 0: the README's 8080 when free, else any free port; a port asked for, exactly that
    # (BindError, one line and exit status 1, when it is busy).
    if port == 0:
        with contextlib.suppress(BindError):
            return bind_socket("127.0.0.1", DEFAULT_PORT)
    return bind_socket("127.0.0.1", port)


@contextlib.contextmanager
def _serve_on(app: Any, sock: socket.socket, settings: Settings) -> Iterator[str]:
    import threading

    import uvicorn

    from ccrotate._cli.serve import uvicorn_options

    port = sock.getsockname()[1]
    opts = {**uvicorn_options(settings), "log_level": "warning"}  # as `ccrotate serve` runs
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **opts))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise BindError(f"cannot serve the demo on 127.0.0.1:{port}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


def _try_it(base: str, out: TextIO) -> None:
    # Only what `pip install 'ccrotate[server]'` can run, plus clients the user may have.
    print(f"""
Try it yourself (the fake upstream answers; nothing reaches Anthropic):
   curl -s {base}/api/v1/messages -H 'content-type: application/json' \\
        -d '{{"model":"{_MODEL}","max_tokens":50,"messages":[{{"role":"user","content":"hi"}}]}}'
   ANTHROPIC_BASE_URL={base}/api ANTHROPIC_API_KEY=demo claude -p "hi"    # Claude Code
   dashboard: {base}/dashboard    status: {base}/status    health: {base}/health""",
          file=out)
    if importlib.util.find_spec("anthropic") is not None:
        sdk = (f"import anthropic; c = anthropic.Anthropic(base_url='{base}/api', "
               f"api_key='demo'); print(c.messages.create(model='{_MODEL}', max_tokens=50, "
               "messages=[{'role':'user','content':'hi'}]).content)")
        print(f'   python -c "{sdk}"', file=out)
    print(file=out, flush=True)


def run_demo(*, port: int = 0, exit_after: bool = False, out: TextIO) -> int:
    """Run the demo; returns the exit status.

    ``port=0`` serves on 8080 when it is free, else on any free port. With
    ``exit_after``, the tour is all: no try-it lines for a server about to stop.
    """
    from ccrotate._server.config import Settings
    from ccrotate._server.rotator import Rotator
    from ccrotate.testing import FakeUpstream, serve_app

    fake = FakeUpstream()
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(_bind(port))  # first: a busy port ends it with one line
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ccrotate-demo-")))
        upstream = stack.enter_context(serve_app(fake))
        settings = Settings(accounts_path=_write_accounts(folder, fake),
                            upstream_url=upstream.url,
                            oauth_token_url=upstream.url + "/v1/oauth/token",
                            credentials_path=folder / "none.json", port=port or 8080)
        rotator = Rotator(settings)
        base = stack.enter_context(_serve_on(rotator.app, sock, settings))
        print(f"ccrotate demo: proxy on {base}, fake Anthropic upstream on {upstream.url}\n",
              file=out)
        import httpx  # the demo's client only: `ccrotate serve` never pays for its import
        with httpx.Client(base_url=base, timeout=30) as client:
            _tour(client, fake, rotator.pool, out)
        if exit_after:
            return 0
        _try_it(base, out)
        print("Serving until Ctrl-C.", file=out, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


@command("demo")
def _demo(args: argparse.Namespace) -> int:
    return run_demo(port=args.port, exit_after=args.exit_after, out=sys.stdout)
