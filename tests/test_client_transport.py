"""Client-side rotation: the real anthropic SDK over RotatingTransport / AsyncRotatingTransport.

No ccrotate server runs here: the SDK's ``httpx2`` client holds the transport, and the
transport talks to a FakeUpstream served on loopback. Accounts ``a`` (API key), ``b``
(OAuth) and ``c`` (API key) rotate in that order (tests/conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator

import anthropic
import anyio
import httpx2
import pytest

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    AccountState,
    Secret,
    Settings,
    TokenRefresher,
)
from ccrotate._wire import CLAUDE_CODE_IDENTITY, OAUTH_BETA
from ccrotate.client import AsyncRotatingTransport, RotatingTransport
from ccrotate.testing import FakeUpstream, Gate, Overloaded, RateLimited, Reply, ServerHandle
from conftest import HELLO, KEY_A, KEY_C, MODEL, TOKEN_B, FakeClock

SDK_KEY = "sk-ant-api03-the-sdks-own-key-never-sent"
Served = ServerHandle[FakeUpstream]


def _sdk_key_never_sent(fake: FakeUpstream) -> None:
    for request in fake.requests:
        assert all(SDK_KEY not in value for _, value in request.headers), request


@pytest.fixture
def transport(pool: AccountPool, upstream_server: Served) -> Iterator[RotatingTransport]:
    t = RotatingTransport(pool, base_url=upstream_server.url)
    yield t
    t.close()


@pytest.fixture
def client(transport: RotatingTransport) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=SDK_KEY, max_retries=0,
                             http_client=httpx2.Client(transport=transport)) as c:
        yield c


@pytest.fixture
async def aclient(pool: AccountPool,
                  upstream_server: Served) -> AsyncIterator[anthropic.AsyncAnthropic]:
    transport = AsyncRotatingTransport(pool, base_url=upstream_server.url)
    async with anthropic.AsyncAnthropic(
            api_key=SDK_KEY, max_retries=0,
            http_client=httpx2.AsyncClient(transport=transport)) as c:
        yield c


def _create(client: anthropic.Anthropic, **extra: object) -> anthropic.types.Message:
    return client.messages.create(model=MODEL, max_tokens=32, messages=HELLO,
                                  **extra)  # type: ignore[call-overload]


# --- sync -----------------------------------------------------------------------------------


def test_sync_rotates_over_the_pool(client: anthropic.Anthropic,
                                    upstream_server: Served) -> None:
    """Three requests go out with a, b and c's credentials; the SDK's key goes nowhere."""
    for _ in range(3):
        assert _create(client).content[0].type == "text"
    fake = upstream_server.app
    assert [r.credential for r in fake.requests] == [KEY_A, TOKEN_B, KEY_C]
    _sdk_key_never_sent(fake)


def test_sync_fails_over_on_a_429_and_cools_the_account(
        client: anthropic.Anthropic, upstream_server: Served, pool: AccountPool) -> None:
    """A 429 on a moves the request to b before the SDK sees anything; a then cools."""
    fake = upstream_server.app
    fake.script(KEY_A, RateLimited(retry_after=30))
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=32, messages=HELLO)
    assert raw.headers["x-ccrotate-account"] == "b"
    assert raw.parse().content[0].type == "text"
    assert pool.status("a").cooldown_until is not None
    _create(client)
    _create(client)
    assert [r.credential for r in fake.requests] == [KEY_A, TOKEN_B, KEY_C, TOKEN_B]
    assert all(s.in_flight == 0 for s in pool.statuses())


def test_sync_fails_over_on_a_refused_key_and_an_overload(
        client: anthropic.Anthropic, upstream_server: Served, pool: AccountPool) -> None:
    """A revoked key (401) puts a in auth_error; a 529 on b moves on to c; the SDK sees 200."""
    fake = upstream_server.app
    fake.revoke(KEY_A)
    fake.script(TOKEN_B, Overloaded())
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=32, messages=HELLO)
    assert raw.headers["x-ccrotate-account"] == "c"
    assert [r.credential for r in fake.requests] == [KEY_A, TOKEN_B, KEY_C]
    assert pool.status("a").state is AccountState.AUTH_ERROR
    assert all(s.in_flight == 0 for s in pool.statuses())


def test_sync_streams_through_the_sdk(client: anthropic.Anthropic, upstream_server: Served,
                                      pool: AccountPool) -> None:
    """messages.stream() gets its events as they come: the first delta arrives while the
    upstream still holds the rest of the stream."""
    gate = Gate()
    # message_start, ping, content_block_start, the first delta: then the upstream waits.
    upstream_server.app.script(KEY_A, Reply(text="one two three", hold=gate, hold_after=4))
    safety = threading.Timer(10, gate.release)  # a buffering transport fails, not hangs
    safety.start()
    with client.messages.stream(model=MODEL, max_tokens=32, messages=HELLO) as stream:
        texts = stream.text_stream
        first = next(texts)  # arrives before the gate opens: nothing is buffered
        assert safety.is_alive()
        safety.cancel()
        assert first
        assert pool.status("a").in_flight == 1
        gate.release()
        rest = "".join(texts)
    assert first + rest == "one two three"
    assert pool.status("a").in_flight == 0


def test_sync_presents_an_oauth_account_as_claude_code(client: anthropic.Anthropic,
                                                       upstream_server: Served) -> None:
    """The OAuth account goes out with its bearer, the OAuth beta and the identity block."""
    _create(client, system="Be brief.", extra_headers={"x-account-name": "b"})
    sent = upstream_server.app.last_request
    assert sent.header("authorization") == f"Bearer {TOKEN_B}"
    assert sent.header("x-api-key") is None
    assert OAUTH_BETA in sent.betas
    assert sent.json["system"][0]["text"] == CLAUDE_CODE_IDENTITY
    _sdk_key_never_sent(upstream_server.app)


def test_sync_every_account_cooling_is_a_rate_limit_error(
        client: anthropic.Anthropic, upstream_server: Served) -> None:
    """With every account refused, the SDK raises RateLimitError with a retry-after; the
    next request is refused at once, without reaching the upstream."""
    fake = upstream_server.app
    for key in (KEY_A, TOKEN_B, KEY_C):
        fake.script(key, RateLimited(retry_after=30))
    with pytest.raises(anthropic.RateLimitError) as caught:
        _create(client)
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert len(fake.requests) == 3
    with pytest.raises(anthropic.RateLimitError) as again:
        _create(client)
    assert 1 <= int(again.value.response.headers["retry-after"]) <= 30
    assert len(fake.requests) == 3
    _sdk_key_never_sent(fake)


def test_sync_refreshes_an_oauth_token_on_a_401_and_retries(
        upstream_server: Served, clock: FakeClock) -> None:
    """A 401 on an OAuth account: one refresh (on the private loop), then the same account
    serves with the new token."""
    fake = upstream_server.app
    refresh_token = fake.oauth.add_refresh_token()
    pool = AccountPool([Account(name="b", kind=AccountKind.OAUTH, access_token=Secret(TOKEN_B),
                                refresh_token=Secret(refresh_token),
                                expires_at=time.time() + 3600)], clock=clock)
    fake.expire(TOKEN_B)
    refresher = TokenRefresher(pool, None, token_url=upstream_server.url + "/v1/oauth/token",
                               client_id=Settings().oauth_client_id)
    transport = RotatingTransport(pool, refresher=refresher, base_url=upstream_server.url)
    with anthropic.Anthropic(api_key=SDK_KEY, max_retries=0,
                             http_client=httpx2.Client(transport=transport)) as sdk:
        assert _create(sdk).content[0].type == "text"
    new = pool.account("b").access_token
    assert new is not None
    assert [r.credential for r in fake.requests_for(path="/v1/messages")] == [
        TOKEN_B, new.reveal()]


def test_sync_other_paths_are_refused_plainly(client: anthropic.Anthropic,
                                              upstream_server: Served) -> None:
    """A path the transport does not rotate gets a 404 in Anthropic's shape, sent nowhere."""
    with pytest.raises(anthropic.NotFoundError):
        client.beta.files.list()
    assert upstream_server.app.requests == []


