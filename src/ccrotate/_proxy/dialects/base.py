"""What a dialect plugs into the pipeline: a route that prepares, an adapter that answers.

The pipeline owns everything the dialects share (client auth, the body read,
the attempt loop, the disconnect watcher, the relay loop, usage accounting);
a dialect only says how its client's request becomes an :class:`Attempt` and
how the outcome is shown to that client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ccrotate._asgi import Scope
from ccrotate._proxy.attempts import Attempt, AttemptLoop, Failed, Won
from ccrotate._proxy.record import RequestRecord

__all__ = ["ClientRequest", "Prepared", "ResponseAdapter", "Route", "StreamAdapter"]

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class ClientRequest:
    """A client request whose body has been read, as a route sees it."""

    scope: Scope
    body: bytes
    record: RequestRecord
    loop: AttemptLoop
    """For routes that need an upstream call of their own (the OpenAI model capabilities)."""


class StreamAdapter(Protocol):
    """Rewrites one streamed answer chunk by chunk (the SSE scanner runs in the pipeline)."""

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send the client for an upstream chunk (may be empty)."""
        ...

    def finish(self, ended_early: bool) -> bytes:
        """The last bytes once the upstream ended; ``ended_early``: no ``message_stop``."""
        ...

    def fail(self, message: str) -> bytes | None:
        """The last bytes when the upstream died mid-stream; ``None`` aborts the connection."""
        ...


class ResponseAdapter(Protocol):
    """Shows the pipeline's outcome to one dialect's client."""

    def error(self, failed: Failed) -> Failed:
        """``failed`` (Anthropic's shape, naming its account) as this client expects it."""
        ...

    def head(self, won: Won) -> tuple[int, Headers]:
        """Status and headers for a winning answer."""
        ...

    def body(self, won: Won, raw: bytes) -> bytes:
        """A whole (non-streamed) answer; raises ``UpstreamProtocolError`` if unreadable."""
        ...

    def stream(self, won: Won) -> StreamAdapter:
        """A fresh adapter for one streamed answer."""
        ...


@dataclass(slots=True)
class Prepared:
    """A request ready for the attempt loop, and how to answer it."""

    attempt: Attempt
    adapter: ResponseAdapter
    usage_from_body: bool = False
    """Count tokens from a whole answer's ``usage`` (Messages answers only)."""


class Route(Protocol):
    """One endpoint of a dialect."""

    name: str
    """The route as records and metrics name it (``messages``, ``chat_completions`` …)."""
    method: str

    def refusal(self, failed: Failed) -> Failed:
        """A refusal made before any account was involved, in this client's shape."""
        ...

    async def prepare(self, request: ClientRequest) -> Prepared | Failed:
        """The attempt to run, or an error to answer at once (a bad body)."""
        ...

