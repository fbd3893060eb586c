"""Access control and request hygiene of the reference server, end to end.

The full app from ``Rotator(...).app`` runs in front of the fake upstream
(served on loopback). Requests go in through ``httpx.ASGITransport`` (non-streaming
routes only) or, for raw request lines httpx would normalise, through a real socket.
Every refusal is checked on three sides: the answer, the fake upstream (which must
have recorded nothing) and the pool (which must not have moved).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    AccountState,
    ConfigError,
    Rotator,
    Secret,
    Settings,
)
from ccrotate._cli.serve import check_bind, run_server
from ccrotate._proxy.auth import ClientAuth
from ccrotate.testing import FakeUpstream, ServerHandle, serve_app

API_KEY = "sk-ant-api03-ALPHAsecretKEY-zq81"
ACCESS = "sk-ant-oat01-BETAsecretACCESS-xk42"
REFRESH = "sk-ant-ort01-BETAsecretREFRESH-pp07"
CLIENT = "ccr-client-QUOKKA-7f3e9a51"
ADMIN = "ccr-admin-WOMBAT-c0d4e2b8"
SECRETS = (API_KEY, ACCESS, REFRESH, CLIENT, ADMIN)
MODEL = "claude-sonnet-4-6"
JSON = {"content-type": "application/json"}  # what every real client sends with its body
BODY = {"model": MODEL, "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}


def accounts() -> list[Account]:
    return [
        Account(name="alpha", kind=AccountKind.API_KEY, api_key=Secret(API_KEY)),
        Account(name="beta", kind=AccountKind.OAUTH, access_token=Secret(ACCESS),
                refresh_token=Secret(REFRESH), expires_at=time.time() + 3600),
    ]


@dataclass
class Server:
    """The reference app of one test, its pool, and the fake behind it."""

    app: Any
    pool: AccountPool
    fake: FakeUpstream
    client: httpx.AsyncClient

    def untouched(self) -> None:
        """Nothing reached upstream and no account moved."""
        assert self.fake.requests == []
        for s in self.pool.statuses():
            assert (s.state, s.requests, s.failures, s.in_flight) == (AccountState.AVAILABLE,
                                                                      0, 0, 0), s


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> Iterator[ServerHandle[FakeUpstream]]:
    with serve_app(fake_upstream) as handle:
        yield handle


@contextlib.asynccontextmanager
async def reference(upstream: ServerHandle[FakeUpstream], *, peer: str = "127.0.0.1",
                    **settings: Any) -> AsyncIterator[Server]:
    """The reference app over ASGITransport, its rotator started (no lifespan there)."""
    options: dict[str, Any] = {"auth_tokens": (CLIENT,), "admin_token": ADMIN,
                               "oauth_token_url": upstream.url + "/v1/oauth/token", **settings}
    pool = AccountPool(accounts())
    rotator = Rotator(Settings(upstream_url=upstream.url, **options), pool=pool)
    app = rotator.app
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with rotator, httpx.AsyncClient(transport=transport,
                                          base_url="http://localhost") as client:
        yield Server(app, pool, upstream.app, client)


@pytest.fixture
async def server(upstream: ServerHandle[FakeUpstream]) -> AsyncIterator[Server]:
    async with reference(upstream) as srv:
        yield srv


def anthropic_error(response: httpx.Response, status: int, type_: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == type_
    message: str = body["error"]["message"]
    return message


# -- client authentication ----------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {"x-api-key": CLIENT},
    {"authorization": f"Bearer {CLIENT}"},
    {"authorization": f"bearer {CLIENT}"},
    {"authorization": f"Bearer   {CLIENT}"},  # RFC 9110: 1*SP between scheme and token
], ids=["x-api-key", "bearer", "scheme-case", "extra-spaces-after-scheme"])
async def test_client_key_is_accepted_in_either_header(server: Server,
                                                       headers: dict[str, str]) -> None:
    """A configured client key opens the proxy as x-api-key or Authorization: Bearer."""
    response = await server.client.post("/api/v1/messages", json=BODY, headers=headers)
    assert response.status_code == 200, response.text
    assert len(server.fake.requests) == 1


@pytest.mark.parametrize("headers", [
    {},
    {"x-api-key": ""},
    {"x-api-key": "ccr-client-WRONG-00000000"},
    {"x-api-key": CLIENT[:-1]},
    {"x-api-key": CLIENT + "0"},
    {"x-api-key": "x" + CLIENT},
    {"x-api-key": CLIENT.upper()},
    {"x-api-key": CLIENT.swapcase()},
    {"x-api-key": CLIENT[:10] + " " + CLIENT[10:]},
    {"authorization": f"Basic {CLIENT}"},
    {"authorization": CLIENT},
    {"authorization": f"Bearer{CLIENT}"},
    {"authorization": f"Bearer {CLIENT[:-2]}"},
    {"x-api-key": ADMIN},
    {"x-api-key": API_KEY},
    {"x-api-key": "wrong", "authorization": f"Bearer {CLIENT}"},
], ids=["missing", "empty", "wrong", "prefix", "suffix", "extra-prefix", "upper", "swapcase",
        "inner-space", "basic-scheme", "no-scheme", "no-space", "bearer-prefix", "admin-token",
        "pooled-api-key", "x-api-key-wins"])
async def test_wrong_missing_and_almost_right_keys_get_401(server: Server,
                                                           headers: dict[str, str]) -> None:
    """Every near miss is a 401 in Anthropic's shape, and neither upstream nor pool moves."""
    response = await server.client.post("/api/v1/messages", json=BODY, headers=headers)
    message = anthropic_error(response, 401, "authentication_error")
    assert "client key" in message
    server.untouched()