# --- async ----------------------------------------------------------------------------------


async def test_async_rotates_and_streams(aclient: anthropic.AsyncAnthropic,
                                         upstream_server: Served) -> None:
    """The async transport rotates too, and a stream's text arrives whole."""
    await aclient.messages.create(model=MODEL, max_tokens=32, messages=HELLO)
    async with aclient.messages.stream(model=MODEL, max_tokens=32, messages=HELLO,
                                       system="Be brief.") as stream:
        text = "".join([t async for t in stream.text_stream])
    assert text == Reply().text
    fake = upstream_server.app
    assert [r.credential for r in fake.requests] == [KEY_A, TOKEN_B]
    oauth = fake.last_request
    assert oauth.header("authorization") == f"Bearer {TOKEN_B}"
    assert OAUTH_BETA in oauth.betas
    assert oauth.json["system"][0]["text"] == CLAUDE_CODE_IDENTITY
    _sdk_key_never_sent(fake)


async def test_async_stream_is_not_buffered(aclient: anthropic.AsyncAnthropic,
                                            upstream_server: Served, pool: AccountPool) -> None:
    """The first delta reaches the async SDK while the upstream holds the rest."""
    gate = Gate()
    upstream_server.app.script(KEY_A, Reply(text="one two three", hold=gate, hold_after=4))
    async with aclient.messages.stream(model=MODEL, max_tokens=32, messages=HELLO) as stream:
        texts = stream.text_stream.__aiter__()
        with anyio.fail_after(10):
            first = await anext(texts)
        assert pool.status("a").in_flight == 1
        gate.release()
        rest = "".join([t async for t in texts])
    assert first + rest == "one two three"
    assert pool.status("a").in_flight == 0


async def test_async_fails_over_then_answers_429_when_all_cool(
        aclient: anthropic.AsyncAnthropic, upstream_server: Served, pool: AccountPool) -> None:
    """Failover on a 429; once every account cools, RateLimitError with retry-after."""
    fake = upstream_server.app
    fake.script(KEY_A, RateLimited(retry_after=30))
    reply = await aclient.messages.with_raw_response.create(
        model=MODEL, max_tokens=32, messages=HELLO)
    assert reply.headers["x-ccrotate-account"] == "b"
    fake.script(KEY_C, RateLimited(retry_after=30))
    fake.script(TOKEN_B, RateLimited(retry_after=30))
    with pytest.raises(anthropic.RateLimitError) as caught:
        await aclient.messages.create(model=MODEL, max_tokens=32, messages=HELLO)
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert [r.credential for r in fake.requests] == [KEY_A, TOKEN_B, KEY_C, TOKEN_B]
    assert all(s.in_flight == 0 for s in pool.statuses())
    _sdk_key_never_sent(fake)


def test_importing_ccrotate_does_not_import_httpx2() -> None:
    """The transports load on first use: ``import ccrotate`` stays light."""
    code = "import sys, ccrotate; assert 'httpx2' not in sys.modules; ccrotate.RotatingTransport"
    subprocess.run([sys.executable, "-c", code], check=True)
