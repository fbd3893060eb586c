"""What the fake remembers about each request, and how it reads credentials and bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ccrotate.testing._wire import mask

CredentialKind = Literal["api_key", "oauth"]

_SECRET_HEADERS = frozenset({"x-api-key", "authorization"})
_SECRET_FIELDS = frozenset({"refresh_token", "access_token", "code", "code_verifier"})


@dataclass(eq=False)
class RecordedRequest:
    """One request as the fake saw it.

    ``headers`` are lower-cased ``(name, value)`` pairs in arrival order; ``json`` is the
    parsed body (``None`` when the body is not JSON); ``credential`` is the presented
    credential and ``kind`` what the fake took it for: the kind it was registered as, else
    by prefix (``sk-ant-oat…`` OAuth, ``sk-ant-api…`` API key), else by header
    (``x-api-key``: API key, ``Authorization: Bearer``: the fake's ``bearer_kind``). The
    anthropic SDK sends API keys as ``Bearer`` too, which is why the header comes last.
    ``status`` is the status answered and ``cancelled`` whether the client went away
    before the response was complete. ``sent_bytes`` counts the response body bytes the
    server has taken so far (a streamed reply's progress: a slow client holds it back).
    ``repr()`` masks credentials.
    """

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    json: Any
    credential: str | None
    kind: CredentialKind | None
    time: float
    status: int | None = None
    cancelled: bool = False
    sent_bytes: int = 0

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def betas(self) -> list[str]:
        """The ``anthropic-beta`` flags, from every such header, in order."""
        return [flag.strip() for key, value in self.headers if key == "anthropic-beta"
                for flag in value.split(",") if flag.strip()]

    def __repr__(self) -> str:
        headers = tuple((k, mask(v) if k in _SECRET_HEADERS else v) for k, v in self.headers)
        shown = self.json
        if isinstance(shown, dict):
            shown = {k: mask(v) if k in _SECRET_FIELDS and isinstance(v, str) else v
                     for k, v in shown.items()}
        body = repr(shown)
        if len(body) > 200:
            body = body[:200] + "…"
        return (f"RecordedRequest(method={self.method!r}, path={self.path!r}, "
                f"query={self.query!r}, credential={mask(self.credential)!r}, "
                f"kind={self.kind!r}, status={self.status!r}, cancelled={self.cancelled!r}, "
                f"headers={headers!r}, json={body})")


def credential_of(headers: dict[str, str]) -> tuple[str | None, CredentialKind | None]:
    """The presented credential and the kind its header suggests."""
    # x-api-key wins when both are sent, as it does upstream.
    if key := headers.get("x-api-key", "").strip():
        return key, "api_key"
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), "oauth"
    return None, None


def kind_by_shape(credential: str) -> CredentialKind | None:
    if credential.startswith("sk-ant-oat"):
        return "oauth"
    if credential.startswith("sk-ant-api"):
        return "api_key"
    return None


def request_problem(body: Any, *, need_max_tokens: bool) -> str | None:
    """The validation message the real API would give, or ``None`` when valid."""
    if not isinstance(body, dict):
        return "There was an issue parsing your request body as a JSON object."
    fields: list[tuple[str, type, str]] = [("model", str, "a valid string")]
    if need_max_tokens:
        fields.append(("max_tokens", int, "a valid integer"))
    fields.append(("messages", list, "a valid list"))
    for name, kind, what in fields:
        value = body.get(name)
        if value is None:
            return f"{name}: Field required"
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{name}: Input should be {what}"
    if not body["messages"]:
        return "messages: at least one message is required"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream: Input should be a valid boolean"
    return None
