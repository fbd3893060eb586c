"""Issue 12's edges, each reproduced for real: the reference server served on loopback in
front of the fake upstream, raw httpx requests (or a raw socket where httpx would
normalise the request line), and checks on three sides: the answer, what the fake
upstream recorded, and what the server kept (access log, log records, files).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccrotate import Account, AccountKind, AccountPool, Rotator, Secret, Settings
from ccrotate._accounts.file import AccountsFile
from ccrotate._exceptions import AccountsFileError
from ccrotate._proxy.headers import request_headers, sanitize_error
from ccrotate._wire import peek_request, valid_model_id
from ccrotate.testing import ApiError, FakeUpstream, RateLimited, ServerHandle, serve_app
from ccrotate.testing._behaviours import StreamError

API_KEY = "sk-ant-api03-EDGEalphaKEY-0001"
ACCESS = "sk-ant-oat01-EDGEbetaACCESS-0002"
REFRESH = "sk-ant-ort01-EDGEbetaREFRESH-0003"
CLIENT = "ccr-client-EDGES-4f1a"
ADMIN = "ccr-admin-EDGES-9b2c"
MODEL = "claude-sonnet-4-6"
HELLO = [{"role": "user", "content": "hi"}]
AUTH = {"x-api-key": CLIENT, "anthropic-version": "2023-06-01",
        "content-type": "application/json"}
OPENAI_AUTH = {"authorization": f"Bearer {CLIENT}", "content-type": "application/json"}
ANTHROPIC_ROUTES = ("/api/v1/messages", "/api/v1/messages/count_tokens")
CHAT = "/api/v1/chat/completions"
DEEP = 100_000


def accounts() -> list[Account]:
    return [
        Account(name="alpha", kind=AccountKind.API_KEY, api_key=Secret(API_KEY)),
        Account(name="beta", kind=AccountKind.OAUTH, access_token=Secret(ACCESS),
                refresh_token=Secret(REFRESH), expires_at=time.time() + 3600),
    ]


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> Iterator[ServerHandle[FakeUpstream]]:
    with serve_app(fake_upstream) as handle:
        yield handle


@contextlib.contextmanager
def reference(upstream: ServerHandle[FakeUpstream], **settings: Any) -> Iterator[Any]:
    """The reference app (lifespan and all) served on loopback; yields (client, components)."""
    options: dict[str, Any] = {"auth_tokens": (CLIENT,), "admin_token": ADMIN,
                               "oauth_token_url": upstream.url + "/v1/oauth/token", **settings}
    pool = AccountPool(accounts()) if "accounts_path" not in settings else None
    components = Rotator(Settings(upstream_url=upstream.url, **options), pool=pool)
    with serve_app(components.app) as served, \
            httpx.Client(base_url=served.url, timeout=30) as client:
        yield client, components, served


@pytest.fixture
def server(upstream: ServerHandle[FakeUpstream]) -> Iterator[Any]:
    with reference(upstream) as srv:
        yield srv


def anthropic_400(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text[:300]
    body = response.json()
    assert body["type"] == "error", body
    assert body["error"]["type"] == "invalid_request_error", body
    message: str = body["error"]["message"]
    return message


def openai_400(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text[:300]
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error", error
    return error


def access_entries(client: httpx.Client, expected: int) -> list[dict[str, Any]]:
    """The access log's entries as the query API serves them, once ``expected`` are in."""
    deadline = time.monotonic() + 10
    while True:
        r = client.get("/logs/entries?limit=1000", headers={"x-api-key": ADMIN})
        assert r.status_code == 200, r.text
        entries: list[dict[str, Any]] = r.json()["entries"]
        if len(entries) >= expected or time.monotonic() > deadline:
            return entries
        time.sleep(0.1)


# -- 1. bounded client-derived strings ----------------------------------------------------------

