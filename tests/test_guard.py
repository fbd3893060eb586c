"""Browser attacks on the no-token loopback default (issue 12), end to end.

The reference app (``create_app``) is served by uvicorn on a loopback port in front of
the fake upstream, and every attack is replayed with raw ``httpx`` requests carrying
the headers a browser would send for the attacker's page: a cross-site ``Origin``,
``Sec-Fetch-*``, a ``text/plain`` body, or a rebound ``Host``. Each refusal is checked
on three sides: the answer, the fake upstream (which must have recorded nothing) and
the pool (which must not have moved).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    AccountState,
    ConfigError,
    RequestGuard,
    Secret,
    Settings,
    load_settings,
)
from ccrotate._asgi import json_body_ok
from ccrotate._server.app import create_app
from ccrotate.testing import FakeUpstream, ServerHandle, serve_app
from conftest import CLAUDE_CODE_SAMPLE

KEY_A = "sk-ant-api03-GUARDalpha-key-0001"
KEY_B = "sk-ant-api03-GUARDbeta-key-0002"
CLIENT = "ccr-client-PLATYPUS-51c2"
ADMIN = "ccr-admin-ECHIDNA-9a7e"
MODEL = "claude-sonnet-4-6"
BODY = {"model": MODEL, "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
JSON = {"content-type": "application/json"}
EVIL = "https://evil.example"
SAMPLE = CLAUDE_CODE_SAMPLE

# What Chrome sends with fetch(url, {method: "POST", body: "..."}) from another site:
# a "simple" request, so it goes out without a preflight.
CROSS_SITE = {"origin": EVIL, "sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors",
              "sec-fetch-dest": "empty", "content-type": "text/plain;charset=UTF-8"}


@dataclass
class Served:
    """The reference app of one test, served on loopback, with its pool and fake upstream."""

    server: ServerHandle[Any]
    pool: AccountPool
    fake: FakeUpstream

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def untouched(self) -> None:
        """Nothing reached upstream and no account moved."""
        assert self.fake.requests == []
        for s in self.pool.statuses():
            assert (s.state, s.requests, s.failures, s.in_flight) == (
                AccountState.AVAILABLE, 0, 0, 0), s


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> Iterator[ServerHandle[FakeUpstream]]:
    with serve_app(fake_upstream) as handle:
        yield handle


@contextlib.contextmanager
def reference(upstream: ServerHandle[FakeUpstream], **settings: Any) -> Iterator[Served]:
    """``create_app`` from ``settings`` (no token by default), served with its lifespan."""
    pool = AccountPool([Account(name="alpha", kind=AccountKind.API_KEY, api_key=Secret(KEY_A)),
                        Account(name="beta", kind=AccountKind.API_KEY, api_key=Secret(KEY_B))])
    options = {"upstream_url": upstream.url, "hot_reload": False,
               "oauth_token_url": upstream.url + "/v1/oauth/token", **settings}
    app = create_app(Settings(**options), pool=pool)
    with serve_app(app, lifespan="on") as server:
        yield Served(server, pool, upstream.app)


@pytest.fixture
def served(upstream: ServerHandle[FakeUpstream]) -> Iterator[Served]:
    with reference(upstream) as srv:
        yield srv


def anthropic_error(response: httpx.Response, status: int, type_: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == type_
    message: str = body["error"]["message"]
    return message


# -- 3. JSON bodies only: the "simple request" that needs no preflight -----------------------


def test_cross_site_text_plain_post_is_refused_before_the_pool(served: Served) -> None:
    """The whole attack (foreign Origin, text/plain) is refused; nothing is spent."""
    r = httpx.post(served.url + "/api/v1/messages", content=json.dumps(BODY),
                   headers=CROSS_SITE)
    assert anthropic_error(r, 403, "permission_error")
    assert "access-control-allow-origin" not in r.headers
    served.untouched()


@pytest.mark.parametrize("ctype", ["text/plain;charset=UTF-8", "text/plain",
                                   "application/x-www-form-urlencoded", "multipart/form-data",
                                   None])
@pytest.mark.parametrize("path", ["/api/v1/messages", "/api/v1/messages/count_tokens"])
def test_non_json_body_is_415_in_anthropic_shape(served: Served, path: str,
                                                 ctype: str | None) -> None:
    """Even past the Origin check, a body not declared JSON gets 415 and goes nowhere."""
    headers = {"content-type": ctype} if ctype else {}
    r = httpx.post(served.url + path, content=json.dumps(BODY).encode(), headers=headers)
    assert "application/json" in anthropic_error(r, 415, "invalid_request_error")
    served.untouched()


def test_non_json_body_on_the_chat_route_is_415_in_openai_shape(served: Served) -> None:
    """The OpenAI-compatible route refuses text/plain in OpenAI's error shape."""
    r = httpx.post(served.url + "/api/v1/chat/completions", content=json.dumps(CHAT),
                   headers={"content-type": "text/plain;charset=UTF-8"})
    assert r.status_code == 415, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert "application/json" in error["message"]
    assert "type" not in r.json()  # not Anthropic's envelope
    served.untouched()


