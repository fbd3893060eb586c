"""Client authentication: which callers may use the proxy and the admin routes."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

from ccrotate._exceptions import ConfigError

__all__ = ["ClientAuth", "presented_token"]


def presented_token(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """The key a client presents: ``x-api-key``, else ``Authorization: Bearer``."""
    bearer: bytes | None = None
    for key, value in headers:
        if key == b"x-api-key":
            return value.strip()
        if key == b"authorization" and value[:7].lower() == b"bearer ":
            bearer = value[7:].strip()
    return bearer


class ClientAuth:
    """Checks a presented key against the configured ones in constant time.

    Keys are kept as SHA-256 digests and compared with :func:`hmac.compare_digest`
    against every configured key, so neither the length nor the position of a
    match shows in the timing. Call it with ASGI headers: ``auth(scope["headers"])``.
    """

    def __init__(self, tokens: Iterable[str]) -> None:
        # No message here quotes a token: a near-miss one is still a secret.
        if isinstance(tokens, str | bytes):
            raise ConfigError("ClientAuth.tokens: pass a list of tokens, not one string "
                              "(a string would be read as one token per character)")
        keys = list(tokens)
        for i, t in enumerate(keys):
            if not isinstance(t, str) or not t.strip():
                # An empty key would let an empty Authorization header in, or be a typo.
                raise ConfigError(f"ClientAuth.tokens[{i}]: must be a non-empty string "
                                  f"(got {type(t).__name__} of length "
                                  f"{len(t) if isinstance(t, str) else '?'})")
        if not keys:
            raise ConfigError("ClientAuth.tokens: needs at least one token")
        self._digests = [hashlib.sha256(t.encode()).digest() for t in keys]

    def __call__(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        token = presented_token(headers)
        if not token:
            return False
        digest = hashlib.sha256(token).digest()
        ok = False
        for known in self._digests:
            ok |= hmac.compare_digest(digest, known)
        return ok

    def __repr__(self) -> str:
        return f"ClientAuth(<{len(self._digests)} tokens>)"