async def test_flood_of_bad_keys_leaves_every_account_available(server: Server) -> None:
    """200 concurrent bad-key requests: all 401, no account counted, nothing sent upstream."""
    statuses: list[int] = []

    async def one(i: int) -> None:
        r = await server.client.post("/api/v1/messages", json=BODY,
                                     headers={"x-api-key": f"guess-{i:04d}"})
        statuses.append(r.status_code)

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(one, i)
    assert statuses == [401] * 200
    server.untouched()
    assert server.pool.peek() == "alpha"


async def test_every_route_of_the_proxy_is_behind_the_key(server: Server) -> None:
    """count_tokens and models refuse a missing key too, before anything is chosen."""
    for method, path in [("POST", "/api/v1/messages/count_tokens"), ("GET", "/api/v1/models"),
                         ("GET", f"/api/v1/models/{MODEL}")]:
        response = await server.client.request(method, path, json=BODY,
                                               headers={"anthropic-version": "2023-06-01"})
        anthropic_error(response, 401, "authentication_error")
    server.untouched()


def test_client_auth_compares_against_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: a match on the first key still compares every configured key."""
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    auth = ClientAuth(["k-one-1111", "k-two-2222", "k-three-3333"])
    assert auth([(b"x-api-key", b"k-one-1111")])
    assert len(calls) == 3
    assert not auth([(b"x-api-key", b"k-nope")])
    assert len(calls) == 6
    assert "k-one" not in repr(auth)


def openai_error(response: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}  # no Anthropic "type": "error" envelope
    error: dict[str, Any] = body["error"]
    assert error["type"] == type_
    assert {"message", "type", "param", "code"} <= set(error)
    return error


async def test_openai_route_refuses_in_openai_shape(upstream: ServerHandle[FakeUpstream],
                                                    ) -> None:
    """On /v1/chat/completions a bad key and an oversize body are refused in OpenAI's shape."""
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    async with reference(upstream, max_body_size=256) as srv:
        bad = await srv.client.post("/api/v1/chat/completions", json=chat,
                                    headers={"authorization": "Bearer nope"})
        missing = await srv.client.post("/api/v1/chat/completions", json=chat)
        big = await srv.client.post("/api/v1/chat/completions", content=b"{" + b" " * 300 + b"}",
                                    headers={"authorization": f"Bearer {CLIENT}", **JSON})
        srv.untouched()
        ok = await srv.client.post("/api/v1/chat/completions", json=chat,
                                   headers={"authorization": f"Bearer {CLIENT}"})
    assert openai_error(bad, 401, "authentication_error")["code"] == "invalid_api_key"
    assert openai_error(missing, 401, "authentication_error")["code"] == "invalid_api_key"
    assert "256 bytes" in openai_error(big, 413, "invalid_request_error")["message"]
    assert ok.status_code == 200, ok.text
    assert ok.json()["object"] == "chat.completion"


