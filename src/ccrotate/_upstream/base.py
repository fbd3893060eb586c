"""The upstream seam: what the pipeline needs to send one request and stream its answer.

Like httpx's ``AsyncBaseTransport``, a transport is a small protocol with a
default and alternatives: :class:`~ccrotate.AiohttpUpstream` (the default, the
fastest measured), :class:`~ccrotate.HTTPXUpstream` (any ``httpx.AsyncClient``:
corporate proxies, custom TLS, ``pytest-httpx`` in tests) and
:class:`~ccrotate.ASGIUpstream` (an ASGI app in process, no socket). Every
transport maps its own errors to :class:`~ccrotate.UpstreamError` subclasses
at this boundary, keeping the original as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, Self, runtime_checkable

from ccrotate._exceptions import ConfigError

__all__ = ["HeaderLookup", "RawHeaders", "Timeouts", "Transport", "Upstream",
           "UpstreamResponse"]

DEFAULT_BODY_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Upstream timeouts in seconds. ``read`` is the longest silence between two chunks.

    Parameters:
        connect: seconds to open a connection.
        read: seconds of silence allowed between two chunks of a response.
        pool_size: most concurrent upstream connections.
    """

    connect: float = 10.0
    read: float = 600.0
    pool_size: int = 512

    def __post_init__(self) -> None:
        for name in ("connect", "read"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"Timeouts.{name} must be a positive number of seconds, "
                                  f"not {value!r}")
        if self.pool_size < 1:
            raise ConfigError(f"Timeouts.pool_size must be at least 1, not {self.pool_size!r}")


class HeaderLookup(Protocol):
    """Case-insensitive access to response headers (callers use lower-case names)."""

    def get(self, key: str, /) -> str | None:
        """The first value of ``key``, or ``None``."""
        ...


class RawHeaders:
    """A :class:`HeaderLookup` over raw header pairs: case-insensitive, first value wins.

    The mapping is built on the first ``get``: a response whose headers nobody asks
    for (most of them, on the proxy's hot path) never pays for it.
    """

    __slots__ = ("_first", "_raw")

    def __init__(self, raw: Sequence[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._first: dict[str, str] | None = None

    def get(self, key: str, /) -> str | None:
        """The first value of ``key`` (any case), or ``None``."""
        first = self._first
        if first is None:
            # Reversed, so the first of repeated headers wins (as in a multidict's get).
            first = self._first = {k.decode("latin-1").lower(): v.decode("latin-1")
                                   for k, v in reversed(self._raw)}
        return first.get(key) if key.islower() else first.get(key.lower())


@runtime_checkable
class UpstreamResponse(Protocol):
    """One upstream response whose head has arrived; the body streams on demand.

    Its owner always calls :meth:`aclose` (idempotent), on every path, so the
    connection goes back to the pool or is dropped.
    """

    @property
    def status(self) -> int:
        """The HTTP status code."""
        ...

    @property
    def headers(self) -> HeaderLookup:
        """Case-insensitive header lookup."""
        ...

    @property
    def raw_headers(self) -> Sequence[tuple[bytes, bytes]]:
        """Header pairs as received (names in any case; multi-valued headers repeat)."""
        ...

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-case (``""`` when absent)."""
        ...

    @property
    def content_encoding(self) -> str | None:
        """The upstream ``content-encoding``; bytes are passed on still encoded."""
        ...

    async def read(self, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
        """The whole raw body; :class:`~ccrotate.UpstreamProtocolError` past ``limit`` bytes."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """Raw body chunks as they arrive (no decompression, no re-chunking)."""
        ...

    async def aclose(self) -> None:
        """Release the connection (idempotent)."""
        ...


@runtime_checkable
class Upstream(Protocol):
    """Sends one request upstream and returns once the response head has arrived.

    ``start`` and ``aclose`` bracket its life (both idempotent); ``send`` raises only
    :class:`~ccrotate.UpstreamError` subclasses.
    """

    async def start(self) -> None:
        """Open connection pools (idempotent)."""
        ...

    async def aclose(self) -> None:
        """Close every connection (idempotent)."""
        ...

    async def send(self, method: str, url: str, headers: Sequence[tuple[str, str]],
                   body: bytes | None) -> UpstreamResponse:
        """Send ``method url`` with ``headers`` and ``body``; the answer streams."""
        ...


class Transport:
    """The lifecycle every bundled transport shares: ``async with`` is ``start``/``aclose``."""

    async def start(self) -> None:
        """Open connection pools (idempotent)."""

    async def aclose(self) -> None:
        """Close every connection (idempotent)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
