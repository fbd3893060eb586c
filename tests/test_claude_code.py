"""Claude Code itself through the reference server, as ``ccrotate serve`` runs it.

Runs the real CLI (``CCROTATE_CLAUDE_BIN``, else ``claude`` on PATH, else
``npx -y @anthropic-ai/claude-code``) with ``ANTHROPIC_BASE_URL`` at the server's ``/api``
prefix and ``ANTHROPIC_API_KEY`` set to the server's client token. The server is
``Rotator(settings).app`` under ``uvicorn_options(settings)``: the Host/Origin guard, the
415 for non-JSON bodies, the client-key check, the request-head deadline and the
connection cap all stand between Claude Code and the fake upstream, so a check that
refuses something Claude Code sends fails here.

It runs when ``CCROTATE_CLAUDE_BIN`` names an installed CLI (``.ci/run`` installs one from
npm) or when ``CCROTATE_TEST_CLAUDE_CODE=1`` asks for it (``nox -s claude_code``);
otherwise it skips, so a machine without Node.js still passes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import ACCOUNT_OF, CLIENT_TOKEN, GuardedStack

pytestmark = [
    pytest.mark.claude_code,
    pytest.mark.skipif(
        os.environ.get("CCROTATE_TEST_CLAUDE_CODE") != "1"
        and not Path(os.environ.get("CCROTATE_CLAUDE_BIN") or "/nonexistent").is_file(),
        reason="set CCROTATE_CLAUDE_BIN (or CCROTATE_TEST_CLAUDE_CODE=1) to run Claude Code"),
]

HELLO = "Hello from the fake Anthropic upstream."
# What the real API accepts first in an OAuth request's system prompt; ``claude -p`` sends
# the Agent SDK's line, the interactive CLI the first.
IDENTITIES = ("You are Claude Code, Anthropic's official CLI for Claude.",
              "You are a Claude agent, built on Anthropic's Claude Agent SDK.")


def _claude_command() -> list[str]:
    # A given binary, else one on PATH, else npm's package (downloaded on first use).
    if given := os.environ.get("CCROTATE_CLAUDE_BIN"):
        return [given]
    if found := shutil.which("claude"):
        return [found]
    return ["npx", "-y", "@anthropic-ai/claude-code"]


def _claude(stack: GuardedStack, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(home),
           "ANTHROPIC_BASE_URL": stack.url + "/api", "ANTHROPIC_API_KEY": CLIENT_TOKEN,
           # Nothing but the proxy may be contacted: no telemetry, updates or error reports.
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
           "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1"}
    done = subprocess.run([*_claude_command(), *args], env=env, cwd=home,
                          capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stdout + done.stderr + repr(stack.seen)
    return done


def _system_texts(body: Any) -> list[str]:
    system = body.get("system") or []
    if isinstance(system, str):
        return [system]
    return [block.get("text", "") for block in system]


@pytest.mark.slow
def test_claude_code_works_through_the_guarded_server(serve_guarded: Any,
                                                      tmp_path: Path) -> None:
    """``claude -p`` (plain, then ``stream-json``) gets the fake's reply from an API-key
    account and from the OAuth one; nothing it sends is refused by any check."""
    stack: GuardedStack = serve_guarded()
    plain = _claude(stack, tmp_path, "-p", "hi")  # account a: an API key
    assert HELLO in plain.stdout
    streamed = _claude(stack, tmp_path, "-p", "hi", "--output-format", "stream-json",
                       "--verbose")  # account b: OAuth
    events = [json.loads(line) for line in streamed.stdout.splitlines() if line.strip()]
    results = [e for e in events if e.get("type") == "result"]
    assert results, streamed.stdout
    assert results[-1]["subtype"] == "success", streamed.stdout
    assert HELLO in results[-1]["result"]
    assert any(e.get("type") == "assistant" for e in events)

    # Nothing Claude Code sent was refused: not by the Host/Origin guard (421/403), the
    # content-type check (415), the client-key check (401) nor the protocol guard.
    assert stack.refused() == [], stack.refused()
    # Claude Code probes its base URL with HEAD (no key, no body) before a session.
    probes = [s for s in stack.seen if s.method == "HEAD"]
    assert [(s.path, s.status) for s in probes] == [("/api", 200)] * len(probes)
    messages = [s for s in stack.seen if s.path == "/api/v1/messages"]
    assert messages
    assert all(s.method == "POST" for s in messages)
    for seen in messages:
        assert seen.header("host") == f"127.0.0.1:{stack.server.port}"
        assert seen.header("origin") is None
        assert (seen.header("content-type") or "").startswith("application/json")
        assert (seen.header("user-agent") or "").startswith("claude-cli/")
        assert seen.header("x-api-key") == CLIENT_TOKEN

    sent = stack.fake.requests_for(path="/v1/messages")
    assert [ACCOUNT_OF.get(r.credential or "") for r in sent] == ["a", "b"]
    assert all(r.query == "beta=true" and r.status == 200 for r in sent)
    assert all(r.json.get("stream") is True for r in sent)
    # The identity rule: the OAuth request's first system block (after the billing
    # header) is Claude Code's own identity, as sent: nothing injected or moved.
    oauth = sent[1]
    assert "oauth-2025-04-20" in oauth.betas
    texts = [t for t in _system_texts(oauth.json)
             if not t.startswith("x-anthropic-billing-header")]
    assert texts[0] in IDENTITIES
    assert _system_texts(oauth.json) == _system_texts(sent[0].json)
    assert CLIENT_TOKEN not in repr(oauth.headers)  # the client key never goes upstream



def _session_of(request: Any) -> str | None:
    user_id = (request.json.get("metadata") or {}).get("user_id") or ""
    try:
        return json.loads(user_id).get("session_id")  # type: ignore[no-any-return]
    except ValueError:
        return None


@pytest.mark.slow
def test_a_continued_claude_code_session_stays_on_its_account(serve_guarded: Any,
                                                              tmp_path: Path) -> None:
    """``claude -c -p`` continues the last session: its request carries the same session
    id and goes to the same account, though round-robin alone would move it on."""
    stack: GuardedStack = serve_guarded()
    _claude(stack, tmp_path, "-p", "hi")                # a new session: account a
    _claude(stack, tmp_path, "-p", "hello")             # another new session: account b
    again = _claude(stack, tmp_path, "-c", "-p", "and again")   # continues the second
    assert HELLO in again.stdout
    sent = stack.fake.requests_for(path="/v1/messages")
    assert len(sent) == 3, [r.json.get("metadata") for r in sent]
    first, second, third = (_session_of(r) for r in sent)
    assert first
    assert second
    assert first != second
    assert third == second
    assert [ACCOUNT_OF.get(r.credential or "") for r in sent] == ["a", "b", "b"]
    assert stack.refused() == []