async def test_models_refusal_speaks_the_clients_shape(server: Server) -> None:
    """/v1/models: an OpenAI client's bad key gets OpenAI's 401, an Anthropic client's theirs."""
    openai_client = await server.client.get("/api/v1/models",
                                            headers={"authorization": "Bearer nope"})
    openai_error(openai_client, 401, "authentication_error")
    anthropic_client = await server.client.get(
        "/api/v1/models", headers={"x-api-key": "nope", "anthropic-version": "2023-06-01"})
    anthropic_error(anthropic_client, 401, "authentication_error")
    server.untouched()


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1]", b'{"model": "m", "messages": 5}'],
                         ids=["garbage", "empty", "array", "wrong-type"])
async def test_malformed_chat_request_gets_openai_400_and_is_not_forwarded(
        server: Server, body: bytes) -> None:
    """A malformed chat request is a 400 in OpenAI's shape; no message request goes upstream."""
    response = await server.client.post("/api/v1/chat/completions", content=body,
                                        headers={"authorization": f"Bearer {CLIENT}", **JSON})
    openai_error(response, 400, "invalid_request_error")
    assert server.fake.requests_for(path="/v1/messages") == []


# -- request hygiene ------------------------------------------------------------------------

async def test_oversize_body_with_content_length_gets_413(upstream: ServerHandle[FakeUpstream],
                                                          ) -> None:
    """A declared body over max_body_size is refused with a clear 413 before anything else."""
    async with reference(upstream, max_body_size=1024) as srv:
        response = await srv.client.post("/api/v1/messages", content=b"{" + b" " * 2000 + b"}",
                                         headers={"x-api-key": CLIENT, **JSON})
        message = anthropic_error(response, 413, "request_too_large")
        assert "1024 bytes" in message
        srv.untouched()


async def test_oversize_body_in_many_chunks_without_length_gets_413(
        upstream: ServerHandle[FakeUpstream]) -> None:
    """A chunked body with no content-length is counted as it arrives and cut at the limit."""
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(500):
            sent += 1
            yield b" " * 100

    async with reference(upstream, max_body_size=4096) as srv:
        response = await srv.client.post("/api/v1/messages", content=chunks(),
                                         headers={"x-api-key": CLIENT, **JSON})
        anthropic_error(response, 413, "request_too_large")
        srv.untouched()
    assert sent < 500  # refused on the way, not after reading everything


async def test_body_of_exactly_the_limit_passes(upstream: ServerHandle[FakeUpstream]) -> None:
    """The limit is inclusive: a body of exactly max_body_size bytes is served."""
    raw = msgspec.json.encode(BODY)
    async with reference(upstream, max_body_size=len(raw) + 40) as srv:
        padded = raw[:-1] + b" " * 40 + b"}"
        response = await srv.client.post("/api/v1/messages", content=padded,
                                         headers={"x-api-key": CLIENT, **JSON})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b'{"model": 5}', b"\xff\xfe",
                                  b'{"model": "m", "messages": [}'],
                         ids=["garbage", "empty", "array", "wrong-type", "binary", "truncated"])
@pytest.mark.parametrize("path", ["/api/v1/messages", "/api/v1/messages/count_tokens"])
async def test_malformed_json_gets_400_without_reaching_upstream(server: Server, path: str,
                                                                 body: bytes) -> None:
    """A body that is not a JSON request object is refused with 400; upstream sees nothing."""
    headers = {"x-api-key": CLIENT, "content-type": "application/json"}
    response = await server.client.post(path, content=body, headers=headers)
    anthropic_error(response, 400, "invalid_request_error")
    server.untouched()


async def test_client_credentials_and_cookies_never_reach_upstream(server: Server) -> None:
    """Client keys, cookies and proxy credentials are replaced or dropped, for both kinds."""
    sneaky = {"x-api-key": CLIENT, "authorization": f"Bearer {ADMIN}",
              "cookie": "session=COOKIE-SECRET-99", "proxy-authorization": "Basic PROXY-SECRET",
              "connection": "x-leak", "x-leak": "LEAK-SECRET"}
    for name in ("alpha", "beta"):
        response = await server.client.post("/api/v1/messages", json=BODY,
                                            headers={**sneaky, "x-account-name": name})
        assert response.status_code == 200, response.text
    alpha, beta = server.fake.requests
    assert alpha.credential == API_KEY
    assert alpha.header("authorization") is None
    assert beta.credential == ACCESS
    assert beta.header("x-api-key") is None
    for rec in (alpha, beta):
        names = {k for k, _ in rec.headers}
        assert not names & {"cookie", "proxy-authorization", "x-leak", "x-account-name"}
        seen = repr(rec.headers) + rec.body.decode()
        for secret in (CLIENT, ADMIN, "COOKIE-SECRET", "PROXY-SECRET", "LEAK-SECRET"):
            assert secret not in seen


