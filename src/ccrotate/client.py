"""Client-side rotation for the Anthropic SDK, with no ccrotate server.

``httpx2`` transports that rotate each request over an :class:`~ccrotate.AccountPool`::

    import anthropic, httpx2
    from ccrotate.client import RotatingTransport

    client = anthropic.Anthropic(api_key="unused",
                                 http_client=httpx2.Client(transport=RotatingTransport(pool)))

Importing this module imports ``httpx2``; ``import ccrotate`` alone does not.
"""

from __future__ import annotations

from ccrotate._client.transport import AsyncRotatingTransport, RotatingTransport

__all__ = ["AsyncRotatingTransport", "RotatingTransport"]
