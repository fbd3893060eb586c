"""How SDK mode behaves: one immutable, validated :class:`SDKConfig`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from ccrotate._exceptions import ConfigError

__all__ = ["BASE_ENV", "PERMISSION_MODES", "TOOL_STEPS", "SDKConfig", "ToolSteps"]

ToolSteps = Literal["forward", "formatted", "ignore"]
TOOL_STEPS: tuple[str, ...] = ("forward", "formatted", "ignore")
PERMISSION_MODES: tuple[str, ...] = (
    "default", "acceptEdits", "plan", "bypassPermissions", "dontAsk")

BASE_ENV: tuple[str, ...] = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE",
                             "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS")
"""Variables of the server's environment the agent always inherits (when set): what a
process needs to run and to verify TLS, nothing that could carry a secret."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SDKConfig:
    """How SDK mode runs agents. Immutable, checked when built; hand it to ``SDKApp``.

    Parameters:
        upstream_url: the Messages API the agent talks to (an account's own ``baseUrl``
            wins), given to it as ``ANTHROPIC_BASE_URL``.
        tool_steps: what the client sees of the agent's tool calls and results:
            ``"ignore"`` (the final answer only), ``"formatted"`` (as text) or
            ``"forward"`` (as ``tool_use``/``tool_result`` content blocks).
        allowed_tools: the built-in tools (``"Read"``, ``"Bash"``…) and MCP tools
            (``"mcp__server__tool"``) the agent may use; every other tool is off.
        permission_mode: Claude Code's permission mode for the agent.
        mcp_servers: MCP server configurations by name (Claude Code's ``mcpServers``), or
            the path of a JSON file holding them (Claude Code reads it).
        workspace: the agent's working directory; ``None``: a fresh temporary one per call.
        max_concurrent: agent processes running at once.
        queue_timeout: seconds a call waits for a free process slot (429 beyond).
        deadline: seconds one call may run, from its start to its last byte (504 beyond).
        session_ttl: seconds an idle ``/sdk/{session_id}`` session keeps its agent warm.
        env_allow: further variables of the server's environment the agent inherits, on
            top of :data:`BASE_ENV`. Secrets of the proxy never reach it otherwise.
        cli_path: the Claude Code executable; ``None``: the one bundled with the SDK.
        max_turns: agent turns (model calls) per request.
        max_attempts: accounts tried per call when one is rate limited before any output.
    """

    upstream_url: str = "https://api.anthropic.com"
    tool_steps: ToolSteps = "ignore"
    allowed_tools: tuple[str, ...] = ()
    permission_mode: str = "default"
    mcp_servers: Mapping[str, Any] | Path = field(
        default_factory=lambda: MappingProxyType({}))
    workspace: Path | None = None
    max_concurrent: int = 4
    queue_timeout: float = 10.0
    deadline: float = 600.0
    session_ttl: float = 600.0
    env_allow: tuple[str, ...] = ()
    cli_path: Path | None = None
    max_turns: int = 20
    max_attempts: int = 4

    def __post_init__(self) -> None:
        if not self.upstream_url.startswith(("http://", "https://")):
            raise ConfigError("SDKConfig.upstream_url must start with http:// or https://, "
                              f"not {self.upstream_url!r}")
        if self.tool_steps not in TOOL_STEPS:
            raise ConfigError(f"SDKConfig.tool_steps must be one of {', '.join(TOOL_STEPS)}, "
                              f"not {self.tool_steps!r}")
        if self.permission_mode not in PERMISSION_MODES:
            raise ConfigError("SDKConfig.permission_mode must be one of "
                              f"{', '.join(PERMISSION_MODES)}, not {self.permission_mode!r}")
        if isinstance(self.allowed_tools, str) or isinstance(self.env_allow, str):
            raise ConfigError("SDKConfig.allowed_tools and env_allow take a tuple of names, "
                              "not one string")
        for name, value in (("max_concurrent", self.max_concurrent),
                            ("max_turns", self.max_turns), ("max_attempts", self.max_attempts)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SDKConfig.{name} must be an integer >= 1, not {value!r}")
        for name, seconds in (("queue_timeout", self.queue_timeout),
                              ("deadline", self.deadline), ("session_ttl", self.session_ttl)):
            if not 0 <= seconds < math.inf or (name != "queue_timeout" and seconds == 0):
                raise ConfigError(f"SDKConfig.{name} must be a finite number of seconds "
                                  f"{'>=' if name == 'queue_timeout' else '>'} 0, "
                                  f"not {seconds!r}")
        object.__setattr__(self, "allowed_tools", tuple(self.allowed_tools))
        object.__setattr__(self, "env_allow", tuple(self.env_allow))
        if not isinstance(self.mcp_servers, Path):
            object.__setattr__(self, "mcp_servers", MappingProxyType(dict(self.mcp_servers)))