PATH_TRICKS = [
    ("GET", "/api/v1/../../etc/passwd"),
    ("GET", "/api/v1/%2e%2e/%2e%2e/etc/passwd"),
    ("GET", "/api/%2e%2e/%2e%2e/etc/passwd"),
    ("POST", "/api//v1/messages"),
    ("POST", "/api/v1//messages"),
    ("POST", "/api/v1/messages/../messages"),
    ("POST", "/api/v1/messages/%2e%2e/messages"),
    ("GET", "/api/v1/models/../../../etc/passwd"),
    ("GET", "/api/v1/models/..%2f..%2f..%2fetc%2fpasswd"),
    ("GET", "/api/v1/models/%2e%2e"),
    ("GET", "/api/v1/models/.."),
    ("GET", "/api/v1/models/file:%2f%2f%2fetc%2fpasswd"),
    ("GET", "/api/v1/models/a%2fb"),
    ("GET", "/api/file:///etc/passwd"),
    ("GET", "/api/..%5c..%5cwindows%5cwin.ini"),
]


def test_path_tricks_get_404_and_never_reach_upstream(
        upstream: ServerHandle[FakeUpstream]) -> None:
    """Dot segments, doubled and encoded slashes under /api: 404, nothing sent upstream."""
    pool = AccountPool(accounts())
    settings = Settings(upstream_url=upstream.url, auth_tokens=(CLIENT,),
                        oauth_token_url=upstream.url + "/v1/oauth/token")
    app = Rotator(settings, pool=pool).app
    body = msgspec.json.encode(BODY)
    with serve_app(app) as served:
        for method, target in PATH_TRICKS:
            status, answer = raw_request(served, method, target, body if method == "POST" else b"")
            assert status == 404, (target, status, answer)
            assert b"ccrotate: no route" in answer, target
            assert upstream.app.requests == [], target
    assert all(s.requests == 0 for s in pool.statuses())


def raw_request(served: ServerHandle[Any], method: str, target: str,
                body: bytes) -> tuple[int, bytes]:
    """Send one request line exactly as given (httpx would normalise it) and read the answer."""
    import socket

    head = (f"{method} {target} HTTP/1.1\r\nhost: localhost\r\nx-api-key: {CLIENT}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode()
    with socket.create_connection((served.host, served.port), timeout=5) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


# -- start-up rule: no token, loopback only -------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_no_token_on_loopback_is_allowed_with_a_notice(host: str) -> None:
    """Without a client token a loopback bind is fine, and the notice says why it is."""
    notice = check_bind(Settings(host=host))
    assert notice is not None
    assert "loopback" in notice
    assert "CCROTATE_AUTH_TOKEN" in notice


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.internal"])
def test_no_token_on_a_public_address_is_refused(host: str) -> None:
    """A non-loopback bind without a client token fails, naming both ways out."""
    with pytest.raises(ConfigError) as info:
        check_bind(Settings(host=host))
    assert "CCROTATE_AUTH_TOKEN" in str(info.value)
    assert "--allow-remote" in str(info.value)


def test_admin_token_alone_does_not_count_as_client_auth() -> None:
    """An admin token guards the status API only: a public bind still needs a client token."""
    with pytest.raises(ConfigError):
        check_bind(Settings(host="0.0.0.0", admin_token=ADMIN))


def test_explicit_opt_in_binds_publicly_with_a_warning() -> None:
    """--allow-remote permits the public bind but the notice is a loud warning (logged at
    WARNING level, which says "WARNING" once: the notice itself does not repeat it)."""
    notice = check_bind(Settings(host="0.0.0.0", allow_remote=True))
    assert notice is not None
    assert not notice.startswith("WARNING")
    assert "NO client auth" in notice


def test_a_token_silences_the_notice_on_any_address() -> None:
    """With a client token configured there is nothing to warn about, even on 0.0.0.0."""
    assert check_bind(Settings(host="0.0.0.0", auth_tokens=(CLIENT,))) is None


def test_serve_says_so_at_start_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   caplog: pytest.LogCaptureFixture) -> None:
    """``ccrotate serve`` without a token logs the loopback notice before it starts uvicorn."""
    import uvicorn

    accounts_file = tmp_path / "accounts.json"
    accounts_file.write_text(msgspec.json.encode(
        {"version": 1, "accounts": {"alpha": {"apiKey": API_KEY}}}).decode())
    ran: dict[str, Any] = {}
    # run_server binds the socket itself and hands it to uvicorn.Server.run.
    monkeypatch.setattr(uvicorn.Server, "run",
                        lambda self, sockets: ran.update(vars(self.config), sockets=sockets))
    caplog.set_level(logging.DEBUG)
    run_server(Settings(accounts_path=accounts_file, credentials_path=tmp_path / "none.json",
                        port=0))
    assert ran["host"] == "127.0.0.1"
    assert "loopback" in caplog.text
    assert "CCROTATE_AUTH_TOKEN" in caplog.text
    assert API_KEY not in caplog.text
    with pytest.raises(ConfigError):
        run_server(Settings(host="0.0.0.0", accounts_path=accounts_file))
    assert ran["host"] == "127.0.0.1"  # the refused bind never reached uvicorn


