"""``python -m ccrotate.testing`` / ``ccrotate fake-upstream``: the fake upstream as a
process, scripted from flags, driven by the anthropic SDK."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import anthropic
import pytest

pytestmark = pytest.mark.slow

HELLO: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
MODEL = "claude-sonnet-4-6"


@contextmanager
def fake_upstream(*flags: str, cli: bool = False) -> Iterator[tuple[str, list[str]]]:
    """Start it on port 0; yields the printed URL and the printed API keys."""
    argv = ([sys.executable, "-m", "ccrotate._cli.main", "fake-upstream"] if cli
            else [sys.executable, "-m", "ccrotate.testing"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([*argv, "--port", "0", *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        first, second = proc.stdout.readline(), proc.stdout.readline()
        url = re.fullmatch(r"fake Anthropic upstream on (http://127\.0\.0\.1:\d+)\n", first)
        assert url is not None, first + proc.stderr.read() if proc.stderr else first
        keys = second.split()[2:] if second.startswith("API keys:") else []
        yield url[1], keys
    finally:
        proc.terminate()
        proc.wait(10)


def client(url: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=10)


def test_serves_the_messages_api_with_scripted_behaviours() -> None:
    with fake_upstream("--api-key", "sk-ant-api03-mine-0001", "--rate-limit-every", "3",
                       "--retry-after", "7", "--text", "scripted",
                       "--spend-cap", "sk-ant-api03-capped") as (url, keys):
        assert keys == ["sk-ant-api03-mine-0001"]
        sdk = client(url, keys[0])
        reply = sdk.messages.create(model=MODEL, max_tokens=16, messages=HELLO)  # 1st
        assert reply.content[0].type == "text"
        assert reply.content[0].text == "scripted"
        with pytest.raises(anthropic.RateLimitError) as info:  # 2nd: a spend-capped key
            client(url, "sk-ant-api03-capped").messages.create(
                model=MODEL, max_tokens=16, messages=HELLO)
        assert "usage limits" in str(info.value)
        with pytest.raises(anthropic.RateLimitError) as info:  # 3rd: every third is a 429
            sdk.messages.create(model=MODEL, max_tokens=16, messages=HELLO)
        assert info.value.response.headers["retry-after"] == "7"
        with pytest.raises(anthropic.AuthenticationError):  # not a key it was given
            client(url, "sk-ant-api03-unknown").messages.create(
                model=MODEL, max_tokens=16, messages=HELLO)
        assert sdk.messages.create(model=MODEL, max_tokens=16, messages=HELLO).id


def test_streams_and_accepts_any_key_via_the_ccrotate_command() -> None:
    with fake_upstream("--accept-any-key", "--stream-events", "5", cli=True) as (url, keys):
        assert keys == []
        with client(url, "made-up").messages.stream(
                model=MODEL, max_tokens=16, messages=HELLO) as stream:
            deltas = [e for e in stream if e.type == "content_block_delta"]
        assert len(deltas) == 5