@pytest.mark.parametrize("ctype", ["application/json", "Application/JSON",
                                   "application/json; charset=utf-8",
                                   "application/vnd.api+json"])
def test_json_content_types_pass(served: Served, ctype: str) -> None:
    """application/json in any case, with parameters, or a +json type, is served."""
    r = httpx.post(served.url + "/api/v1/messages", content=json.dumps(BODY),
                   headers={"content-type": ctype})
    assert r.status_code == 200, r.text
    assert len(served.fake.requests) == 1


def test_get_without_a_body_needs_no_content_type(served: Served) -> None:
    """/v1/models has no body, so no Content-Type is fine."""
    r = httpx.get(served.url + "/api/v1/models", headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("headers", "ok"), [
    ({}, True),
    ({"content-length": "0"}, True),
    ({"content-length": "12"}, False),
    ({"transfer-encoding": "chunked"}, False),
    ({"content-type": "application/json"}, True),
    ({"content-type": "APPLICATION/JSON;CHARSET=UTF-8"}, True),
    ({"content-type": "application/problem+json"}, True),
    ({"content-type": "text/json+plain"}, False),
    ({"content-type": "text/plain, application/json"}, False),
    ({"content-type": "application/jsonx"}, False),
    ({"content-type": ""}, False),
])
def test_json_body_ok(headers: dict[str, str], ok: bool) -> None:
    """The content-type rule itself, case by case."""
    scope = {"headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    assert json_body_ok(scope) is ok


# -- 1. Host allow-list: DNS rebinding ---------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/status"), ("GET", "/status/accounts"), ("GET", "/logs/entries"),
    ("GET", "/metrics"), ("GET", "/dashboard"), ("GET", "/health"),
    ("POST", "/api/v1/messages"), ("POST", "/status/accounts/alpha/disable"),
])
def test_rebound_host_is_refused_everywhere(served: Served, method: str, path: str) -> None:
    """A page whose own name resolves to 127.0.0.1 reads and changes nothing: 421."""
    r = httpx.request(method, served.url + path, json=BODY if method == "POST" else None,
                      headers={"host": f"evil.example:{served.server.port}"})
    assert "allowed_hosts" in anthropic_error(r, 421, "invalid_request_error")
    assert "alpha" not in r.text
    served.untouched()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LocalHost", "[::1]",
                                  "127.0.0.1:1", None])
def test_the_servers_own_names_pass(served: Served, host: str | None) -> None:
    """Loopback names, in any case, with any port (or none), are this server."""
    headers = {"host": host} if host else {}
    r = httpx.get(served.url + "/status", headers=headers)
    assert r.status_code == 200, r.text


def test_a_request_without_host_passes(served: Served) -> None:
    """HTTP/1.0 allows no Host; no browser omits it, so it is no rebinding attempt."""
    import socket

    with socket.create_connection(("127.0.0.1", served.server.port)) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]


def test_two_host_headers_must_both_pass(served: Served) -> None:
    """A second, foreign Host cannot ride along behind an allowed one."""
    import socket

    with socket.create_connection(("127.0.0.1", served.server.port)) as sock:
        sock.sendall(b"GET /status HTTP/1.1\r\nhost: 127.0.0.1\r\nhost: evil.example\r\n"
                     b"connection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 421") or data.startswith(b"HTTP/1.1 400"), data[:200]


def test_configured_public_name_passes_and_star_disables(
        upstream: ServerHandle[FakeUpstream]) -> None:
    """allowed_hosts adds names (reverse proxy); '*' turns the check off."""
    with reference(upstream, allowed_hosts="Pool.Example.com") as srv:
        ok = httpx.get(srv.url + "/status", headers={"host": "pool.example.com"})
        evil = httpx.get(srv.url + "/status", headers={"host": "evil.example"})
    assert ok.status_code == 200, ok.text
    assert evil.status_code == 421
    with reference(upstream, allowed_hosts="*") as srv:
        assert httpx.get(srv.url + "/status", headers={"host": "any.example"}).status_code == 200


