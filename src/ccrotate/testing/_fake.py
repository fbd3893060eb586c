"""FakeUpstream: an ASGI app that answers like ``api.anthropic.com``, scripted per credential."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from starlette.types import Receive, Scope, Send

from ccrotate.testing import _wire as wire
from ccrotate.testing._asgi import Plan, lifespan, quiet_uvicorn_cuts, read_body, respond
from ccrotate.testing._behaviours import Behaviour, RateLimited, Reply
from ccrotate.testing._oauth import FakeOAuth
from ccrotate.testing._records import (
    CredentialKind,
    RecordedRequest,
    credential_of,
    kind_by_shape,
    request_problem,
)
from ccrotate.testing._replies import ReplyPlanner
from ccrotate.testing._sync import Tally

_JSON = (b"content-type", b"application/json")

quiet_uvicorn_cuts()


class FakeUpstream:
    """A fake Anthropic API (Messages, count_tokens, models, OAuth) as an ASGI app.

    Every ``/v1/messages`` request takes the next one-shot behaviour scripted for its
    credential (:meth:`script`), else one scripted for any credential
    (:meth:`script_any`), else the credential's persistent default (:meth:`set_default`),
    else ``default`` (a plain :class:`Reply`). Any credential is accepted unless revoked,
    expired, or, with ``strict_auth=True``, not registered. Safe to script from another
    thread than the one serving it.

    A credential is an OAuth access token or an API key by registration, else by prefix
    (``sk-ant-oat…`` / ``sk-ant-api…``), else by header: ``x-api-key`` is an API key and a
    ``Bearer`` token is ``bearer_kind`` (OAuth by default; the anthropic SDK sends API keys
    as ``Bearer`` too, so pick ``"api_key"`` to let it use made-up keys). OAuth
    credentials must send the ``oauth-2025-04-20`` beta and, with ``enforce_identity``,
    open ``system`` with a Claude Code identity line.
    """

    def __init__(self, *, default: Behaviour | None = None,
                 models: Sequence[str] = wire.DEFAULT_MODELS, strict_auth: bool = False,
                 enforce_identity: bool = True, known_models_only: bool = False,
                 limits: wire.Limits | None = None,
                 bearer_kind: CredentialKind = "oauth") -> None:
        self.default: Behaviour = default or Reply()
        self.models = list(models)
        self.strict_auth = strict_auth
        self.enforce_identity = enforce_identity
        self.known_models_only = known_models_only
        self.bearer_kind: CredentialKind = bearer_kind
        self.started = time.time()
        self.oauth = FakeOAuth(self._accept_access_token)
        self._planner = ReplyPlanner(self)
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Behaviour]] = {}
        self._any: deque[Behaviour] = deque()
        self._defaults: dict[str, Behaviour] = {}
        self._limits: dict[str | None, wire.Limits] = {None: limits or wire.Limits()}
        self._kinds: dict[str, CredentialKind] = {}
        self._revoked: set[str] = set()
        self._expires: dict[str, float] = {}
        self._requests: list[RecordedRequest] = []
        self._usage: dict[str, tuple[int, int]] = {}
        self._cancelled = Tally()

    # -- scripting ------------------------------------------------------------------

    def script(self, credential: str, *behaviours: Behaviour) -> None:
        """Queue one-shot behaviours for the next ``/v1/messages`` requests of ``credential``."""
        with self._lock:
            self._queues.setdefault(credential, deque()).extend(behaviours)

    def script_any(self, *behaviours: Behaviour) -> None:
        """Queue one-shot behaviours for the next requests of whichever credential."""
        with self._lock:
            self._any.extend(behaviours)

    def pending(self, credential: str | None = None) -> int:
        """One-shot behaviours not consumed yet (for ``credential``, or the shared queue)."""
        with self._lock:
            queue = self._any if credential is None else self._queues.get(credential, ())
            return len(queue)

    def set_default(self, credential: str, behaviour: Behaviour | None) -> None:
        """Set (``None``: remove) the persistent behaviour of ``credential``."""
        with self._lock:
            if behaviour is None:
                self._defaults.pop(credential, None)
            else:
                self._defaults[credential] = behaviour

    def set_limits(self, credential: str | None, limits: wire.Limits) -> None:
        """Rate-limit state reported for ``credential`` (``None``: for every other one)."""
        with self._lock:
            self._limits[credential] = limits

    def limits_for(self, credential: str | None) -> wire.Limits:
        """The rate-limit state in effect for ``credential``."""
        with self._lock:
            return self._limits.get(credential) or self._limits[None]

    def add_api_key(self, key: str | None = None) -> str:
        """Register an API key (a fresh ``sk-ant-api03-…`` if none given); returns it."""
        key = key or "sk-ant-api03-" + wire.make_id("key")[7:]
        with self._lock:
            self._kinds[key] = "api_key"
            self._revoked.discard(key)
        return key

    def add_access_token(self, token: str | None = None, *,
                         expires_in: float | None = None) -> str:
        """Register an OAuth access token, optionally expiring ``expires_in`` s from now."""
        token = token or "sk-ant-oat01-" + wire.make_id("tok")[7:]
        self._accept_access_token(token, None if expires_in is None else time.time() + expires_in)
        return token

    def _accept_access_token(self, token: str, expires_at: float | None) -> None:
        with self._lock:
            self._kinds[token] = "oauth"
            self._revoked.discard(token)
            if expires_at is not None:
                self._expires[token] = expires_at

    def revoke(self, credential: str) -> None:
        """Make ``credential`` answer 401 from now on."""
        with self._lock:
            self._revoked.add(credential)

    def expire(self, credential: str) -> None:
        """Make OAuth ``credential`` answer 401 "OAuth token has expired" from now on."""
        with self._lock:
            self._expires[credential] = 0.0

    # -- observation ----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (a snapshot), oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, credential: str | None = None, *, path: str | None = None,
                     method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests filtered by credential, exact path and/or method."""
        return [r for r in self.requests
                if (credential is None or r.credential == credential)
                and (path is None or r.path == path)
                and (method is None or r.method == method)]

    @property
    def last_request(self) -> RecordedRequest:
        """The most recent request; raises ``LookupError`` when there is none."""
        with self._lock:
            if not self._requests:
                raise LookupError("the fake upstream has received no request")
            return self._requests[-1]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def cancelled(self) -> int:
        """Responses the client abandoned before they were complete."""
        return self._cancelled.value

    def wait_cancelled(self, count: int = 1, timeout: float | None = 5.0) -> bool:
        """Block until ``cancelled`` reaches ``count``; ``False`` on timeout."""
        return self._cancelled.wait_for(count, timeout)

    async def wait_cancelled_async(self, count: int = 1) -> None:
        """Wait until ``cancelled`` reaches ``count``; bound it with ``anyio.fail_after``."""
        await self._cancelled.wait_for_async(count)

    # -- ASGI -----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        rec = self._record(scope, body)
        plan = self._route(rec)
        with self._lock:
            rec.status = plan.status
        plan.on_cancel = lambda: self._on_cancel(rec)
        plan.on_sent = lambda size: self._on_sent(rec, size)
        await respond(plan, receive, send)

    def _on_sent(self, rec: RecordedRequest, size: int) -> None:
        with self._lock:
            rec.sent_bytes += size

    def _on_cancel(self, rec: RecordedRequest) -> None:
        with self._lock:
            rec.cancelled = True
        self._cancelled.add()

    def _record(self, scope: Scope, body: bytes) -> RecordedRequest:
        headers = tuple((k.decode("latin-1").lower(), v.decode("latin-1"))
                        for k, v in scope["headers"])
        credential, kind = credential_of(dict(headers))
        if credential is not None:
            # The SDK sends API keys as Bearer too, so the token decides when it can.
            with self._lock:
                kind = self._kinds.get(credential) or kind_by_shape(credential) \
                    or (self.bearer_kind if kind == "oauth" else kind)
        parsed: Any = None
        if body[:1] in (b"{", b"["):
            # A malformed body stays recorded as raw bytes only.
            with contextlib.suppress(msgspec.DecodeError):
                parsed = wire.DECODER.decode(body)
        rec = RecordedRequest(scope["method"], scope["path"],
                              scope.get("query_string", b"").decode("latin-1"), headers, body,
                              parsed, credential, kind, time.time())
        with self._lock:
            self._requests.append(rec)
        return rec

    def _route(self, rec: RecordedRequest) -> Plan:
        method, path = rec.method, rec.path.rstrip("/")
        if method == "POST" and path == "/v1/messages":
            return self._messages(rec)
        if method == "POST" and path == "/v1/messages/count_tokens":
            return self._count_tokens(rec)
        if method == "GET" and path == "/v1/models":
            return self._models(rec)
        if method == "GET" and path.startswith("/v1/models/"):
            return self._model(rec, path.removeprefix("/v1/models/"))
        if method == "POST" and path == "/v1/oauth/token":
            status, body, delay = self.oauth.token_response(rec.body)
            return Plan(status, self._base_headers(), [body], delay=delay)
        if method == "GET" and path == "/oauth/authorize":
            status, headers, body = self.oauth.authorize_response(rec.query)
            return Plan(status, self._base_headers() + headers, [body])
        return self._error_plan(rec, 404, "not_found_error", "Not found")

    # -- endpoints ------------------------------------------------------------------

    def _base_headers(self, request_id: str | None = None) -> list[tuple[bytes, bytes]]:
        return [_JSON, (b"request-id", (request_id or wire.make_id("req")).encode())]

    def _limit_headers(self, rec: RecordedRequest, *, rate_limited: RateLimited | None = None,
                       tokens: int = 0) -> list[tuple[bytes, bytes]]:
        """Rate-limit headers for ``rec``'s credential; counts the request toward them."""
        if rec.credential is None:
            return []
        limits = self.limits_for(rec.credential)
        if rec.kind == "oauth":
            if rate_limited is not None:
                reset = time.time() + rate_limited.resets_in
                if rate_limited.claim == "seven_day":
                    limits = wire.Limits(five_hour=limits.five_hour, seven_day=1.0,
                                         seven_day_reset=reset, status="rejected",
                                         representative_claim="seven_day")
                else:
                    limits = wire.Limits(five_hour=1.0, seven_day=limits.seven_day,
                                         five_hour_reset=reset, status="rejected",
                                         representative_claim=rate_limited.claim)
            return wire.unified_limit_headers(limits, self.started)
        with self._lock:
            used_requests, used_tokens = self._usage.get(rec.credential, (0, 0))
            used_requests, used_tokens = used_requests + 1, used_tokens + tokens
            self._usage[rec.credential] = (used_requests, used_tokens)
        reset_in = rate_limited.resets_in if rate_limited is not None else 60.0
        return wire.api_key_limit_headers(limits, requests_used=used_requests,
                                          tokens_used=used_tokens, reset_in=reset_in,
                                          exhausted=rate_limited is not None)

    def _error_plan(self, rec: RecordedRequest, status: int, error_type: str, message: str, *,
                    details: Any = None, headers: Sequence[tuple[bytes, bytes]] = (),
                    delay: float = 0.0, limit_headers: bool = True,
                    body_extra: Mapping[str, Any] | None = None,
                    error_extra: Mapping[str, Any] | None = None) -> Plan:
        """A complete error response with Anthropic's error body (plus any extra fields)."""
        request_id = wire.make_id("req")
        doc = wire.error_body(error_type, message, request_id, details)
        doc["error"].update(error_extra or {})
        doc.update(body_extra or {})
        body = wire.encode(doc)
        all_headers = self._base_headers(request_id)
        if limit_headers:
            all_headers += self._limit_headers(rec)
        all_headers += headers
        return Plan(status, all_headers, [body], delay=delay)

    def _authenticate(self, rec: RecordedRequest) -> Plan | str:
        """The 401 answer for ``rec``, or its accepted credential."""
        cred = rec.credential
        if cred is None:
            return self._error_plan(rec, 401, "authentication_error",
                                    "x-api-key header is required", limit_headers=False)
        with self._lock:
            revoked = cred in self._revoked
            unknown = self.strict_auth and cred not in self._kinds
            expired = self._expires.get(cred, float("inf")) <= time.time()
        oauth = rec.kind == "oauth"
        if revoked or unknown:
            message = "Invalid bearer token" if oauth else "invalid x-api-key"
            return self._error_plan(rec, 401, "authentication_error", message)
        if expired:
            return self._error_plan(rec, 401, "authentication_error", "OAuth token has expired. "
                                    "Please obtain a new token or refresh your existing token.")
        if oauth and wire.OAUTH_BETA not in rec.betas:
            return self._error_plan(rec, 401, "authentication_error",
                                    "OAuth authentication is currently not supported.")
        return cred

    def _next_behaviour(self, credential: str) -> tuple[Behaviour, bool]:
        """The behaviour for this request, and whether it was scripted one-shot."""
        with self._lock:
            queue = self._queues.get(credential)
            if queue:
                return queue.popleft(), True
            if self._any:
                return self._any.popleft(), True
            return self._defaults.get(credential, self.default), False

    def _messages(self, rec: RecordedRequest) -> Plan:
        if isinstance(auth := self._authenticate(rec), Plan):
            return auth
        if (problem := request_problem(rec.json, need_max_tokens=True)) is not None:
            return self._error_plan(rec, 400, "invalid_request_error", problem)
        body: dict[str, Any] = rec.json
        if rec.kind == "oauth" and self.enforce_identity \
                and not wire.has_identity(body.get("system")):
            return self._error_plan(rec, 400, "invalid_request_error", "Error")
        if self.known_models_only and body["model"] not in self.models:
            return self._error_plan(rec, 404, "not_found_error", f"model: {body['model']}")
        behaviour, scripted = self._next_behaviour(auth)
        if not scripted and rec.kind == "oauth" \
                and self.limits_for(auth).overall_status() == "rejected":
            # Headers keep the configured limits (and their resets), as the real API does.
            return self._error_plan(rec, 429, "rate_limit_error", RateLimited.message)
        return self._planner.plan(rec, body, behaviour)

    def _count_tokens(self, rec: RecordedRequest) -> Plan:
        if isinstance(auth := self._authenticate(rec), Plan):
            return auth
        if (problem := request_problem(rec.json, need_max_tokens=False)) is not None:
            return self._error_plan(rec, 400, "invalid_request_error", problem)
        body = wire.encode({"input_tokens": wire.estimate_tokens(rec.json)})
        return Plan(200, self._base_headers() + self._limit_headers(rec), [body])

    def _models(self, rec: RecordedRequest) -> Plan:
        if isinstance(auth := self._authenticate(rec), Plan):
            return auth
        params = dict(parse_qsl(rec.query))
        entries = [wire.model_info(m, i) for i, m in enumerate(self.models)]
        ids = [e["id"] for e in entries]
        if params.get("after_id") in ids:
            entries = entries[ids.index(params["after_id"]) + 1:]
        elif params.get("before_id") in ids:
            entries = entries[:ids.index(params["before_id"])]
        try:
            limit = min(max(int(params.get("limit", "20")), 1), 1000)
        except ValueError:
            return self._error_plan(rec, 400, "invalid_request_error",
                                    "limit: Input should be a valid integer")
        page = entries[-limit:] if "before_id" in params else entries[:limit]
        answer = {"data": page, "has_more": len(entries) > len(page),
                  "first_id": page[0]["id"] if page else None,
                  "last_id": page[-1]["id"] if page else None}
        return Plan(200, self._base_headers() + self._limit_headers(rec), [wire.encode(answer)])

    def _model(self, rec: RecordedRequest, model_id: str) -> Plan:
        if isinstance(auth := self._authenticate(rec), Plan):
            return auth
        if model_id not in self.models:
            return self._error_plan(rec, 404, "not_found_error", f"model: {model_id}")
        entry = wire.model_info(model_id, self.models.index(model_id))
        return Plan(200, self._base_headers() + self._limit_headers(rec), [wire.encode(entry)])
