"""SDK mode end to end: the real Claude Code CLI, run by the Claude Agent SDK, against the
fake upstream on loopback (nothing leaves the machine).

One fake upstream and one server per module: ``/sdk`` is SDK mode with ``Bash``
allow-listed (tool steps ignored), ``/fwd`` the same with ``tool_steps="forward"``,
``/cap`` one agent slot, a short queue wait and a short deadline. Clients are the
official ``anthropic`` and ``openai`` SDKs, or httpx where the test needs the socket.
Skips only when the ``ccrotate[sdk]`` extra is not installed or no CLI is found.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ccrotate import Account, AccountKind, AccountPool, Secret
from ccrotate._asgi import Receive, Scope, Send
from ccrotate._proxy.record import Failover, RequestRecord
from ccrotate.testing import (
    FakeUpstream,
    Gate,
    RateLimited,
    Reply,
    ToolUse,
    Unauthorized,
    serve_app,
)

pytest.importorskip("claude_agent_sdk", reason="the ccrotate[sdk] extra is not installed")

from ccrotate._sdk.agent import bundled_cli
from ccrotate._sdk.app import SDKApp
from ccrotate._sdk.config import SDKConfig

# The CLI the SDK was built with first; else the one .ci/run installs from npm.
CLI = bundled_cli() or os.environ.get("CCROTATE_CLAUDE_BIN")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CLI is None or not Path(CLI).is_file(),
                       reason="no Claude Code CLI: neither bundled with claude-agent-sdk "
                              "nor named by CCROTATE_CLAUDE_BIN"),
]

KEYS = {"a": "sk-ant-api03-sdk-aaaa-0001", "b": "sk-ant-oat01-sdk-bbbb-0002",
        "c": "sk-ant-api03-sdk-cccc-0003"}
ACCOUNT_OF = {v: k for k, v in KEYS.items()}
HELLO = "Hello from the fake Anthropic upstream."
MODEL = "claude-sonnet-4-6"


class Recorder:
    """An observer keeping every record and failover."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.failovers: list[Failover] = []

    def on_request(self, record: RequestRecord) -> None:
        self.records.append(record)

    def on_failover(self, record: RequestRecord, failover: Failover) -> None:
        self.failovers.append(failover)


class StubRefresher:
    """A token refresher whose refresh keeps the token (the fake's 401 was one-shot)."""

    def __init__(self, pool: AccountPool) -> None:
        self.pool = pool
        self.refreshed: list[str] = []

    async def ensure_fresh(self, account: Account) -> Account:
        return account

    async def refresh(self, name: str, *, reason: str) -> Account:
        self.refreshed.append(name)
        return self.pool.account(name)


class Router:
    """Dispatches by path prefix to SDK apps (each mounted like Starlette's Mount)."""

    def __init__(self, apps: dict[str, SDKApp]) -> None:
        self.apps = apps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            for app in self.apps.values():
                await app.__aenter__()
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            for app in reversed(self.apps.values()):
                await app.__aexit__()
            await send({"type": "lifespan.shutdown.complete"})
            return
        for prefix, app in self.apps.items():
            if scope["path"].startswith(prefix + "/"):
                await app({**scope, "root_path": prefix}, receive, send)
                return


class Stack:
    def __init__(self, fake: FakeUpstream, pool: AccountPool, url: str,
                 apps: dict[str, SDKApp], recorder: Recorder, fake_url: str) -> None:
        self.fake, self.pool, self.url, self.apps, self.recorder = fake, pool, url, apps, recorder
        self.fake_url = fake_url

    def anthropic(self, prefix: str = "/sdk") -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url + prefix, api_key="unused",
                                   max_retries=0, timeout=120)

    def openai(self, prefix: str = "/sdk") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + prefix + "/v1", api_key="unused",
                             max_retries=0, timeout=120)