def test_ten_megabyte_model_is_refused_and_nothing_big_is_kept(
        server: Any, upstream: ServerHandle[FakeUpstream],
        caplog: pytest.LogCaptureFixture) -> None:
    """20 requests naming a 10 MB model: a 400 each, in the client's dialect, nothing sent
    upstream, and the access log and the log records stay small."""
    client, _, _ = server
    caplog.set_level(logging.DEBUG, logger="ccrotate")
    huge = "claude-" + "x" * (10 * 1024 * 1024)
    anthropic = json.dumps({"model": huge, "max_tokens": 8, "messages": HELLO}).encode()
    for i in range(20):
        path = ANTHROPIC_ROUTES[i % 2]
        r = client.post(path, content=anthropic, headers=AUTH)
        message = anthropic_400(r)
        assert "model" in message
        assert len(r.content) < 1000
    chat = json.dumps({"model": huge, "messages": HELLO}).encode()
    for _ in range(2):
        r = client.post(CHAT, content=chat, headers=OPENAI_AUTH)
        error = openai_400(r)
        assert error["param"] == "model"
        assert len(r.content) < 1000
    assert upstream.app.requests == []
    entries = access_entries(client, 22)
    assert len(entries) == 22
    assert {(e["status"], e["model"]) for e in entries} == {(400, None)}
    assert len(json.dumps(entries)) < 22 * 2000
    logged = sum(len(r.getMessage()) for r in caplog.records)
    assert logged < 100_000, logged


@pytest.mark.parametrize("model", [
    "claude-sonnet-4-6", "claude-3-5-sonnet-20241022", "claude-sonnet-4-5-20250929[1m]",
    "anthropic.claude-3-5-sonnet-20241022-v2:0", "us.anthropic.claude-sonnet-4-6-v1:0",
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-x-v1:0",
    "claude-3-5-sonnet-v2@20241022", "gpt-4o", "ft:gpt-4o-mini:my-org::abc123", "o3-mini",
    "x" * 128,
])
def test_real_model_ids_keep_the_rule(model: str) -> None:
    """Anthropic, Bedrock (ids and ARNs), Vertex, Claude Code and OpenAI names all pass."""
    assert valid_model_id(model)
    assert peek_request(json.dumps({"model": model}).encode()).model == model


@pytest.mark.parametrize("model", [
    "x" * 129, "", "claude sonnet", "claude\nsonnet", "../../etc/passwd", "-flag",
    "claude-\u00e9", "claude%2f", "a\\b", "<script>",
])
def test_odd_model_ids_break_the_rule(model: str) -> None:
    assert not valid_model_id(model)


@pytest.mark.parametrize("model", ["claude sonnet", "x" * 129, "claude\u0000"])
def test_bad_model_is_a_400_in_each_dialect(server: Any, upstream: ServerHandle[FakeUpstream],
                                            model: str) -> None:
    client, _, _ = server
    body = {"model": model, "max_tokens": 8, "messages": HELLO}
    for path in ANTHROPIC_ROUTES:
        anthropic_400(client.post(path, json=body, headers=AUTH))
    assert openai_400(client.post(CHAT, json=body, headers=OPENAI_AUTH))["param"] == "model"
    assert upstream.app.requests == []


def test_long_or_controlled_user_ids_are_refused(server: Any,
                                                 upstream: ServerHandle[FakeUpstream]) -> None:
    """metadata.user_id (an affinity key) and OpenAI's user: at most 512 printable chars."""
    client, _, _ = server
    for user in ("u" * 513, "a\nb"):
        body = {"model": MODEL, "max_tokens": 8, "messages": HELLO,
                "metadata": {"user_id": user}}
        anthropic_400(client.post("/api/v1/messages", json=body, headers=AUTH))
        chat = {"model": MODEL, "messages": HELLO, "user": user}
        assert openai_400(client.post(CHAT, json=chat, headers=OPENAI_AUTH))["param"] == "user"
    assert upstream.app.requests == []
    # Claude Code's user_id (a JSON string of ~200 characters) passes.
    cc_user = json.dumps({"device_id": "d" * 64, "account_uuid": "1" * 36,
                          "session_id": "2" * 36})
    body = {"model": MODEL, "max_tokens": 8, "messages": HELLO,
            "metadata": {"user_id": cc_user}}
    assert client.post("/api/v1/messages", json=body, headers=AUTH).status_code == 200