@pytest.mark.parametrize(("bind", "host", "ok"), [
    ("0.0.0.0", "10.1.2.3:8080", True),
    ("0.0.0.0", "[2001:db8::1]:8080", True),
    ("::", "192.0.2.7", True),
    ("0.0.0.0", "evil.example", False),
    ("0.0.0.0", "localhost", True),
    ("0.0.0.0", "pool.lan", True),  # configured below
    ("10.1.2.3", "10.1.2.3:80", True),
    ("10.1.2.3", "10.1.2.4", False),
    ("::1", "[::1]:9", True),
    ("127.0.0.1", "10.1.2.3", False),
    ("127.0.0.1", "127.0.0.1.evil.example", False),
    ("127.0.0.1", "localhost.", False),
])
async def test_wildcard_bind_admits_ip_literals_only(bind: str, host: str, ok: bool) -> None:
    """Bound to a wildcard, any IP-literal Host is this server; names must be listed."""
    reached: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    guard = RequestGuard(app, bind=bind, allowed_hosts=["pool.lan"])
    scope = {"type": "http", "method": "GET", "path": "/", "scheme": "http",
             "headers": [(b"host", host.encode())]}
    await guard(scope, receive, send)
    assert bool(reached) is ok
    assert sent[0]["status"] == (204 if ok else 421)


# -- 2. Origin: cross-site requests and CORS -------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/v1/messages"), ("POST", "/api/v1/chat/completions"),
    ("GET", "/api/v1/models"), ("GET", "/status"), ("POST", "/status/accounts/alpha/disable"),
    ("POST", "/status/accounts/alpha/enable"), ("GET", "/logs/entries"), ("GET", "/metrics"),
    ("GET", "/dashboard"), ("GET", "/health"),
])
@pytest.mark.parametrize("origin", [EVIL, "null", "http://127.0.0.1:1", "http://localhost"])
def test_foreign_origin_is_403_on_every_route(served: Served, method: str, path: str,
                                              origin: str) -> None:
    """Another site, an opaque origin, or another local port: 403, nothing touched."""
    r = httpx.request(method, served.url + path, json=BODY if method == "POST" else None,
                      headers={"origin": origin, "sec-fetch-site": "cross-site"})
    assert "allowed_origins" in anthropic_error(r, 403, "permission_error")
    assert "access-control-allow-origin" not in r.headers
    served.untouched()


def test_same_origin_requests_work(served: Served) -> None:
    """The dashboard's own fetches (Origin = where the request went) are served."""
    same = {"origin": served.origin, "sec-fetch-site": "same-origin"}
    page = httpx.get(served.url + "/dashboard", headers={"sec-fetch-site": "none"})
    status = httpx.get(served.url + "/status/", headers=same)
    logs = httpx.get(served.url + "/logs/entries", headers=same)
    api = httpx.post(served.url + "/api/v1/messages", json=BODY, headers=same)
    assert page.status_code == 200
    assert '"/status/"' in page.text  # what the page fetches, relative to this origin
    assert status.status_code == 200, status.text
    assert logs.status_code == 200, logs.text
    assert api.status_code == 200, api.text
    assert "access-control-allow-origin" not in api.headers  # same origin needs no CORS
    local = httpx.get(served.url + "/status", headers={
        "host": f"localhost:{served.server.port}",
        "origin": f"http://localhost:{served.server.port}"})
    assert local.status_code == 200, local.text
    # TLS ended in front of the server: the page is https, the server sees http.
    tls = httpx.get(served.url + "/status", headers={"origin": "https://" + served.origin[7:]})
    assert tls.status_code == 200, tls.text


