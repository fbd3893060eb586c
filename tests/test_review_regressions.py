"""Regressions found by an adversarial review of the request path (raw ASGI harness)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import anyio
import pytest

from ccrotate import Account, AccountPool, Failover, RequestRecord, RotatingProxy
from ccrotate._pool.state import AccountState
from ccrotate.testing import FakeUpstream, RateLimited, ServerHandle, StreamError, Unauthorized
from conftest import KEY_A, MODEL, TOKEN_B, FakeClock, fast_config, make_accounts

Server = ServerHandle[FakeUpstream]


class Call:
    """One raw ASGI request whose client never leaves; keeps what the app sent."""

    def __init__(self, *, stream: bool = True,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.body = json.dumps({"model": MODEL, "max_tokens": 64, "stream": stream,
                                "messages": [{"role": "user", "content": "hi"}]}).encode()
        self.headers = [(b"content-type", b"application/json"), *(headers or [])]
        self.sent: list[MutableMapping[str, Any]] = []
        self._given = False

    async def run(self, app: Any) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/v1/messages", "raw_path": b"/v1/messages", "query_string": b"",
                 "root_path": "", "headers": self.headers}
        await app(scope, self.receive, self.send)

    async def receive(self) -> dict[str, Any]:
        if not self._given:
            self._given = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(next(m["status"] for m in self.sent if m["type"] == "http.response.start"))

    @property
    def headers_out(self) -> dict[bytes, bytes]:
        return dict(next(m for m in self.sent if m["type"] == "http.response.start")["headers"])

    @property
    def body_out(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


class Broken:
    """An observer that raises from both hooks."""

    def on_failover(self, record: RequestRecord, failover: Failover) -> None:
        raise RuntimeError("observer bug")

    def on_request(self, record: RequestRecord) -> None:
        raise RuntimeError("observer bug")


class Records:
    """An observer that keeps what it is told."""

    def __init__(self) -> None:
        self.failovers: list[Failover] = []
        self.done: list[RequestRecord] = []

    def on_failover(self, record: RequestRecord, failover: Failover) -> None:
        self.failovers.append(failover)

    def on_request(self, record: RequestRecord) -> None:
        self.done.append(record)


@pytest.fixture
async def proxy(upstream_server: Server, pool: AccountPool) -> AsyncIterator[RotatingProxy]:
    async with RotatingProxy(pool, config=fast_config(upstream_server.url)) as proxy:
        yield proxy


async def test_a_raising_observer_neither_breaks_failover_nor_silences_the_others(
        proxy: RotatingProxy, fake_upstream: FakeUpstream, pool: AccountPool) -> None:
    """An observer bug still fails over, cools the 429'd account and lets later observers see."""
    fake_upstream.script(KEY_A, RateLimited(retry_after=30, reset_after=30))
    records = Records()
    proxy.observers[:] = [Broken(), records]
    call = Call()
    with anyio.fail_after(5):
        await call.run(proxy)
    assert call.status == 200
    assert pool.status("a").state is AccountState.RATE_LIMITED
    assert records.failovers == [Failover("a", "quota", 429)]
    assert [r.status for r in records.done] == [200]
    assert {s.name: s.in_flight for s in pool.statuses()} == {"a": 0, "b": 0, "c": 0}


class RemovingRefresher:
    """A refresher whose refresh lands while a reload removes the account."""

    def __init__(self, pool: AccountPool) -> None:
        self.pool = pool

    async def ensure_fresh(self, account: Account) -> Account:
        return account

    async def refresh(self, name: str, *, reason: str) -> Account:
        account = self.pool.account(name)
        self.pool.replace_accounts([a for a in self.pool.accounts() if a.name != name])
        return account


