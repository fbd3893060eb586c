"""One Claude Code agent process, run through the Claude Agent SDK for one pooled account.

This is the only module that imports ``claude_agent_sdk`` (the ``ccrotate[sdk]`` extra),
and it is imported only when SDK mode starts.

The SDK's own subprocess transport hands the agent the whole environment of the server
(``os.environ`` merged with ``options.env``): the admin token, the accounts' paths, any
cloud credentials. :class:`_Transport` keeps the SDK's command line, message framing and
control protocol and replaces only the spawn: the agent gets an environment built from
an allow-list plus the one credential it needs, its own session (process group) so the
tools it starts die with it, and stderr into a file of its temporary home.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from subprocess import PIPE
from typing import Any

import anyio
from anyio.streams.text import TextReceiveStream, TextSendStream
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ClaudeSDKError,
    ResultMessage,
    StreamEvent,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)
from claude_agent_sdk import __version__ as sdk_version

# Private, and the one seam that lets the spawn be replaced (see the module docstring);
# pyproject pins the SDK's minor version and tests/test_sdk_mode.py runs it for real.
from claude_agent_sdk._internal.transport.subprocess_cli import SubprocessCLITransport

from ccrotate._accounts.model import Account, AccountKind
from ccrotate._sdk.config import BASE_ENV, SDKConfig
from ccrotate._sdk.events import (
    AgentError,
    AgentEvent,
    BlockStart,
    BlockStop,
    Failure,
    Result,
    TextDelta,
    ToolCall,
    ToolOutput,
    TurnText,
)

__all__ = ["AgentProcess", "agent_env", "bundled_cli"]

Sink = Callable[[AgentEvent], Awaitable[None]]

# Nothing but the upstream may be contacted, and failover is the pool's job: a retry
# inside the agent would hide a rate limit from the pool and could sleep for minutes.
_QUIET = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
          "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1",
          "CLAUDE_CODE_MAX_RETRIES": "0", "CLAUDE_CODE_ENTRYPOINT": "sdk-py",
          # The SDK's Query waits for these frames to know a turn is over.
          "CLAUDE_CODE_SDK_READS_SESSION_STATE": "1"}


def bundled_cli() -> str | None:
    """The Claude Code executable shipped in the SDK's wheel, if any."""
    import claude_agent_sdk

    path = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    return str(path) if path.is_file() else None


def agent_env(config: SDKConfig, account: Account, home: Path,
              source: dict[str, str] | None = None) -> dict[str, str]:
    """The agent's whole environment: allow-listed variables, its home, one credential."""
    source = dict(os.environ) if source is None else source
    env = {name: source[name] for name in (*BASE_ENV, *config.env_allow) if name in source}
    env.update(_QUIET)
    env.update(HOME=str(home), CLAUDE_CONFIG_DIR=str(home),
               ANTHROPIC_BASE_URL=account.base_url or config.upstream_url,
               CLAUDE_AGENT_SDK_VERSION=sdk_version)
    secret = account.credential.reveal()
    if account.kind is AccountKind.OAUTH:
        env["CLAUDE_CODE_OAUTH_TOKEN"] = secret
    else:
        env["ANTHROPIC_API_KEY"] = secret
    return env


class _Transport(SubprocessCLITransport):
    """The SDK's transport with the spawn replaced (see the module docstring)."""

    def __init__(self, options: ClaudeAgentOptions, env: dict[str, str],
                 stderr_path: Path) -> None:
        super().__init__(prompt="", options=options)
        self._agent_env = env
        self._stderr_path = stderr_path
        self.pid: int | None = None

    async def connect(self) -> None:
        if self._process:
            return
        cmd = self._build_command()
        with self._stderr_path.open("wb") as stderr:  # the child keeps its own copy
            self._process = await anyio.open_process(
                cmd, stdin=PIPE, stdout=PIPE, stderr=stderr, cwd=self._cwd,
                env=self._agent_env, start_new_session=True)
        self.pid = self._process.pid
        if self._process.stdout:
            self._stdout_stream = TextReceiveStream(self._process.stdout)
        if self._process.stdin:
            self._stdin_stream = TextSendStream(self._process.stdin)
        self._ready = True

    def kill(self) -> None:
        """SIGKILL the agent and everything it started (its process group)."""
        if self.pid is None or (self._process is not None
                                and self._process.returncode is not None):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def _options(config: SDKConfig, *, model: str, system: Path | None, cwd: Path,
             partial: bool) -> ClaudeAgentOptions:
    builtin = [t for t in config.allowed_tools if not t.startswith("mcp__")]
    return ClaudeAgentOptions(
        # The client's system prompt replaces Claude Code's; without one the agent is
        # Claude Code as it ships (its tools described, its conventions). A file, not an
        # argument: one argument may not exceed 128 KiB on Linux.
        system_prompt={"type": "file", "path": str(system)} if system is not None
        else {"type": "preset", "preset": "claude_code"},
        tools=builtin, allowed_tools=list(config.allowed_tools),
        permission_mode=config.permission_mode,  # type: ignore[arg-type]
        mcp_servers=(str(config.mcp_servers) if isinstance(config.mcp_servers, Path)
                     else dict(config.mcp_servers)),
        strict_mcp_config=True,
        cwd=str(cwd), model=model, max_turns=config.max_turns,
        include_partial_messages=partial,
        # No user, project or local settings: the host's ~/.claude is not the agent's.
        setting_sources=[],
        cli_path=str(config.cli_path) if config.cli_path else bundled_cli())


