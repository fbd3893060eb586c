"""Header hygiene, credentials and Claude Code identity injection.

Unit tests on ``_headers``/``_wire``, then end to end: what the fake upstream
recorded behind a served proxy, and what the client got back.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from ccrotate._proxy.headers import request_headers, response_headers
from ccrotate._wire import SSEScanner, inject_identity, merge_beta, needs_identity, peek_request
from ccrotate.testing import Reply, serve_app
from conftest import CLAUDE_CODE_SAMPLE, HELLO, KEY_A, MODEL, TOKEN_B, Stack

IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."
AGENT = "You are a Claude agent, built on Anthropic's Claude Agent SDK."
BILLING = {"type": "text",
           "text": "x-anthropic-billing-header: cc_version=2.1.197; cc_entrypoint=cli;"}
IDENT_BLOCK = {"type": "text", "text": IDENTITY}
TERSE = {"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}
SAMPLE = CLAUDE_CODE_SAMPLE


def body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 64, "messages": HELLO, **extra}


def raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in headers.items()]


# -- request headers (unit) ---------------------------------------------------------------------

def test_request_headers_drop_credentials_routing_and_hop_by_hop() -> None:
    """Client credentials, pinning, host, cookies, framing and hop-by-hop headers stay behind."""
    fwd, beta, pinned = request_headers(raw({
        "host": "proxy:8080", "x-api-key": "client", "authorization": "Bearer client",
        "x-account-name": " b ", "cookie": "session=1", "content-length": "12",
        "connection": "keep-alive, X-Secret-Hop", "x-secret-hop": "1", "keep-alive": "5",
        "proxy-connection": "keep-alive", "proxy-authorization": "Basic eA==",
        "te": "trailers", "trailer": "x", "transfer-encoding": "chunked", "upgrade": "h2c",
        "accept-encoding": "gzip", "expect": "100-continue",
        "content-type": "application/json", "user-agent": "claude-cli/2.1.197",
        "x-claude-code-session-id": "abc",
    }))
    assert pinned == "b"
    assert beta is None
    assert fwd == [("content-type", "application/json"), ("user-agent", "claude-cli/2.1.197"),
                   ("x-claude-code-session-id", "abc"), ("anthropic-version", "2023-06-01")]


def test_request_headers_keep_version_and_collect_betas_and_duplicates() -> None:
    """A sent anthropic-version is kept as is; betas are joined; repeated headers survive."""
    fwd, beta, pinned = request_headers([
        (b"anthropic-version", b"2026-10-21"), (b"anthropic-beta", b"a-1,b-2"),
        (b"anthropic-beta", b"c-3"), (b"x-extra", b"1"), (b"x-extra", b"2")])
    assert fwd == [("anthropic-version", "2026-10-21"), ("x-extra", "1"), ("x-extra", "2")]
    assert beta == "a-1,b-2,c-3"
    assert pinned is None


@pytest.mark.parametrize(("client", "merged"), [
    (None, "oauth-2025-04-20"),
    ("", "oauth-2025-04-20"),
    ("claude-code-20250219", "claude-code-20250219,oauth-2025-04-20"),
    ("b-1, a-2", "b-1,a-2,oauth-2025-04-20"),
    ("x-1,oauth-2025-04-20,y-2", "x-1,oauth-2025-04-20,y-2"),
])
def test_merge_beta_keeps_the_clients_betas_in_order(client: str | None, merged: str) -> None:
    """The OAuth beta is added once, after the client's own, never replacing them."""
    assert merge_beta(client, "oauth-2025-04-20") == merged