def test_a_huge_pin_header_is_a_small_400(server: Any,
                                          upstream: ServerHandle[FakeUpstream]) -> None:
    """X-Account-Name names at most 64 characters; a longer one is cut before any echo."""
    client, _, _ = server
    body = {"model": MODEL, "max_tokens": 8, "messages": HELLO}
    r = client.post("/api/v1/messages", json=body,
                    headers={**AUTH, "x-account-name": "n" * 8000})
    message = anthropic_400(r)
    assert "no account named" in message
    assert len(message) < 200
    assert upstream.app.requests == []
    assert request_headers([(b"x-account-name", b" alpha ")])[2] == "alpha"


# -- 2. deep JSON -----------------------------------------------------------------------------

def deep(depth: int, head: bytes = b'{"model":"m","max_tokens":8,"messages":') -> bytes:
    return head + b"[" * depth + b"]" * depth + b"}"


def test_deep_json_is_a_400_in_each_dialect(server: Any,
                                           upstream: ServerHandle[FakeUpstream]) -> None:
    """A 100,000-deep body: a 400 (not a plain-text 500) and nothing sent upstream."""
    client, _, _ = server
    for path in ANTHROPIC_ROUTES:
        r = client.post(path, content=deep(DEEP), headers=AUTH)
        assert "nested too deeply" in anthropic_400(r)
    for head in (b'{"model":"m","messages":',
                 b'{"model":"m","messages":[{"role":"user","content":"hi"}],"metadata":'):
        openai_400(client.post(CHAT, content=deep(DEEP, head), headers=OPENAI_AUTH))
    tools = (b'{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":'
             b'"function","function":{"name":"f","parameters":{"a":')
    error = openai_400(client.post(CHAT, content=deep(DEEP, tools)[:-1] + b"}}}]}",
                                   headers=OPENAI_AUTH))
    assert error["code"] == "invalid_json"
    assert "nested too deeply" in error["message"]
    assert upstream.app.requests == []


def answered(r: httpx.Response, fake: FakeUpstream, sent_before: int) -> bool:
    """A JSON answer: ccrotate's own 400, or whatever the upstream said, relayed. The fake
    itself may fail on a body this deep (its token estimate recurses): that 500 is relayed
    as a JSON error, unlike a crash of ccrotate (a plain-text 500)."""
    if r.headers.get("content-type") != "application/json":
        return False
    return r.status_code < 500 or len(fake.requests) > sent_before


def test_no_depth_near_the_limit_crashes_the_proxy(upstream: ServerHandle[FakeUpstream]) -> None:
    """Around Python's recursion limit some depths pass the peek and some do not: every
    one gets a JSON answer, never ccrotate's plain-text 500, on either account kind
    (the OAuth one decodes the system prompt again to add Claude Code's identity)."""
    fake = upstream.app
    with reference(upstream) as (client, _, _):
        for depth in range(700, 1100, 25):
            system = deep(depth, b'{"model":"m","max_tokens":8,"messages":[{"role":"user",'
                                 b'"content":"hi"}],"system":[{"type":"text","text":"x",'
                                 b'"cache_control":')
            for pin in ("alpha", "beta"):
                sent = len(fake.requests)
                r = client.post("/api/v1/messages", content=system,
                                headers={**AUTH, "x-account-name": pin})
                assert answered(r, fake, sent), (depth, pin, r.text[:200])
            chat = deep(depth, b'{"model":"m","messages":[{"role":"user","content":"hi"}],'
                               b'"response_format":{"type":"json_schema","json_schema":'
                               b'{"name":"x","schema":{"x":')
            sent = len(fake.requests)
            r = client.post(CHAT, content=chat + b"}}}", headers=OPENAI_AUTH)
            assert answered(r, fake, sent), (depth, r.text[:200])


# -- 3. encoded slashes -----------------------------------------------------------------------