class AgentProcess:
    """One agent: start it, ask it (once, or again for a warm session), close it.

    Parameters:
        config: SDK mode's settings.
        account: the pooled account whose credential the agent gets.
        model: the model the agent runs on.
        system: the system prompt (``None``: Claude Code's own).
        home: the agent's ``HOME`` and ``CLAUDE_CONFIG_DIR`` (its sessions, its stderr).
        cwd: its working directory.
        partial: stream the model's text as it comes (for streamed answers).
    """

    def __init__(self, config: SDKConfig, account: Account, *, model: str,
                 system: str | None, home: Path, cwd: Path, partial: bool) -> None:
        self.account = account
        self.model = model
        self.stderr_path = home / "agent-stderr.log"
        system_path = None
        if system is not None:
            system_path = home / "system-prompt.txt"
            system_path.write_text(system, encoding="utf-8")
        options = _options(config, model=model, system=system_path, cwd=cwd, partial=partial)
        self._transport = _Transport(options, agent_env(config, account, home),
                                     self.stderr_path)
        self._client = ClaudeSDKClient(options, transport=self._transport)
        self.session_id: str | None = None

    @property
    def pid(self) -> int | None:
        """The agent process's id once started."""
        return self._transport.pid

    async def start(self) -> None:
        """Spawn the agent and run the SDK's handshake; raises :class:`AgentError`."""
        try:
            await self._client.connect()
        except ClaudeSDKError as exc:
            raise AgentError(f"the agent did not start: {type(exc).__name__}") from exc

    async def ask(self, content: list[dict[str, Any]], sink: Sink) -> None:
        """Send one user turn and hand every event of the agent's answer to ``sink``.

        Raises :class:`AgentError` when the process fails (not for Messages API errors:
        those arrive as :class:`Failure` and :class:`Result` events)."""

        async def one_turn() -> AsyncIterator[dict[str, Any]]:
            yield {"type": "user", "message": {"role": "user", "content": content},
                   "parent_tool_use_id": None}

        try:
            await self._client.query(one_turn(), session_id=self.session_id or "default")
            async for message in self._client.receive_response():
                for event in _events(message):
                    if isinstance(event, Result):
                        self.session_id = event.session_id
                    await sink(event)
        except ClaudeSDKError as exc:
            # The message names the exit code and the SDK's reading of it, no secrets.
            raise AgentError(f"the agent failed: {exc}"[:300]) from exc

    async def close(self, *, kill: bool) -> None:
        """Stop the agent (``kill``: at once, with everything it started) and reap it."""
        with anyio.CancelScope(shield=True):
            if kill:
                self._transport.kill()
            # Bounded: the SDK's close waits up to 5 s for a graceful exit, then signals.
            with anyio.move_on_after(15):
                await self._client.disconnect()
            self._transport.kill()

    def stderr_tail(self, limit: int = 2000) -> str:
        """The end of the agent's stderr (for the server's debug log)."""
        try:
            data = self.stderr_path.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace")


def _events(message: object) -> list[AgentEvent]:
    # Sub-agents' messages carry a parent tool use: their steps are not the answer.
    if getattr(message, "parent_tool_use_id", None) is not None:
        return []
    if isinstance(message, StreamEvent):
        return _stream_events(message.event)
    if isinstance(message, AssistantMessage):
        return _assistant_events(message)
    if isinstance(message, UserMessage) and isinstance(message.content, list):
        return [ToolOutput(block.tool_use_id, _result_text(block.content),
                           bool(block.is_error))
                for block in message.content if isinstance(block, ToolResultBlock)]
    if isinstance(message, ResultMessage):
        return [Result(session_id=message.session_id, is_error=message.is_error,
                       num_turns=message.num_turns, duration_ms=message.duration_ms,
                       stop_reason=message.stop_reason, cost_usd=message.total_cost_usd,
                       usage=dict(message.usage or {}),
                       api_error_status=message.api_error_status, text=message.result,
                       subtype=message.subtype)]
    return []


def _stream_events(event: dict[str, Any]) -> list[AgentEvent]:
    kind = event.get("type")
    if kind == "content_block_start":
        block = event.get("content_block") or {}
        return [BlockStart()] if block.get("type") == "text" else []
    if kind == "content_block_delta":
        delta = event.get("delta") or {}
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [TextDelta(str(delta["text"]))]
        return []
    if kind == "content_block_stop":
        return [BlockStop()]
    return []


def _assistant_events(message: AssistantMessage) -> list[AgentEvent]:
    if message.error is not None:
        text = " ".join(b.text for b in message.content if isinstance(b, TextBlock))
        return [Failure(message.error, text or message.error)]
    turn = message.message_id or ""
    events: list[AgentEvent] = []
    for block in message.content:
        if isinstance(block, TextBlock):
            events.append(TurnText(turn, block.text))
        elif isinstance(block, ToolUseBlock):
            events.append(ToolCall(block.id, block.name, dict(block.input)))
    return events


def _result_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = [str(item.get("text", "")) if isinstance(item, dict) else str(item)
             for item in content]
    return "\n".join(parts)