def test_configured_origin_gets_cors(upstream: ServerHandle[FakeUpstream]) -> None:
    """A listed origin gets its preflight answered and CORS headers; others do not."""
    app_origin = "https://app.example"
    with reference(upstream, allowed_origins="https://App.Example:443/") as srv:
        preflight = httpx.options(srv.url + "/api/v1/messages", headers={
            "origin": app_origin, "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-api-key,anthropic-version"})
        post = httpx.post(srv.url + "/api/v1/messages", json=BODY,
                          headers={"origin": app_origin, "sec-fetch-site": "cross-site"})
        other = httpx.options(srv.url + "/api/v1/messages", headers={
            "origin": EVIL, "access-control-request-method": "POST"})
        assert len(srv.fake.requests) == 1
    assert preflight.status_code == 204, preflight.text
    assert preflight.headers["access-control-allow-origin"] == app_origin
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == \
        "content-type,x-api-key,anthropic-version"
    assert "Origin" in preflight.headers["vary"]
    assert "access-control-allow-credentials" not in preflight.headers
    assert post.status_code == 200, post.text
    assert post.headers["access-control-allow-origin"] == app_origin
    assert "Origin" in post.headers.get_list("vary")
    assert "access-control-allow-credentials" not in post.headers
    assert other.status_code == 403
    assert "access-control-allow-origin" not in other.headers


def test_cors_is_off_by_default(served: Served) -> None:
    """Without allowed_origins a preflight is refused like any foreign request."""
    r = httpx.options(served.url + "/api/v1/messages", headers={
        "origin": EVIL, "access-control-request-method": "POST"})
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers


def test_wildcard_origin_is_refused() -> None:
    """'*' would let every page spend the pool: refused by the guard and the settings."""
    with pytest.raises(ValueError, match="allowed_origins"):
        RequestGuard(Starlette(), allowed_origins=["*"])
    with pytest.raises(ConfigError, match=r"allowed_origins.*no '\*'"):
        Settings(allowed_origins="*")


# -- 4. Admin actions are never a browser's, without the admin token --------------------------


@pytest.mark.parametrize("browser", [
    {"origin": "SAME"},
    {"sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "same-origin", "sec-fetch-mode": "cors"},
    {"sec-fetch-mode": "navigate"},
], ids=["same-origin", "sec-fetch-site-cross", "sec-fetch-same", "form-navigation"])
@pytest.mark.parametrize("action", ["disable", "enable", "refresh"])
def test_browser_admin_action_is_refused_in_no_token_mode(served: Served, browser: dict[str, str],
                                                          action: str) -> None:
    """From a browser, even a same-origin page, no token means no admin action."""
    headers = {k: served.origin if v == "SAME" else v for k, v in browser.items()}
    r = httpx.post(served.url + f"/status/accounts/alpha/{action}", headers=headers)
    message = anthropic_error(r, 403, "permission_error") if "type" in r.json() else None
    if message is None:  # the status API's own shape: {"error": {"type", "message"}}
        assert r.status_code == 403, r.text
        message = r.json()["error"]["message"]
    assert "CCROTATE_ADMIN_TOKEN" in message
    assert served.pool.status("alpha").state is AccountState.AVAILABLE
    served.untouched()


def test_plain_loopback_client_still_acts_in_no_token_mode(served: Served) -> None:
    """curl and scripts on this machine keep the no-token admin actions."""
    r = httpx.post(served.url + "/status/accounts/alpha/disable")
    assert r.status_code == 200, r.text
    assert served.pool.status("alpha").state is AccountState.DISABLED
    assert httpx.post(served.url + "/status/accounts/alpha/enable").status_code == 200
    assert served.pool.status("alpha").state is AccountState.AVAILABLE


def test_browser_with_the_admin_token_acts(upstream: ServerHandle[FakeUpstream]) -> None:
    """With the admin token a browser may act; without it, 401, and no token is echoed."""
    with reference(upstream, auth_tokens=(CLIENT,), admin_token=ADMIN) as srv:
        browser = {"origin": srv.origin, "sec-fetch-site": "same-origin"}
        refused = httpx.post(srv.url + "/status/accounts/alpha/disable",
                             headers={**browser, "x-api-key": CLIENT})
        assert srv.pool.status("alpha").state is AccountState.AVAILABLE
        ok = httpx.post(srv.url + "/status/accounts/alpha/disable",
                        headers={**browser, "authorization": f"Bearer {ADMIN}"})
        assert srv.pool.status("alpha").state is AccountState.DISABLED
    assert refused.status_code == 403, refused.text
    assert ok.status_code == 200, ok.text
    for r in (refused, ok):
        assert CLIENT not in r.text
        assert ADMIN not in r.text


def test_refusals_never_carry_a_token(upstream: ServerHandle[FakeUpstream]) -> None:
    """No refusal of the guard echoes a presented or configured key."""
    with reference(upstream, auth_tokens=(CLIENT,), admin_token=ADMIN) as srv:
        answers = [
            httpx.post(srv.url + "/api/v1/messages", json=BODY,
                       headers={"x-api-key": CLIENT, "origin": EVIL}),
            httpx.post(srv.url + "/api/v1/messages", json=BODY,
                       headers={"x-api-key": CLIENT, "host": "evil.example"}),
            httpx.post(srv.url + "/api/v1/messages", content=b"{}",
                       headers={"x-api-key": CLIENT, "content-type": "text/plain"}),
        ]
        srv.untouched()
    assert [r.status_code for r in answers] == [403, 421, 415]
    for r in answers:
        blob = r.text + "".join(f"{k}:{v}" for k, v in r.headers.multi_items())
        assert CLIENT not in blob
        assert ADMIN not in blob


# -- Existing clients are not refused ----------------------------------------------------------


def test_anthropic_sdk_works_unchanged(served: Served) -> None:
    """The official anthropic SDK (JSON, no Origin) is served, streaming or not."""
    client = anthropic.Anthropic(base_url=served.url + "/api", api_key="k", max_retries=0)
    reply = client.messages.create(model=MODEL, max_tokens=32,
                                   messages=[{"role": "user", "content": "hi"}])
    assert reply.content
    with client.messages.stream(model=MODEL, max_tokens=32,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        assert stream.get_final_message().content
    assert client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]).input_tokens >= 0
    assert len(served.fake.requests) == 3


