"""SDK mode: each request is run by Claude Code itself, through the Claude Agent SDK.

Owns the ``/sdk`` app (:class:`~ccrotate._sdk.app.SDKApp`), its settings, the agent
process (a Claude Code CLI per call, with an allow-listed environment and one pooled
account's credential) and the rendering of the agent's messages as Messages API (and,
through the OpenAI dialect's adapters, chat completions) answers.

Imports ``_proxy`` (observers, the OpenAI translator), ``_pool``, ``_accounts`` and the
base modules. ``claude_agent_sdk`` (the optional ``ccrotate[sdk]`` extra) is imported only
by :mod:`ccrotate._sdk.agent`, and that module only when SDK mode starts.
"""