def test_response_headers_drop_hop_by_hop_and_framing_keep_duplicates() -> None:
    """Upstream hop-by-hop and framing headers are dropped; names lower-cased; set-cookie kept."""
    out = response_headers([
        (b"Content-Type", b"application/json"), (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"1"), (b"Keep-Alive", b"timeout=5"), (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"10"), (b"Proxy-Authenticate", b"Basic"), (b"Date", b"x"),
        (b"Server", b"cloudflare"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"),
        (b"Request-Id", b"req_1"), (b"Content-Encoding", b"gzip")])
    assert out == [(b"content-type", b"application/json"), (b"set-cookie", b"a=1"),
                   (b"set-cookie", b"b=2"), (b"request-id", b"req_1"),
                   (b"content-encoding", b"gzip")]


# -- identity (unit) ----------------------------------------------------------------------------

@pytest.mark.parametrize(("system", "needed"), [
    (None, True), ("Be terse.", True), ([TERSE], True), ([BILLING, TERSE], True),
    (IDENTITY, False), (AGENT, False), ([IDENT_BLOCK, TERSE], False),
    ([BILLING, {"type": "text", "text": AGENT}, TERSE], False), ([TERSE, IDENT_BLOCK], True),
])
def test_needs_identity(system: Any, needed: bool) -> None:
    """Identity is needed unless the first non-billing system block is an identity line."""
    doc = body() if system is None else body(system=system)
    assert needs_identity(peek_request(json.dumps(doc).encode()).system) is needed
    if system is None:  # an explicit null is the same as no system at all
        assert needs_identity(peek_request(json.dumps(body(system=None)).encode()).system)


@pytest.mark.parametrize(("system", "expected"), [
    (None, [IDENT_BLOCK]),
    ("", [IDENT_BLOCK]),
    ([], [IDENT_BLOCK]),
    ("Be terse.", [IDENT_BLOCK, {"type": "text", "text": "Be terse."}]),
    ([TERSE], [IDENT_BLOCK, TERSE]),
    ([BILLING, TERSE], [BILLING, IDENT_BLOCK, TERSE]),
])
def test_inject_identity_puts_it_first_and_keeps_the_rest(system: Any, expected: Any) -> None:
    """The identity goes first (after billing blocks); every other field is unchanged."""
    doc = body() if system is None else body(system=system)
    out = json.loads(inject_identity(json.dumps(doc).encode(), IDENTITY))
    assert out.pop("system") == expected
    doc.pop("system", None)
    assert out == doc


def test_sse_scanner_sees_events_split_across_chunks() -> None:
    """Events cut anywhere (CRLF too) are counted once; errors and the end are noticed."""
    stream = (b"event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":"
              b"{\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\r\n\r\n"
              b"event: ping\ndata: {\"type\":\"ping\"}\n\n"
              b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":"
              b"{\"output_tokens\":9}}\n\nevent: message_stop\ndata: {}\n\n")
    scanner = SSEScanner()
    for i in range(0, len(stream), 7):
        scanner.feed(stream[i:i + 7])
    assert (scanner.events, scanner.finished, scanner.error) == (4, True, None)
    assert (scanner.usage.input_tokens, scanner.usage.output_tokens) == (7, 9)
    errored = SSEScanner()
    errored.feed(b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
                 b'"message":"Overloaded"}}\n\n')
    assert errored.error == ("overloaded_error", "Overloaded")
    with pytest.raises(msgspec.DecodeError):
        peek_request(b'{"model": ')


# -- end to end: what reaches the upstream ------------------------------------------------------

def post(stack: Stack, doc: Any, headers: dict[str, str] | None = None,
         path: str = "/v1/messages") -> httpx.Response:
    content = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return httpx.post(stack.url + path, content=content,
                      headers={"content-type": "application/json", **(headers or {})})


def test_oauth_account_gets_bearer_and_merged_beta(proxy_server: Stack) -> None:
    """OAuth: Bearer token, oauth beta after the client's betas, no x-api-key; version default."""
    r = post(proxy_server, body(system=IDENTITY), {
        "x-account-name": "b", "anthropic-beta": "claude-code-20250219,context-1m-2025-08-07",
        "x-api-key": "client-key"})
    assert r.status_code == 200, r.text
    rec = proxy_server.fake.last_request
    assert rec.header("authorization") == f"Bearer {TOKEN_B}"
    assert rec.header("x-api-key") is None
    assert rec.betas == ["claude-code-20250219", "context-1m-2025-08-07", "oauth-2025-04-20"]
    assert rec.header("anthropic-version") == "2023-06-01"


def test_api_key_account_gets_x_api_key_and_the_clients_version(proxy_server: Stack) -> None:
    """API key: x-api-key only; the client's anthropic-version and betas pass untouched."""
    r = post(proxy_server, body(), {"x-account-name": "a", "anthropic-version": "2026-10-21",
                                    "anthropic-beta": "files-api-2025-04-14",
                                    "authorization": "Bearer client-key"})
    assert r.status_code == 200, r.text
    rec = proxy_server.fake.last_request
    assert rec.header("x-api-key") == KEY_A
    assert rec.header("authorization") is None
    assert rec.header("anthropic-version") == "2026-10-21"
    assert rec.betas == ["files-api-2025-04-14"]


def test_client_only_headers_never_reach_upstream(proxy_server: Stack) -> None:
    """Client credentials, pinning, Host, Cookie, hop-by-hop and Connection-named headers stay."""
    r = post(proxy_server, body(), {
        "x-api-key": "client-key", "authorization": "Bearer client-key", "x-account-name": "c",
        "cookie": "session=secret", "connection": "keep-alive, x-secret-hop",
        "x-secret-hop": "1", "keep-alive": "timeout=5", "proxy-authorization": "Basic eA==",
        "proxy-connection": "keep-alive", "te": "trailers", "accept-encoding": "gzip, br",
        "x-custom": "kept"})
    assert r.status_code == 200, r.text
    rec = proxy_server.fake.last_request
    names = {k for k, _ in rec.headers}
    assert names.isdisjoint({"authorization", "x-account-name", "cookie", "x-secret-hop",
                             "keep-alive", "proxy-authorization", "proxy-connection", "te"})
    assert rec.header("x-api-key") == "sk-ant-api03-test-cccc-0003"
    assert rec.header("host") == f"127.0.0.1:{proxy_server.upstream.port}"
    assert rec.header("connection") in (None, "keep-alive")
    assert rec.header("accept-encoding") == "identity"
    assert rec.header("x-custom") == "kept"
    assert rec.header("content-length") == str(len(rec.body))


def test_upstream_hop_by_hop_headers_never_reach_the_client(proxy_server: Stack) -> None:
    """Hop-by-hop and Connection-named upstream headers are dropped, streamed or not."""
    hops = {"keep-alive": "timeout=5", "connection": "x-upstream-hop",
            "x-upstream-hop": "1", "proxy-authenticate": "Basic", "x-kept": "yes"}
    for stream in (False, True):
        proxy_server.fake.script_any(Reply(headers=hops))
        r = post(proxy_server, body(stream=stream))
        assert r.status_code == 200
        assert r.headers["x-kept"] == "yes"
        for name in ("keep-alive", "x-upstream-hop", "proxy-authenticate"):
            assert name not in r.headers
        assert r.headers.get("connection", "keep-alive") == "keep-alive"


def test_buffered_responses_have_a_correct_content_length(proxy_server: Stack) -> None:
    """JSON answers, upstream errors and proxy errors carry exactly one, correct length."""
    answers = [post(proxy_server, body()), post(proxy_server, body(messages=[])),
               post(proxy_server, b"not json"),
               httpx.get(proxy_server.url + "/v1/models")]
    assert [r.status_code for r in answers] == [200, 400, 400, 200]
    for r in answers:
        assert r.headers.get_list("content-length") == [str(len(r.content))]
    streamed = post(proxy_server, body(stream=True))
    assert "content-length" not in streamed.headers
    assert streamed.headers["content-type"].startswith("text/event-stream")


async def _gzip_upstream(scope: Any, receive: Any, send: Any) -> None:
    # An upstream that compresses even though the proxy asked for identity.
    if scope["type"] != "http":
        return
    request = b""
    while True:
        message = await receive()
        request += message.get("body", b"")
        if not message.get("more_body"):
            break
    stream = json.loads(request).get("stream", False)
    if not stream:
        payload = gzip.compress(json.dumps({"id": "msg_1", "type": "message", "content": [],
                                            "role": "assistant"}).encode())
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-encoding", b"gzip"),
            (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
        return
    z = zlib.compressobj(wbits=31)
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"content-encoding", b"gzip")]})
    for event in (b"event: message_start\ndata: {}\n\n", b"event: message_stop\ndata: {}\n\n"):
        chunk = z.compress(event) + z.flush(zlib.Z_SYNC_FLUSH)
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": z.flush(), "more_body": False})