def test_openai_sdk_works_unchanged(served: Served) -> None:
    """The official openai SDK is served on the chat route."""
    client = openai.OpenAI(base_url=served.url + "/api/v1", api_key="k", max_retries=0)
    out = client.chat.completions.create(model=MODEL,
                                         messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content
    assert [m.id for m in client.models.list()]


@pytest.mark.skipif(not SAMPLE.exists(), reason="captured Claude Code request not present")
def test_claude_code_request_passes(upstream: ServerHandle[FakeUpstream]) -> None:
    """A captured Claude Code 2.1.197 request, its headers and body as sent, is served."""
    sample = json.loads(SAMPLE.read_text())
    with reference(upstream, auth_tokens=(CLIENT,)) as srv:
        headers = {k: v for k, v in sample["headers"].items()
                   if k not in ("host", "content-length", "connection")}
        headers["x-api-key"] = CLIENT
        headers["host"] = f"127.0.0.1:{srv.server.port}"
        r = httpx.post(srv.url + "/api" + sample["path"], headers=headers,
                       content=json.dumps(sample["body"]).encode(), timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/event-stream")
        assert len(srv.fake.requests) == 1


# -- Settings ---------------------------------------------------------------------------------


def test_allowed_hosts_and_origins_from_env_and_toml(tmp_path: Path) -> None:
    """Both settings load from the environment (commas) and TOML (lists), normalised."""
    env = {"CCROTATE_ALLOWED_HOSTS": " Pool.Example.com, ::1 ,10.0.0.5,",
           "CCROTATE_ALLOWED_ORIGINS": "https://App.Example/,http://localhost:3000"}
    s = _load(tmp_path, env)
    assert s.allowed_hosts == ("pool.example.com", "[::1]", "10.0.0.5")
    assert s.allowed_origins == ("https://app.example", "http://localhost:3000")
    assert s.source_of("allowed_hosts") == "environment"
    toml = _write(tmp_path / "c.toml", '[security]\nallowed_hosts = ["pool.example.com"]\n'
                  'allowed_origins = ["https://app.example:8443"]\n')
    t = _load(tmp_path, {}, toml)
    assert t.allowed_hosts == ("pool.example.com",)
    assert t.allowed_origins == ("https://app.example:8443",)
    assert Settings().allowed_hosts == ()
    assert Settings(allowed_hosts="*").allowed_hosts == ("*",)


@pytest.mark.parametrize("raw", ["pool.example.com:8080", "http://pool.example.com",
                                 "pool.example.com/x", "a b", "[::1", "évil..example"])
def test_bad_allowed_hosts_name_the_setting(tmp_path: Path, raw: str) -> None:
    """A host with a port, a scheme, a path or bad characters is an error naming the setting."""
    with pytest.raises(ConfigError, match=r"CCROTATE_ALLOWED_HOSTS \(environment\)"):
        _load(tmp_path, {"CCROTATE_ALLOWED_HOSTS": raw})
    toml = _write(tmp_path / "c.toml", f"[security]\nallowed_hosts = [{json.dumps(raw)}]\n")
    with pytest.raises(ConfigError, match=r"\[security\] allowed_hosts"):
        _load(tmp_path, {}, toml)
    with pytest.raises(ConfigError, match="allowed_hosts"):
        Settings(allowed_hosts=raw)


@pytest.mark.parametrize("raw", ["*", "null", "app.example", "https://app.example/path",
                                 "ftp://app.example", "https://user@app.example",
                                 "https://app.example:0", "https://app.example?x=1"])
def test_bad_allowed_origins_name_the_setting(raw: str) -> None:
    """Anything but scheme://host[:port] is an error naming the setting."""
    with pytest.raises(ConfigError, match="allowed_origins"):
        Settings(allowed_origins=raw)


def test_toml_allowed_hosts_must_be_a_list_of_strings(tmp_path: Path) -> None:
    """A number where names belong is refused with the file and key."""
    toml = _write(tmp_path / "c.toml", "[security]\nallowed_hosts = [1]\n")
    with pytest.raises(ConfigError, match=r"\[security\] allowed_hosts"):
        _load(tmp_path, {}, toml)


def test_cli_allowed_hosts_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ccrotate serve --allowed-hosts`` feeds the setting."""
    from ccrotate._cli.common import settings_from
    from ccrotate._cli.main import build_parser

    monkeypatch.chdir(tmp_path)  # no ./.env
    monkeypatch.setenv("CCROTATE_CONFIG", str(_write(tmp_path / "empty.toml", "")))
    args = build_parser().parse_args(["serve", "--allowed-hosts", "pool.example.com,10.0.0.5"])
    s = settings_from(args)
    assert s.allowed_hosts == ("pool.example.com", "10.0.0.5")
    assert s.source_of("allowed_hosts") == "command line"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _load(tmp_path: Path, env: dict[str, str], toml: Path | None = None) -> Settings:
    # Explicit (empty) files, so the machine's ./.env and ~/.config stay out of it.
    return load_settings(env=env, dotenv_path=_write(tmp_path / "test.env", ""),
                         config_path=toml or _write(tmp_path / "empty.toml", ""))


# -- Websockets and lifespan through the guard ------------------------------------------------


def test_websocket_gets_the_same_checks() -> None:
    """A websocket from a foreign Origin or Host is closed before it opens; others work."""

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("echo:" + await websocket.receive_text())
        await websocket.close()

    app = RequestGuard(Starlette(routes=[WebSocketRoute("/ws", echo)]), bind="127.0.0.1")
    with serve_app(app) as server:
        url = server.url.replace("http", "ws") + "/ws"
        with connect(url) as ws:
            ws.send("hi")
            assert ws.recv() == "echo:hi"
        with connect(url, origin=Origin(server.url)) as ws:
            ws.send("same")
            assert ws.recv() == "echo:same"
        with pytest.raises(InvalidStatus) as foreign:
            connect(url, origin=Origin(EVIL))
        assert foreign.value.response.status_code == 403
        with pytest.raises(InvalidStatus) as rebound:
            connect(url, additional_headers={"host": "evil.example"})
        assert rebound.value.response.status_code == 403


def test_guard_arguments_are_validated_and_normalised() -> None:
    """Library users get the settings' rules: bad names fail early, origins normalise."""
    with pytest.raises(ValueError, match="allowed_hosts"):
        RequestGuard(Starlette(), allowed_hosts=["pool.example.com:8080"])
    with pytest.raises(ValueError, match="allowed_origins"):
        RequestGuard(Starlette(), allowed_origins=["https://app.example/path"])
    guard = RequestGuard(Starlette(), allowed_origins=["HTTPS://App.Example:443/"],
                         allowed_hosts=["::1", "Pool.Example.com"])
    assert guard.origins == {b"https://app.example"}
    assert {b"[::1]", b"pool.example.com", b"localhost", b"127.0.0.1"} <= guard.hosts


async def test_lifespan_and_other_scopes_pass_through() -> None:
    """The guard never answers lifespan itself: the wrapped app's startup runs."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def never() -> Any:
        raise AssertionError("the guard must not read lifespan messages")

    async def no_send(message: Any) -> None:
        raise AssertionError("the guard must not answer lifespan")

    await RequestGuard(app)({"type": "lifespan"}, never, no_send)
    assert seen == ["lifespan"]
