"""The Anthropic dialect: Messages API clients, answered byte for byte as the upstream did.

``/v1/messages`` and ``/v1/messages/count_tokens`` peek at the body (model,
stream, session key, whether Claude Code's identity is already there);
``/v1/models`` forwards as is. Answers pass through untouched, with the
account named in ``x-ccrotate-account``; a stream that dies or ends early gets
a final ``event: error`` the SDKs raise.
"""

from __future__ import annotations

import msgspec

from ccrotate._asgi import api_path
from ccrotate._pool.strategy import SelectionContext
from ccrotate._proxy.attempts import Attempt, Failed, Won
from ccrotate._proxy.dialects.base import ClientRequest, Headers, Prepared
from ccrotate._proxy.headers import request_headers, response_headers
from ccrotate._proxy.session import session_key
from ccrotate._upstream.providers import OutgoingRequest
from ccrotate._wire import error_event, needs_identity, peek_request

__all__ = ["ANTHROPIC", "AnthropicRoute"]


class _Stream:
    __slots__ = ()
    passthrough = True
    """feed() returns its chunk unchanged: the pipeline may skip calling it."""

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def finish(self, ended_early: bool) -> bytes:
        return error_event("api_error", "ccrotate: upstream stream ended early") \
            if ended_early else b""

    def fail(self, message: str) -> bytes | None:
        return error_event("api_error", f"ccrotate: upstream stream failed: {message}")


class _EncodedStream(_Stream):
    # Still-encoded bytes (the upstream ignored accept-encoding: identity): a plain-text
    # error event would corrupt them. Abort instead, so the server drops the connection
    # and the client sees a truncated body.
    __slots__ = ()

    def fail(self, message: str) -> bytes | None:
        return None


_STREAM = _Stream()
_ENCODED = _EncodedStream()


class AnthropicAdapter:
    """Answers Anthropic clients with the upstream's own bytes."""

    __slots__ = ()

    def error(self, failed: Failed) -> Failed:
        return Failed(failed.status, failed.client_headers(), failed.body)

    def head(self, won: Won) -> tuple[int, Headers]:
        headers = response_headers(won.response.raw_headers)
        headers.append((b"x-ccrotate-account", won.account.name.encode()))
        return won.response.status, headers

    def body(self, won: Won, raw: bytes) -> bytes:
        return raw

    def stream(self, won: Won) -> _Stream:
        # Encoded bytes (no scanner could read them) cannot take an error event.
        return _STREAM if won.scanner is not None else _ENCODED


ANTHROPIC = AnthropicAdapter()


class AnthropicRoute:
    """``/v1/messages``, ``/v1/messages/count_tokens`` and ``/v1/models`` for Anthropic clients.

    Parameters:
        name: ``messages``, ``count_tokens`` or ``models``.
        method: the HTTP method the route accepts.
    """

    __slots__ = ("method", "name")

    def __init__(self, name: str, method: str) -> None:
        self.name = name
        self.method = method

    def refusal(self, failed: Failed) -> Failed:
        return failed

    async def prepare(self, request: ClientRequest) -> Prepared | Failed:
        scope, record = request.scope, request.record
        wants_identity = False
        if self.name == "models":
            context = SelectionContext(headers=scope["headers"])
        else:
            try:
                peek = peek_request(request.body)
            except msgspec.ValidationError as exc:
                record.error_type = "invalid_request_error"
                return Failed.of(400, "invalid_request_error",
                                 f"ccrotate: invalid request body ({exc})")
            except msgspec.DecodeError as exc:
                record.error_type = "invalid_request_error"
                return Failed.of(400, "invalid_request_error",
                                 f"ccrotate: request body is not valid JSON ({exc})")
            record.model, record.stream = peek.model, peek.stream
            wants_identity = self.name == "messages" and needs_identity(peek.system)
            user = peek.metadata.user_id if peek.metadata is not None else None
            pool = request.loop.pool
            # Affinity off: no key, and no prefix hash spent on it.
            key = session_key(user, scope["headers"], request.body, pool.session_header) \
                if pool.affinity else None
            context = SelectionContext(model=peek.model, session_key=key,
                                       headers=scope["headers"])
        fwd, beta, pinned = request_headers(scope["headers"])
        query = scope.get("query_string", b"")
        path = api_path(scope) + ("?" + query.decode("latin-1") if query else "")
        outgoing = OutgoingRequest(scope["method"], path, fwd, beta, request.body or None,
                                   wants_identity)
        return Prepared(Attempt(outgoing, pinned, context), ANTHROPIC,
                        usage_from_body=self.name == "messages")