@pytest.fixture
def gzip_upstream() -> Iterator[str]:
    with serve_app(_gzip_upstream) as handle:
        yield handle.url


def test_compressed_upstream_bodies_pass_through_with_their_encoding(
        serve_proxy: Any, gzip_upstream: str) -> None:
    """Encoded bytes go out unchanged with their content-encoding, so clients decode once."""
    stack: Stack = serve_proxy(upstream_url=gzip_upstream)
    plain = post(stack, body())
    assert plain.headers["content-encoding"] == "gzip"
    assert plain.json()["id"] == "msg_1"
    streamed = post(stack, body(stream=True))
    assert streamed.headers["content-encoding"] == "gzip"
    assert streamed.text == "event: message_start\ndata: {}\n\nevent: message_stop\ndata: {}\n\n"


# -- end to end: identity injection (the fake enforces the identity rule) -----------------------

@pytest.mark.parametrize(("system", "expected"), [
    (None, [IDENT_BLOCK]),
    ("Be terse.", [IDENT_BLOCK, {"type": "text", "text": "Be terse."}]),
    ([TERSE], [IDENT_BLOCK, TERSE]),
    ([BILLING, TERSE], [BILLING, IDENT_BLOCK, TERSE]),
])
def test_oauth_requests_get_the_identity_first(proxy_server: Stack, system: Any,
                                               expected: Any) -> None:
    """An OAuth account's request gains the identity block, the client's system after it."""
    doc = body() if system is None else body(system=system)
    r = post(proxy_server, doc, {"x-account-name": "b"})
    assert r.status_code == 200, r.text
    sent = proxy_server.fake.last_request.json
    assert sent.pop("system") == expected
    doc.pop("system", None)
    assert sent == doc