def _accounts() -> list[Account]:
    far = time.time() + 86400
    return [Account(name="a", kind=AccountKind.API_KEY, api_key=Secret(KEYS["a"])),
            Account(name="b", kind=AccountKind.OAUTH, access_token=Secret(KEYS["b"]),
                    refresh_token=Secret("sk-ant-ort01-sdk-bbbb"), expires_at=far),
            Account(name="c", kind=AccountKind.API_KEY, api_key=Secret(KEYS["c"]))]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    fake = FakeUpstream()
    with serve_app(fake) as upstream:
        pool = AccountPool(_accounts())
        oauth_pool = AccountPool([a for a in _accounts() if a.kind is AccountKind.OAUTH])
        recorder = Recorder()
        base = SDKConfig(upstream_url=upstream.url, allowed_tools=("Bash",),
                         cli_path=Path(CLI or ""), max_turns=4, max_concurrent=4)
        apps = {
            "/sdk": SDKApp(pool, config=base, observers=[recorder]),
            "/fwd": SDKApp(pool, config=_replace(base, tool_steps="forward"),
                           observers=[recorder]),
            "/cap": SDKApp(pool, config=_replace(base, max_concurrent=1, queue_timeout=0.3,
                                                 deadline=4.0), observers=[recorder]),
            "/oauth": SDKApp(oauth_pool, config=base, refresher=StubRefresher(oauth_pool),
                             observers=[recorder]),
        }
        with serve_app(Router(apps), lifespan="on", shutdown_timeout=5) as server:
            yield Stack(fake, pool, server.url, apps, recorder, upstream.url)


def _replace(config: SDKConfig, **changes: Any) -> SDKConfig:
    import dataclasses
    return dataclasses.replace(config, **changes)


@pytest.fixture(autouse=True)
def _clean(stack: Stack) -> Iterator[None]:
    yield
    stack.fake.clear_requests()
    stack.recorder.records.clear()
    stack.recorder.failovers.clear()
    for name in stack.pool.names:
        stack.pool.enable(name)


def _records(stack: Stack, count: int) -> list[RequestRecord]:
    # A call is recorded once its agent is reaped, just after the client has its answer.
    deadline = time.monotonic() + 10
    while len(stack.recorder.records) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return stack.recorder.records


def _messages_requests(stack: Stack) -> list[Any]:
    return stack.fake.requests_for(path="/v1/messages")


def test_messages_json_and_stream(stack: Stack) -> None:
    """/sdk/v1/messages answers the agent's final turn as JSON, then as a stream, with usage
    and cost from the agent's result; every call is one observed record on an account."""
    client = stack.anthropic()
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=64, system="Answer briefly.",
        messages=[{"role": "user", "content": "hello"}])
    message = raw.parse()
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == HELLO  # type: ignore[union-attr]
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    assert raw.headers["x-ccrotate-account"] in KEYS
    assert float(raw.headers["x-ccrotate-cost-usd"]) > 0

    with client.messages.stream(model=MODEL, max_tokens=64,
                                messages=[{"role": "user", "content": "hello"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == HELLO
    assert final.usage.output_tokens > 0

    sent = _messages_requests(stack)
    assert len(sent) == 2
    assert all(r.status == 200 for r in sent)
    # The client's system prompt reached the model as the agent's own.
    system = json.dumps(sent[0].json["system"])
    assert "Answer briefly." in system
    records = _records(stack, 2)
    assert [(r.route, r.status, r.stream) for r in records] == [
        ("sdk_messages", 200, False), ("sdk_messages", 200, True)]
    assert [r.account for r in records] == [ACCOUNT_OF[r.credential or ""] for r in sent]
    assert all((r.input_tokens or 0) > 0 for r in records)


def test_chat_completions_json_and_stream(stack: Stack) -> None:
    """/sdk/v1/chat/completions speaks OpenAI's shape through the same translator."""
    client = stack.openai()
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "hello"}])
    assert completion.choices[0].message.content == HELLO
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0

    chunks = list(client.chat.completions.create(
        model=MODEL, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "hello"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == HELLO
    assert any(c.usage is not None for c in chunks)
    assert [r.route for r in _records(stack, 2)] == ["sdk_chat_completions"] * 2


def test_a_rate_limited_account_fails_over(stack: Stack) -> None:
    """The first account's 429 (before any output) moves the call to the next account;
    the pool cools the first, and the failover is observed."""
    stack.fake.script_any(RateLimited(retry_after=120))
    message = stack.anthropic().messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}])
    assert message.content[0].text == HELLO  # type: ignore[union-attr]
    sent = _messages_requests(stack)
    assert [r.status for r in sent] == [429, 200]
    first, second = (ACCOUNT_OF[r.credential or ""] for r in sent)
    assert first != second
    assert [(f.account, f.reason) for f in stack.recorder.failovers] == [
        (first, "rate_limited")]
    record = _records(stack, 1)[-1]
    assert (record.account, record.attempts, record.status) == (second, 2, 200)
    # The pool saw the refusal (its backoff may already be over on a slow machine).
    status = stack.pool.status(first)
    assert status.rate_limits + status.failures >= 1
    assert "rate_limit" in (status.last_error or "")