async def test_an_account_removed_during_its_401_refresh_fails_over_not_400(
        upstream_server: Server, fake_upstream: FakeUpstream, clock: FakeClock) -> None:
    """A reload removing the account mid-refresh moves the request on; the client is not blamed."""
    pool = AccountPool([a for a in make_accounts() if a.name != "a"], clock=clock)
    fake_upstream.script(TOKEN_B, Unauthorized())
    async with RotatingProxy(pool, config=fast_config(upstream_server.url),
                             refresher=RemovingRefresher(pool)) as proxy:
        call = Call(stream=False)
        with anyio.fail_after(5):
            await call.run(proxy)
    assert call.status == 200, call.body_out
    assert call.headers_out[b"x-ccrotate-account"] == b"c"


async def test_a_429_error_event_in_a_200_stream_is_answered_as_json(
        proxy: RotatingProxy, fake_upstream: FakeUpstream) -> None:
    """A first-event rate_limit_error becomes a 429 labelled JSON, not text/event-stream."""
    fake_upstream.script(KEY_A, StreamError(after=0, error_type="rate_limit_error",
                                            message="slow down"))
    call = Call(headers=[(b"x-account-name", b"a")])
    with anyio.fail_after(5):
        await call.run(proxy)
    assert call.status == 429
    json.loads(call.body_out)
    assert call.headers_out[b"content-type"] == b"application/json"
    assert [k for k, _ in next(m for m in call.sent
                               if m["type"] == "http.response.start")["headers"]
            ].count(b"content-type") == 1


@pytest.mark.parametrize("system", [5, True, 1.5])
async def test_a_system_of_the_wrong_type_reaches_the_upstream_not_a_crash(
        proxy: RotatingProxy, fake_upstream: FakeUpstream, system: object) -> None:
    """A non-string, non-list ``system`` on an OAuth account is left for the upstream to refuse."""
    call = Call(stream=False, headers=[(b"x-account-name", b"b")])
    call.body = json.dumps({**json.loads(call.body), "system": system}).encode()
    with anyio.fail_after(5):
        await call.run(proxy)
    assert call.status == 400
    assert json.loads(call.body_out)["error"]["type"] == "invalid_request_error"
    [sent] = fake_upstream.requests_for(TOKEN_B)
    assert sent.json["system"] == system


def test_an_overloaded_account_is_released_before_the_backoff_pause(serve_proxy: Any) -> None:
    """During the pause after a 529 the failed account no longer counts as in flight."""
    import threading
    import time

    import httpx

    from ccrotate.testing import Overloaded

    stack = serve_proxy(backoff_base=0.6, backoff_cap=0.6)
    stack.fake.script(KEY_A, Overloaded())
    result: list[int] = []

    def ask() -> None:
        r = httpx.post(stack.url + "/v1/messages", timeout=10, json={
            "model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
        result.append(r.status_code)

    worker = threading.Thread(target=ask)
    worker.start()
    deadline = time.monotonic() + 5
    while not stack.fake.requests_for(KEY_A) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.1)  # the 529 is answered and the pause (0.3 to 0.6 s) has begun
    assert worker.is_alive(), "the request should still be pausing before the next account"
    assert stack.pool.status("a").in_flight == 0
    worker.join(10)
    assert result == [200]


def test_a_spend_cap_error_event_keeps_its_error_code_for_the_client(serve_proxy: Any) -> None:
    """An `event: error` spend cap that opens a 200 stream reaches the client with its
    `details.error_code`, so it can tell that retrying soon will not help."""
    import httpx

    from ccrotate.testing import serve_app

    event = {"type": "error", "error": {"type": "rate_limit_error", "message": "cap",
                                        "details": {"error_code": "enforced_spend_limit_reached"}}}

    async def capped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body",
                    "body": b"event: error\ndata: " + json.dumps(event).encode() + b"\n\n"})

    with serve_app(capped) as upstream:
        stack = serve_proxy(upstream_url=upstream.url)
        r = httpx.post(stack.url + "/v1/messages", headers={"x-account-name": "a"}, json={
            "model": MODEL, "max_tokens": 8, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["details"]["error_code"] == "enforced_spend_limit_reached"
    assert stack.pool.status("a").state is AccountState.RATE_LIMITED
