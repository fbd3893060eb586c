"""SDK mode's parts that need no agent process: prompt, rendering, settings, mounting.

The end-to-end tests with the real CLI are in ``test_sdk_mode.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    ConfigError,
    Rotator,
    SDKApp,
    SDKConfig,
    Secret,
    Settings,
    load_settings,
)
from ccrotate._sdk import app as sdk_app
from ccrotate._sdk.events import Result, TextDelta, ToolCall, ToolOutput, TurnText
from ccrotate._sdk.prompt import PromptError, parse_request
from ccrotate._sdk.render import MessageBuilder, SSEWriter


def _body(**fields: Any) -> bytes:
    return json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 10, **fields}).encode()


def _result() -> Result:
    return Result(session_id="s-1", is_error=False, num_turns=2, duration_ms=12,
                  stop_reason="end_turn", cost_usd=0.5,
                  usage={"input_tokens": 7, "output_tokens": 3})


# --- prompt ------------------------------------------------------------------------


def test_one_user_turn_goes_to_the_agent_as_it_is() -> None:
    """A single user message becomes the agent's prompt; the system prompt is passed on."""
    req = parse_request(_body(system=[{"type": "text", "text": "Be brief."}],
                              messages=[{"role": "user", "content": "hi"}], stream=True))
    assert (req.model, req.system, req.stream) == ("claude-sonnet-4-6", "Be brief.", True)
    assert req.content == [{"type": "text", "text": "hi"}]
    assert req.last_turn == req.content