def raw_request(served: ServerHandle[Any], method: str, target: str, body: bytes = b"",
                host: str = "localhost") -> tuple[int, bytes]:
    """Send one request line exactly as given (httpx would normalise it)."""
    head = (f"{method} {target} HTTP/1.1\r\nhost: {host}\r\nx-api-key: {CLIENT}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode()
    with socket.create_connection((served.host, served.port), timeout=10) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.parametrize("target", [
    "/api/v1/messages%2Fcount_tokens", "/api/v1/messages%2fcount_tokens",
    "/api%2Fv1/messages", "/api/v1%2Fmessages", "/api/v1/models%2Fclaude-sonnet-4-6",
    "/api/v1/chat%2Fcompletions",
])
def test_encoded_slash_is_refused_and_never_forwarded(
        server: Any, upstream: ServerHandle[FakeUpstream], target: str) -> None:
    _, _, served = server
    body = json.dumps({"model": MODEL, "max_tokens": 8, "messages": HELLO}).encode()
    method = "GET" if "models" in target else "POST"
    status, answer = raw_request(served, method, target, body if method == "POST" else b"")
    assert status == 404, answer[:300]
    payload = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "not_found_error"
    assert upstream.app.requests == []


# -- 4. no Host-built redirects ---------------------------------------------------------------

@pytest.mark.parametrize("target", ["/logs", "/dashboard/", "/status/accounts/", "/logs/"])
def test_no_redirect_reflects_the_host_header(server: Any, target: str) -> None:
    _, _, served = server
    status, answer = raw_request(served, "GET", target, host="evil.example")
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert b"evil.example" not in answer
    assert b"\r\nlocation:" not in head, (target, status, head)


# -- 5. reloadError names the file, not its path ------------------------------------------------

def test_reload_error_names_the_file_without_its_directory(
        upstream: ServerHandle[FakeUpstream], tmp_path: Path) -> None:
    path = tmp_path / "secret-dir" / "accounts.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"version": 1, "accounts": {"alpha": {"apiKey": API_KEY}}}))
    with reference(upstream, accounts_path=str(path)) as (client, components, _):
        watcher = components.watcher
        assert watcher is not None
        path.write_text('{"version": 1, "accounts": {"alpha": {"apiKey": 5}}}')
        deadline = time.monotonic() + 10
        while watcher.last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        r = client.get("/status/", headers={"x-api-key": ADMIN})
        error = r.json()["reloadError"]
        assert error is not None
        assert error.startswith("accounts.json: account 'alpha'"), error
        assert str(tmp_path) not in r.text
        assert "secret-dir" not in r.text
        path.unlink()
        while watcher.last_error == error and time.monotonic() < deadline:
            time.sleep(0.05)
        body = client.get("/status/", headers={"x-api-key": ADMIN}).text
        assert "accounts.json: file is missing" in body
        assert "secret-dir" not in body
        health = client.get("/health").text
        assert "secret-dir" not in health


def test_accounts_file_error_keeps_the_path_for_the_operator() -> None:
    exc = AccountsFileError("/home/me/.claude/accounts.json", "bad", account="a", field="f")
    assert str(exc) == "/home/me/.claude/accounts.json: account 'a': field 'f': bad"
    assert exc.public_message() == "accounts.json: account 'a': field 'f': bad"


# -- 6. upstream errors relayed through an allow-list ---------------------------------------------

EXTRA_HEADERS = {"set-cookie": "session=s3cr3t", "x-internal-foo": "backend-7",
                 "server": "envoy-internal", "x-should-retry": "false",
                 "anthropic-ratelimit-edge-test": "50"}
ALLOWED = {"content-type", "content-length", "retry-after", "request-id", "x-should-retry",
           "x-ccrotate-account", "date", "server"}


def check_relayed(r: httpx.Response, status: int, type_: str, message: str,
                  code: str | None = None) -> None:
    assert r.status_code == status, r.text
    names = {k.lower() for k in r.headers}
    assert names - ALLOWED == {n for n in names if n.startswith("anthropic-ratelimit-")}
    assert "set-cookie" not in names
    assert "x-internal-foo" not in names
    assert r.headers["server"] != "envoy-internal"  # uvicorn's own, not the upstream's
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-should-retry"] == "false"
    assert r.headers["anthropic-ratelimit-edge-test"] == "50"
    body = r.json()
    error: dict[str, Any] = {"type": type_, "message": message}
    if code is not None:
        error["details"] = {"error_code": code}
    assert body == {"type": "error", "error": error, "request_id": body["request_id"]}
    assert body["request_id"].startswith("req_")
    assert r.headers["request-id"] == body["request_id"]
    assert "s3cr3t" not in r.text
    assert "backend-7" not in r.text


def extra_error(**fields: Any) -> dict[str, Any]:
    return {"headers": EXTRA_HEADERS, "body_extra": {"debug": {"host": "backend-7"}},
            "error_extra": {"trace": "s3cr3t"}, **fields}


@pytest.mark.parametrize("streaming", [False, True])
def test_upstream_error_headers_and_fields_are_cut_to_the_allow_list(
        server: Any, upstream: ServerHandle[FakeUpstream], streaming: bool) -> None:
    client, _, _ = server
    upstream.app.script(API_KEY, ApiError(status=400, error_type="invalid_request_error",
                                          message="messages: bad",
                                          details={"error_code": "bad_x", "hint": "s3cr3t"},
                                          **extra_error()))
    body = {"model": MODEL, "max_tokens": 8, "messages": HELLO, "stream": streaming}
    r = client.post("/api/v1/messages", json=body, headers={**AUTH, "x-account-name": "alpha"})
    check_relayed(r, 400, "invalid_request_error", "messages: bad", "bad_x")


def test_upstream_429_is_cut_too_and_still_cools_the_account(
        server: Any, upstream: ServerHandle[FakeUpstream]) -> None:
    client, components, _ = server
    upstream.app.script(API_KEY, RateLimited(retry_after=30, **extra_error()))
    body = {"model": MODEL, "max_tokens": 8, "messages": HELLO}
    r = client.post("/api/v1/messages", json=body, headers={**AUTH, "x-account-name": "alpha"})
    check_relayed(r, 429, "rate_limit_error", RateLimited.message)
    assert r.headers["retry-after"] == "30"
    alpha = next(s for s in components.pool.statuses() if s.name == "alpha")
    assert alpha.state.value == "rate_limited"


def test_error_opening_a_stream_is_cut_too(server: Any,
                                          upstream: ServerHandle[FakeUpstream]) -> None:
    """An error event opening a 200 stream becomes an HTTP error with the same allow-list."""
    client, _, _ = server
    upstream.app.script(API_KEY, StreamError(after=0, error_type="invalid_request_error",
                                             message="bad thing", headers=EXTRA_HEADERS))
    body = {"model": MODEL, "max_tokens": 8, "messages": HELLO, "stream": True}
    r = client.post("/api/v1/messages", json=body, headers={**AUTH, "x-account-name": "alpha"})
    check_relayed(r, 400, "invalid_request_error", "bad thing")


def test_sanitize_error_unit() -> None:
    """Non-JSON bodies get a type from the status; odd types and details are dropped."""
    headers, body = sanitize_error(502, [(b"Set-Cookie", b"x"), (b"Retry-After", b"3")],
                                   b"<html>bad gateway</html>")
    assert headers == [(b"content-type", b"application/json"), (b"retry-after", b"3")]
    assert json.loads(body) == {"type": "error", "error": {"type": "api_error",
                                                           "message": "upstream answered 502"}}
    _, body = sanitize_error(429, [], json.dumps({
        "type": "error", "error": {"type": "Rate Limit!", "message": "m",
                                   "details": {"error_code": 7}}, "request_id": 5}).encode())
    assert json.loads(body) == {"type": "error", "error": {"type": "rate_limit_error",
                                                           "message": "m"}}


# -- 7. a symlinked accounts file is locked where it really is ------------------------------------

@pytest.mark.skipif(os.name != "posix", reason="symlinks and flock")
def test_symlinked_accounts_file_is_locked_beside_the_real_file(tmp_path: Path) -> None:
    real_dir, link_dir = tmp_path / "dotfiles", tmp_path / "home"
    real_dir.mkdir()
    link_dir.mkdir()
    real = real_dir / "accounts.json"
    real.write_text(json.dumps({"version": 1, "accounts": {"alpha": {"apiKey": API_KEY}}}))
    link = link_dir / "accounts.json"
    link.symlink_to(real)
    file = AccountsFile(link)
    file.update(lambda accs: {**accs, "gamma": Account(name="gamma", kind=AccountKind.API_KEY,
                                                       api_key=Secret(API_KEY + "g"))})
    assert (real_dir / "accounts.json.lock").exists()
    assert sorted(p.name for p in link_dir.iterdir()) == ["accounts.json"]
    assert link.is_symlink()
    assert link.resolve() == real
    assert {a.name for a in AccountsFile(real).load()} == {"alpha", "gamma"}