def test_an_oauth_401_refreshes_the_token_and_runs_again(stack: Stack) -> None:
    """An OAuth account's 401 before any output refreshes its token once and runs the
    call again, as API mode does; the account is not taken out."""
    # Claude Code retries a 401 once itself: the second one reaches ccrotate.
    stack.fake.script(KEYS["b"], Unauthorized(), Unauthorized())
    message = stack.anthropic("/oauth").messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}])
    assert message.content[0].text == HELLO  # type: ignore[union-attr]
    assert [r.status for r in _messages_requests(stack)] == [401, 401, 200]
    refresher = stack.apps["/oauth"].refresher
    assert isinstance(refresher, StubRefresher)
    assert refresher.refreshed == ["b"]
    record = _records(stack, 1)[-1]
    assert (record.account, record.attempts, record.status, record.failovers) == (
        "b", 1, 200, [])
    assert stack.apps["/oauth"].pool.status("b").state.value == "available"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


def test_client_disconnect_kills_the_agent(stack: Stack) -> None:
    """A client that leaves mid-stream gets its agent process killed (and reaped)."""
    gate = Gate()
    # Held after the first text delta, whichever account serves.
    for key in KEYS.values():
        stack.fake.set_default(key, Reply(hold=gate, hold_after=4))
    app = stack.apps["/sdk"]
    body = {"model": MODEL, "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "hello"}]}
    try:
        with httpx.Client(timeout=60) as http, http.stream(
                "POST", stack.url + "/sdk/v1/messages", json=body) as response:
            assert response.status_code == 200
            chunks = response.iter_bytes()
            first = next(chunks)
            assert b"message_start" in first
            pids = app.agent_pids()
            assert len(pids) == 1, (first, stack.fake.requests, stack.recorder.records)
        deadline = time.monotonic() + 20
        while _alive(pids[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pids[0])
        assert app.agent_pids() == []
        while not stack.recorder.records and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stack.recorder.records[-1].status == 499
    finally:
        for key in KEYS.values():
            stack.fake.set_default(key, None)
        gate.release()


def test_an_allow_listed_tool_round_trips(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake scripts a Bash tool_use, the agent runs it in its workspace and the fake
    sees the tool_result; ``forward`` shows both steps. The agent's environment is the
    allow-list: a proxy secret in the server's environment never reaches it."""
    monkeypatch.setenv("CCROTATE_ADMIN_TOKEN", "admin-secret-never-in-agent")
    stack.fake.script_any(
        Reply(text="Running it.", tool_use=ToolUse("Bash", {"command": "pwd; env",
                                                             "description": "show env"})),
        Reply(text="All done."))
    message = stack.anthropic("/fwd").messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "run it"}])
    kinds = [b.type for b in message.content]
    assert kinds == ["text", "tool_use", "tool_result", "text"]
    assert message.content[-1].text == "All done."  # type: ignore[union-attr]
    sent = _messages_requests(stack)
    assert len(sent) == 2
    results = [b for b in sent[1].json["messages"][-1]["content"]
               if b.get("type") == "tool_result"]
    assert len(results) == 1
    output = json.dumps(results[0]["content"])
    assert "ccrotate-sdk-" in output  # pwd: the call's own temporary workspace
    assert "ANTHROPIC_BASE_URL" in output
    assert "admin-secret-never-in-agent" not in output
    assert "CCROTATE_ADMIN_TOKEN" not in output


