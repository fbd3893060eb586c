"""Claude Code itself through the proxy.

Runs the real CLI (``CCROTATE_CLAUDE_BIN``, else ``claude`` on PATH, else
``npx -y @anthropic-ai/claude-code``) with ``ANTHROPIC_BASE_URL`` at the proxy's
``/api`` prefix, in front of the fake upstream. It runs when ``CCROTATE_CLAUDE_BIN``
names an installed CLI (``.ci/run`` installs one from npm) or when
``CCROTATE_TEST_CLAUDE_CODE=1`` asks for it (``nox -s claude_code``); otherwise it skips,
so a machine without Node.js still passes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from ccrotate import RotationMiddleware
from conftest import ACCOUNT_OF, Stack


def _claude_command() -> list[str]:
    # A given binary, else one on PATH, else npm's package (downloaded on first use).
    if given := os.environ.get("CCROTATE_CLAUDE_BIN"):
        return [given]
    if found := shutil.which("claude"):
        return [found]
    return ["npx", "-y", "@anthropic-ai/claude-code"]


@pytest.mark.claude_code
@pytest.mark.skipif(
    os.environ.get("CCROTATE_TEST_CLAUDE_CODE") != "1"
    and not Path(os.environ.get("CCROTATE_CLAUDE_BIN") or "/nonexistent").is_file(),
    reason="set CCROTATE_CLAUDE_BIN (or CCROTATE_TEST_CLAUDE_CODE=1) to run Claude Code")
def test_claude_code_works_through_the_proxy(serve_proxy: Any, tmp_path: Path) -> None:
    """``claude -p`` with ``ANTHROPIC_BASE_URL=…/api`` gets the fake's reply via both kinds."""
    stack: Stack = serve_proxy(
        app=lambda proxy: RotationMiddleware(Starlette(), proxy=proxy, prefix="/api"))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "ANTHROPIC_BASE_URL": stack.url + "/api", "ANTHROPIC_API_KEY": "client-key",
           # Nothing but the proxy may be contacted: no telemetry, updates or error reports.
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
           "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1"}
    for _ in ("a", "b"):  # an API-key account, then the OAuth one
        done = subprocess.run([*_claude_command(), "-p", "hi"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=180,
                              stdin=subprocess.DEVNULL, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Hello from the fake Anthropic upstream." in done.stdout
    sent = stack.fake.requests_for(path="/v1/messages")
    assert [(r.query, ACCOUNT_OF.get(r.credential or "")) for r in sent] == [
        ("beta=true", "a"), ("beta=true", "b")]
    # Claude Code sends its own identity after the billing block: nothing is injected.
    assert sent[1].json["system"] == sent[0].json["system"]
    assert "oauth-2025-04-20" in sent[1].betas