@pytest.mark.parametrize("system", [
    IDENTITY, AGENT, [IDENT_BLOCK, TERSE], [BILLING, IDENT_BLOCK, TERSE],
    [BILLING, {"type": "text", "text": AGENT}],
])
def test_requests_with_an_identity_are_sent_byte_for_byte(proxy_server: Stack,
                                                         system: Any) -> None:
    """When an identity line is already first, nothing is injected: the body is untouched."""
    content = json.dumps(body(system=system)).encode()
    r = post(proxy_server, content, {"x-account-name": "b"})
    assert r.status_code == 200, r.text
    assert proxy_server.fake.last_request.body == content


def test_api_key_bodies_are_never_touched(proxy_server: Stack) -> None:
    """API-key accounts get the client's body byte for byte, identity or not."""
    content = json.dumps(body(system="Be terse.")).encode()
    for name in ("a", "c"):
        assert post(proxy_server, content, {"x-account-name": name}).status_code == 200
        assert proxy_server.fake.last_request.body == content


def test_inject_identity_false_leaves_oauth_bodies_alone(serve_proxy: Any) -> None:
    """With ``inject_identity=False`` the body goes as sent, and the API's refusal comes back."""
    stack: Stack = serve_proxy(inject_identity=False)
    content = json.dumps(body(system="Be terse.")).encode()
    r = post(stack, content, {"x-account-name": "b"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Error"  # the real API's bare refusal
    assert stack.fake.last_request.body == content
    assert stack.pool.status("b").failures == 0


def test_the_real_claude_code_request_passes_unchanged(proxy_server: Stack) -> None:
    """Claude Code 2.1.197's captured request reaches an OAuth account with its body intact."""
    sample = json.loads(SAMPLE.read_text())
    content = json.dumps(sample["body"]).encode()
    headers = {k: v for k, v in sample["headers"].items()
               if k not in ("host", "content-length")}
    headers["x-account-name"] = "b"
    r = httpx.post(proxy_server.url + sample["path"], content=content, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["x-ccrotate-account"] == "b"
    assert "event: message_stop" in r.text
    rec = proxy_server.fake.last_request
    assert (rec.path, rec.query) == ("/v1/messages", "beta=true")
    assert rec.body == content
    assert rec.header("authorization") == f"Bearer {TOKEN_B}"
    assert rec.header("x-api-key") is None
    assert rec.betas == [*sample["headers"]["anthropic-beta"].split(","), "oauth-2025-04-20"]
    assert rec.header("x-claude-code-session-id") == sample["headers"][
        "x-claude-code-session-id"]
    assert rec.header("user-agent") == sample["headers"]["user-agent"]


def test_relocate_moves_the_client_system_prompt_into_the_first_user_turn() -> None:
    """relocate=True leaves only the identity in system; the client's prompt leads turn one."""
    import json

    from ccrotate._wire import CLAUDE_CODE_IDENTITY, inject_identity

    body = json.dumps({"model": "m", "max_tokens": 5,
                       "system": [{"type": "text", "text": "x-anthropic-billing-header: v=1"},
                                  {"type": "text", "text": "You are Aider.",
                                   "cache_control": {"type": "ephemeral"}}],
                       "messages": [{"role": "user", "content": "hi"},
                                    {"role": "assistant", "content": "yo"}]}).encode()
    out = json.loads(inject_identity(body, relocate=True))
    assert out["system"] == [{"type": "text", "text": "x-anthropic-billing-header: v=1"},
                             {"type": "text", "text": CLAUDE_CODE_IDENTITY}]
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "You are Aider.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "hi"}]
    assert out["messages"][1] == {"role": "assistant", "content": "yo"}
    # Without relocation the prompt stays in system, after the identity.
    kept = json.loads(inject_identity(body))
    assert [b["text"] for b in kept["system"]][1:] == [CLAUDE_CODE_IDENTITY, "You are Aider."]


def test_relocate_without_a_user_first_turn_keeps_the_system_prompt() -> None:
    """No user turn to carry it: the prompt stays in system rather than being lost."""
    import json

    from ccrotate._wire import inject_identity

    body = json.dumps({"model": "m", "max_tokens": 5, "system": "Be terse.",
                       "messages": [{"role": "assistant", "content": "yo"}]}).encode()
    out = json.loads(inject_identity(body, relocate=True))
    assert [b["text"] for b in out["system"]][-1] == "Be terse."


def test_relocate_system_through_the_proxy_satisfies_the_identity_rule(
        serve_proxy: Any) -> None:
    """relocate_system=True: the OAuth request is accepted and carries the prompt in turn one."""
    stack: Stack = serve_proxy(relocate_system=True)
    r = post(stack, json.dumps(body(system="Be terse.")).encode(), {"x-account-name": "b"})
    assert r.status_code == 200, r.text
    sent = stack.fake.last_request.json
    assert [b["text"] for b in sent["system"]] == [IDENTITY]
    assert sent["messages"][0]["content"][0] == {"type": "text", "text": "Be terse."}


def test_the_oauth_beta_of_a_client_never_reaches_an_api_key_account(
        proxy_server: Stack) -> None:
    """An OAuth-logged-in client's beta is dropped for API keys; its other betas are kept."""
    r = post(proxy_server, body(), {"x-account-name": "a",
                                    "anthropic-beta": "oauth-2025-04-20,files-api-2025-04-14"})
    assert r.status_code == 200
    assert proxy_server.fake.last_request.betas == ["files-api-2025-04-14"]
    r = post(proxy_server, body(), {"x-account-name": "a", "anthropic-beta": "oauth-2025-04-20"})
    assert r.status_code == 200
    assert proxy_server.fake.last_request.header("anthropic-beta") is None


async def _gzip_stream_then_cut(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"content-encoding", b"gzip")]})
    packed = gzip.compress(b"event: message_start\ndata: {}\n\n" * 50)
    await send({"type": "http.response.body", "body": packed[:40], "more_body": True})
    await send({"type": "http.response.body", "body": packed[40:80], "more_body": True})
    raise RuntimeError("the upstream dies mid-stream")  # uvicorn drops the connection


def test_an_encoded_stream_cut_upstream_is_cut_for_the_client_too(serve_proxy: Any) -> None:
    """A still-gzipped stream that dies is aborted, never patched with a plain-text event."""
    with serve_app(_gzip_stream_then_cut) as upstream:
        stack: Stack = serve_proxy(upstream_url=upstream.url)
        raw = b""
        with pytest.raises(httpx.RemoteProtocolError), httpx.stream(  # noqa: PT012
                "POST", stack.url + "/v1/messages", json=body(stream=True)) as r:
            assert r.headers["content-encoding"] == "gzip"
            for chunk in r.iter_raw():
                raw += chunk
    assert b"event: error" not in raw
    assert raw
    assert raw.startswith(b"\x1f\x8b")