def test_the_slot_cap_answers_429_and_the_deadline_504(stack: Stack) -> None:
    """With one agent slot, a second call waits ``queue_timeout`` then gets a 429; the
    held call ends at its deadline with a 504 and its agent killed."""
    gate = Gate()
    stack.fake.script_any(Reply(hold=gate))
    client = stack.anthropic("/cap")
    outcome: list[Any] = []

    def first() -> None:
        try:
            client.messages.create(model=MODEL, max_tokens=64,
                                   messages=[{"role": "user", "content": "hello"}])
        except anthropic.APIStatusError as exc:
            outcome.append(exc.status_code)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not stack.apps["/cap"].agent_pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(anthropic.RateLimitError) as refused:
            client.messages.create(model=MODEL, max_tokens=64,
                                   messages=[{"role": "user", "content": "hello"}])
        assert "agent slots are busy" in refused.value.message
        assert refused.value.response.headers["retry-after"] == "1"
        thread.join(20)
        assert outcome == [504]
        assert stack.apps["/cap"].agent_pids() == []
    finally:
        gate.release()
        thread.join(5)


def test_a_session_keeps_its_agent_warm(stack: Stack) -> None:
    """/sdk/{session}/v1/messages: the second turn goes to the same agent process on the
    same account, which remembers the first turn itself."""
    client = stack.anthropic("/sdk/chat-1")
    app = stack.apps["/sdk"]
    first = client.messages.create(model=MODEL, max_tokens=64,
                                   messages=[{"role": "user", "content": "my name is Ada"}])
    pids = app.agent_pids()
    assert len(pids) == 1
    second = client.messages.create(model=MODEL, max_tokens=64, messages=[
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": first.content[0].text},  # type: ignore[union-attr]
        {"role": "user", "content": "what is my name?"}])
    assert second.content[0].text == HELLO  # type: ignore[union-attr]
    assert app.agent_pids() == pids
    sent = _messages_requests(stack)
    assert len(sent) == 2
    assert sent[0].credential == sent[1].credential
    turns = json.dumps(sent[1].json["messages"])
    assert "my name is Ada" in turns
    assert "The conversation so far" not in turns  # the agent's own memory, not a replay
    records = _records(stack, 2)
    assert records[0].account == records[1].account


def test_the_reference_server_serves_sdk_mode(stack: Stack) -> None:
    """``Rotator(settings).app`` mounts SDK mode at /sdk behind its client-key check, and
    the access log and metrics see the call."""
    from ccrotate import Rotator, Settings

    token = "sdk-mode-client-token-0123456789"
    settings = Settings(auth_tokens=(token,), hot_reload=False,
                        upstream_url=stack.fake_url, sdk_cli_path=CLI)
    rotator = Rotator(settings, pool=stack.pool)
    with serve_app(rotator.app, lifespan="on") as server:
        anonymous = httpx.post(server.url + "/sdk/v1/messages", json={}, timeout=30)
        assert anonymous.status_code == 401
        client = anthropic.Anthropic(base_url=server.url + "/sdk", api_key=token,
                                     max_retries=0, timeout=120)
        message = client.messages.create(model=MODEL, max_tokens=64,
                                         messages=[{"role": "user", "content": "hello"}])
        assert message.content[0].text == HELLO  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            metrics = httpx.get(server.url + "/metrics", timeout=30,
                                headers={"authorization": f"Bearer {token}"}).text
            if 'route="sdk_messages",status="200"' in metrics:
                break
            time.sleep(0.05)
        assert 'route="sdk_messages",status="200"' in metrics
        assert 'route="sdk_messages",status="401"' in metrics