def test_earlier_turns_become_a_transcript_before_the_last_one() -> None:
    """Claude Code takes user turns only: the conversation so far is one text block."""
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "AAAA"}}
    req = parse_request(_body(messages=[
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello Ada"}]},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]}]))
    assert req.system is None
    transcript = req.content[0]["text"]
    assert "User: my name is Ada" in transcript
    assert "Assistant: Hello Ada" in transcript
    assert req.content[1:] == [{"type": "text", "text": "what is this?"}, image]
    assert req.last_turn == req.content[1:]


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "not valid JSON"),
    (_body(messages=[]), "at least one message"),
    (_body(messages=[{"role": "assistant", "content": "x"}]), "last message must be a user"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
    (_body(messages=[{"role": "user", "content": "x"}], stream="yes"), "stream"),
])
def test_bad_requests_are_refused(body: bytes, message: str) -> None:
    """A body that cannot become a prompt is a PromptError (answered 400)."""
    with pytest.raises(PromptError, match=message):
        parse_request(body)


# --- rendering -----------------------------------------------------------------------

RUN = [TurnText("m1", "Let me look."), ToolCall("t1", "Bash", {"command": "ls"}),
       ToolOutput("t1", "a.txt", False), TurnText("m2", "There is a.txt.")]


def test_ignore_keeps_the_final_turn_only() -> None:
    """``ignore``: the JSON answer is the agent's final turn, with usage and the sdk facts."""
    builder = MessageBuilder("claude-sonnet-4-6", "ignore")
    for event in RUN:
        builder.feed(event)
    message = json.loads(builder.body(_result()))
    assert message["content"] == [{"type": "text", "text": "There is a.txt."}]
    assert message["usage"]["input_tokens"] == 7
    assert message["sdk"] == {"session_id": "s-1", "cost_usd": 0.5, "num_turns": 2,
                              "duration_ms": 12}


def test_formatted_weaves_the_steps_into_text() -> None:
    """``formatted``: one text block with the tool call and result as text."""
    builder = MessageBuilder("m", "formatted")
    for event in RUN:
        builder.feed(event)
    [block] = json.loads(builder.body(_result()))["content"]
    assert block["text"] == ('Let me look.\n[Bash] {"command": "ls"}\n[result] a.txt\n\n'
                             "There is a.txt.")


def test_forward_shows_the_steps_as_blocks() -> None:
    """``forward``: text, tool_use and tool_result blocks in order."""
    builder = MessageBuilder("m", "forward")
    for event in RUN:
        builder.feed(event)
    content = json.loads(builder.body(_result()))["content"]
    assert [b["type"] for b in content] == ["text", "tool_use", "tool_result", "text"]
    assert content[1] == {"type": "tool_use", "id": "t1", "name": "Bash",
                          "input": {"command": "ls"}}


def _events(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in data.decode().splitlines()
            if line.startswith("data: ")]


def test_the_stream_is_a_messages_api_stream() -> None:
    """SSE: message_start, text blocks from the deltas, steps as blocks (forward), then
    message_delta with usage and message_stop; indexes count up."""
    writer = SSEWriter("m", "forward")
    data = writer.start() + writer.feed(TextDelta("Let ")) + writer.feed(TextDelta("me."))
    data += writer.feed(RUN[1]) + writer.feed(RUN[2]) + writer.feed(TextDelta("Done."))
    data += writer.finish(_result())
    events = _events(data)
    assert [e["type"] for e in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "content_block_start", "content_block_delta",
        "content_block_stop", "content_block_start", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
        "message_stop"]
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [(e["index"], e["content_block"]["type"]) for e in starts] == [
        (0, "text"), (1, "tool_use"), (2, "tool_result"), (3, "text")]
    assert events[-2]["usage"]["output_tokens"] == 3
    error = _events(SSEWriter("m", "ignore").error("rate_limit_error", "later"))
    assert error == [{"type": "error", "error": {"type": "rate_limit_error",
                                                  "message": "later"}}]


def test_ignore_streams_no_steps() -> None:
    """``ignore`` streams text only: tool steps produce nothing."""
    writer = SSEWriter("m", "ignore")
    assert writer.feed(RUN[1]) == b""
    assert writer.feed(RUN[2]) == b""


# --- settings and config -------------------------------------------------------------


def test_sdk_settings_from_env_and_toml(tmp_path: Path) -> None:
    """[sdk] in TOML and CCROTATE_SDK_* in the environment; MCP configs never in a repr."""
    toml = tmp_path / "c.toml"
    toml.write_text('[sdk]\nallowed_tools = ["Read", "Bash(git status:*)"]\n'
                    'permission_mode = "acceptEdits"\n'
                    '[sdk.mcp_servers.docs]\ncommand = "docs"\nenv = {TOKEN = "mcp-secret"}\n')
    s = load_settings(config_path=toml, env={"CCROTATE_SDK_TOOL_STEPS": "Forward",
                                             "CCROTATE_SDK_ENV_ALLOW": "HTTPS_PROXY,FOO"})
    assert s.sdk_allowed_tools == ("Read", "Bash(git status:*)")
    assert s.sdk_permission_mode == "acceptEdits"
    assert s.sdk_tool_steps == "forward"
    assert s.sdk_env_allow == ("HTTPS_PROXY", "FOO")
    assert dict(s.sdk_mcp_servers or {})["docs"]["command"] == "docs"
    assert "mcp-secret" not in repr(s)
    inline = Settings(sdk_mcp_servers='{"mcpServers": {"x": {"command": "y"}}}')
    assert dict(inline.sdk_mcp_servers or {}) == {"x": {"command": "y"}}
    assert Settings(sdk_mcp_servers="~/mcp.json").sdk_mcp_servers == Path.home() / "mcp.json"
    for bad in ({"sdk_tool_steps": "all"}, {"sdk_env_allow": "A-B"},
                {"sdk_permission_mode": "yolo"}, {"sdk_max_concurrent": 0}):
        with pytest.raises(ConfigError):
            Settings(**bad)


def test_sdk_config_is_checked() -> None:
    """SDKConfig refuses what would fail later."""
    for bad in ({"tool_steps": "all"}, {"permission_mode": "yolo"}, {"max_concurrent": 0},
                {"deadline": 0}, {"queue_timeout": -1}, {"upstream_url": "ftp://x"},
                {"allowed_tools": "Bash"}):
        with pytest.raises(ConfigError):
            SDKConfig(**bad)


def test_the_agent_environment_is_an_allow_list() -> None:
    """The agent gets PATH & co, its home, the base URL and one credential: no secrets
    of the proxy, whatever the server's environment holds."""
    pytest.importorskip("claude_agent_sdk", reason="the ccrotate[sdk] extra is not installed")
    from ccrotate._sdk.agent import agent_env

    source = {"PATH": "/bin", "LANG": "C.UTF-8", "CCROTATE_ADMIN_TOKEN": "admin",
              "CCROTATE_AUTH_TOKEN": "client", "AWS_SECRET_ACCESS_KEY": "aws",
              "ANTHROPIC_API_KEY": "server-own-key", "HTTPS_PROXY": "http://p"}
    oauth = Account(name="b", kind=AccountKind.OAUTH, access_token=Secret("sk-ant-oat01-x"),
                    refresh_token=Secret("sk-ant-ort01-x"), expires_at=time.time() + 3600)
    env = agent_env(SDKConfig(upstream_url="http://up", env_allow=("HTTPS_PROXY",)), oauth,
                    Path("/tmp/h"), source)
    assert env["CLAUDE_CODE_OAUTH_TOKEN"] == "sk-ant-oat01-x"
    assert "ANTHROPIC_API_KEY" not in env
    assert (env["ANTHROPIC_BASE_URL"], env["HOME"], env["PATH"]) == ("http://up", "/tmp/h",
                                                                       "/bin")
    assert env["HTTPS_PROXY"] == "http://p"
    assert not {"CCROTATE_ADMIN_TOKEN", "CCROTATE_AUTH_TOKEN", "AWS_SECRET_ACCESS_KEY"} & set(env)
    key = Account(name="a", kind=AccountKind.API_KEY, api_key=Secret("sk-ant-api03-a"),
                  base_url="http://own")
    env = agent_env(SDKConfig(), key, Path("/tmp/h"), source)
    assert (env["ANTHROPIC_API_KEY"], env["ANTHROPIC_BASE_URL"]) == ("sk-ant-api03-a",
                                                                      "http://own")
    assert "CLAUDE_CODE_OAUTH_TOKEN" not in env


# --- the app without the extra, and mounting ----------------------------------------


def _pool() -> AccountPool:
    return AccountPool([Account(name="a", kind=AccountKind.API_KEY,
                                api_key=Secret("sk-ant-api03-a"))])


async def test_without_the_extra_sdk_mode_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No claude_agent_sdk: 501 in the client's shape, naming ``ccrotate[sdk]``."""
    monkeypatch.setattr(sdk_app, "sdk_available", lambda: False)
    app = SDKApp(_pool())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        answer = await client.post("/v1/messages", json={
            "model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
        chat = await client.post("/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "x"}]})
        missing = await client.post("/v1/nothing", json={})
    assert answer.status_code == 501
    assert answer.json()["type"] == "error"
    assert "pip install 'ccrotate[sdk]'" in answer.json()["error"]["message"]
    assert chat.status_code == 501
    assert "ccrotate[sdk]" in chat.json()["error"]["message"]
    assert missing.status_code == 404


async def test_sdk_mode_refuses_what_the_proxy_refuses() -> None:
    """Client keys, JSON bodies and valid prompts are checked before any agent starts."""
    from ccrotate import ClientAuth

    app = SDKApp(_pool(), authenticate=ClientAuth(["a-client-token-of-16+"]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        anonymous = await client.post("/v1/messages", json={})
        headers = {"x-api-key": "a-client-token-of-16+"}
        bad = await client.post("/v1/messages", headers=headers, json={"model": "m"})
        text = await client.post("/v1/messages", headers={**headers,
                                                          "content-type": "text/plain"},
                                 content=b"{}")
    assert anonymous.status_code == 401
    assert bad.status_code in (400, 501)  # 501 only where the extra is missing
    assert text.status_code == 415


@pytest.mark.parametrize("enabled", [True, False])
async def test_the_rotator_mounts_sdk_mode_at_sdk(enabled: bool) -> None:
    """``sdk_enabled`` mounts /sdk (its probe answers); off, /sdk is not found."""
    rotator = Rotator(Settings(hot_reload=False, sdk_enabled=enabled), pool=_pool())
    assert (rotator.sdk is not None) is enabled
    async with rotator, httpx.AsyncClient(transport=httpx.ASGITransport(app=rotator.app),
                                          base_url="http://127.0.0.1") as client:
        probe = await client.get("/sdk/")
        chat = await client.post("/sdk/v1/chat/completions", json={"model": "m"})
    assert probe.status_code == (200 if enabled else 404)
    assert chat.status_code == (400 if enabled else 404)


class _Process:
    """Stands in for an agent process: records being closed."""

    def __init__(self) -> None:
        self.pid = 1
        self.closed = False

    async def close(self, *, kill: bool) -> None:
        self.closed = kill


async def test_warm_sessions_are_capped_and_expire(tmp_path: Path) -> None:
    """At most ``cap`` sessions stay warm (least recently used closed first); one asked
    for another model is closed; idle ones close after the TTL, with their directory."""
    import anyio

    from ccrotate._sdk.sessions import Session, Sessions

    sessions = Sessions(ttl=0.05, cap=2)
    processes = [_Process() for _ in range(3)]
    for i, process in enumerate(processes):
        (tmp_path / str(i)).mkdir()
        assert await sessions.add(Session(f"s{i}", "a", process, tmp_path / str(i), "m"))
    assert processes[0].closed
    assert sessions.ids() == ["s1", "s2"]
    assert not (tmp_path / "0").exists()
    assert await sessions.take("s1", "another-model") is None
    assert processes[1].closed
    taken = await sessions.take("s2", "m")
    assert taken is not None
    assert len(sessions) == 0
    await sessions.put_back(taken)
    await anyio.sleep(0.1)
    await sessions.expire()
    assert processes[2].closed
    assert len(sessions) == 0


def test_the_sdk_settings_default_to_sdk_configs_defaults() -> None:
    """The sdk_* settings repeat SDKConfig's defaults (the settings table needs literals):
    an unchanged Settings must give exactly the SDKConfig a library user gets."""
    from ccrotate._server.config import Settings
    from ccrotate._server.rotator import sdk_config

    settings = Settings()
    assert sdk_config(settings) == SDKConfig(upstream_url=settings.upstream_url,
                                             max_attempts=settings.max_attempts)
    changed = Settings(sdk_max_concurrent=9)
    assert sdk_config(changed) != SDKConfig(upstream_url=changed.upstream_url,
                                            max_attempts=changed.max_attempts)