# -- the status API's keys ------------------------------------------------------------------

READS = [("GET", "/status"), ("GET", "/status/accounts"), ("GET", "/status/accounts/alpha"),
         ("HEAD", "/status/accounts")]
ACTIONS = [("POST", "/status/accounts/alpha/disable"), ("POST", "/status/accounts/alpha/enable"),
           ("POST", "/status/accounts/beta/refresh")]


def status_error(response: httpx.Response, status: int, type_: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == type_
    assert set(response.json()) == {"error"}
    message: str = error["message"]
    return message


async def test_status_reads_take_a_client_or_the_admin_key(server: Server) -> None:
    """With tokens configured, reads need a client key or the admin key; others get 401."""
    for method, path in READS:
        for key in (CLIENT, ADMIN):
            ok = await server.client.request(method, path, headers={"x-api-key": key})
            assert ok.status_code == 200, (path, ok.text)
        bearer = await server.client.request(method, path,
                                             headers={"authorization": f"Bearer {ADMIN}"})
        assert bearer.status_code == 200
        for headers in ({}, {"x-api-key": CLIENT.upper()}, {"x-api-key": API_KEY}):
            refused = await server.client.request(method, path, headers=headers)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"].startswith("Bearer")
    refused = await server.client.get("/status")
    assert "key is required" in status_error(refused, 401, "authentication_error")


async def test_status_actions_take_the_admin_key_only(server: Server) -> None:
    """Actions: admin key 200; a client key 403 (read-only); no or wrong key 401; nothing moves."""
    no_key = await server.client.post("/status/accounts/alpha/disable")
    status_error(no_key, 401, "authentication_error")
    wrong = await server.client.post("/status/accounts/alpha/disable",
                                     headers={"x-api-key": ADMIN[:-1]})
    assert "invalid key" in status_error(wrong, 401, "authentication_error")
    client = await server.client.post("/status/accounts/alpha/disable",
                                      headers={"x-api-key": CLIENT})
    assert "CCROTATE_ADMIN_TOKEN" in status_error(client, 403, "permission_error")
    assert server.pool.status("alpha").state is AccountState.AVAILABLE
    admin = await server.client.post("/status/accounts/alpha/disable",
                                     headers={"authorization": f"Bearer {ADMIN}"})
    assert admin.status_code == 200
    assert server.pool.status("alpha").state is AccountState.DISABLED


async def test_unknown_names_are_not_probed_without_a_key(server: Server) -> None:
    """Without a key an unknown account or route answers 401, never a revealing 404."""
    for method, path in [("GET", "/status/accounts/nobody"), ("GET", "/status/nothing"),
                         ("POST", "/status/accounts/nobody/disable")]:
        response = await server.client.request(method, path)
        assert response.status_code == 401, path


async def test_without_an_admin_token_no_key_can_act(upstream: ServerHandle[FakeUpstream],
                                                     ) -> None:
    """Client tokens but no admin token: reads work with a client key, actions never do."""
    async with reference(upstream, admin_token=None) as srv:
        read = await srv.client.get("/status", headers={"x-api-key": CLIENT})
        assert read.status_code == 200
        for method, path in ACTIONS:
            refused = await srv.client.request(method, path, headers={"x-api-key": CLIENT})
            status_error(refused, 403, "permission_error")
        assert srv.pool.status("alpha").state is AccountState.AVAILABLE


async def test_admin_token_alone_guards_reads_too(upstream: ServerHandle[FakeUpstream]) -> None:
    """An admin token without client tokens: the proxy is open, /status needs the admin key."""
    async with reference(upstream, auth_tokens=(), admin_token=ADMIN) as srv:
        anonymous = await srv.client.get("/status")
        status_error(anonymous, 401, "authentication_error")
        admin = await srv.client.get("/status", headers={"x-api-key": ADMIN})
        assert admin.status_code == 200
        proxied = await srv.client.post("/api/v1/messages", json=BODY)
        assert proxied.status_code == 200


@pytest.mark.parametrize("peer", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
async def test_no_tokens_at_all_open_status_to_loopback_peers(
        upstream: ServerHandle[FakeUpstream], peer: str) -> None:
    """Nothing configured: loopback peers may read and act without a key."""
    async with reference(upstream, auth_tokens=(), admin_token=None, peer=peer) as srv:
        assert (await srv.client.get("/status")).status_code == 200
        acted = await srv.client.post("/status/accounts/alpha/disable")
        assert acted.status_code == 200
        assert srv.pool.status("alpha").state is AccountState.DISABLED


@pytest.mark.parametrize("peer", ["192.0.2.44", "2001:db8::7", "::ffff:192.0.2.44"])
async def test_no_tokens_at_all_refuse_status_to_remote_peers(
        upstream: ServerHandle[FakeUpstream], peer: str) -> None:
    """Nothing configured and a remote peer (--allow-remote): every status route is 403."""
    async with reference(upstream, auth_tokens=(), admin_token=None, peer=peer) as srv:
        for method, path in READS + ACTIONS:
            response = await srv.client.request(method, path)
            assert response.status_code == 403, path
            if method != "HEAD":
                assert "loopback" in status_error(response, 403, "permission_error")
        assert srv.pool.status("alpha").state is AccountState.AVAILABLE


async def test_health_is_open_without_a_key(server: Server) -> None:
    """/health answers a load balancer without any key, even with every token configured."""
    response = await server.client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


# -- secrets never leave ----------------------------------------------------------------------

async def test_no_secret_in_any_response_or_log_line(server: Server,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Across proxy, status, action and refusal answers, and every DEBUG log line: no token."""
    caplog.set_level(logging.DEBUG)
    admin = {"x-api-key": ADMIN}
    calls: list[tuple[str, str, dict[str, str], Any]] = [
        ("POST", "/api/v1/messages", {"x-api-key": CLIENT}, BODY),
        ("POST", "/api/v1/messages", {"x-api-key": CLIENT, "x-account-name": "beta"}, BODY),
        ("POST", "/api/v1/messages/count_tokens", {"authorization": f"Bearer {CLIENT}"}, BODY),
        ("GET", "/api/v1/models", {"x-api-key": CLIENT}, None),
        ("POST", "/api/v1/messages", {"x-api-key": CLIENT + "x"}, BODY),
        ("POST", "/api/v1/messages", {"x-api-key": CLIENT}, "not json"),
        ("BREAK", "", {}, None),  # beta's upstream error echoes its token (it must not show)
        ("GET", "/status", admin, None),
        ("GET", "/status/accounts", {"x-api-key": CLIENT}, None),
        ("GET", "/status/accounts/beta", admin, None),
        ("POST", "/status/accounts/beta/refresh", admin, None),
        ("POST", "/status/accounts/alpha/refresh", admin, None),
        ("POST", "/status/accounts/alpha/disable", admin, None),
        ("POST", "/status/accounts/alpha/enable", admin, None),
        ("POST", "/status/accounts/alpha/disable", {"x-api-key": CLIENT}, None),
        ("GET", "/status/accounts/nobody", admin, None),
        ("GET", "/health", {}, None),
    ]
    seen: list[str] = []
    for method, path, headers, body in calls:
        if method == "BREAK":
            server.pool.report_auth_error("beta", f"upstream said 401 for {ACCESS}")
            continue
        kwargs: dict[str, Any] = ({"json": body} if isinstance(body, dict)
                                  else {"content": body} if body else {})
        response = await server.client.request(method, path, headers=headers, **kwargs)
        seen.append(f"{path} {response.status_code} {response.headers!r} {response.text}")
    text = "\n".join(seen) + "\n" + caplog.text
    for secret in SECRETS:
        assert secret not in text
        assert secret[4:-4] not in text  # not even a fragment
    assert "…xk42" in text  # the masked hint is what operators get instead
