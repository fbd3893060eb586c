"""TokenRefresher against the fake's token endpoint (single-use refresh tokens, on loopback)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from pytest_httpx import HTTPXMock

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    AccountsFile,
    AccountState,
    InvalidGrant,
    ProxyConfig,
    RefreshError,
    RotatingProxy,
    Secret,
    Settings,
)
from ccrotate._tokens.refresh import TokenRefresher
from ccrotate._tokens.reload import AccountsWatcher
from ccrotate.testing import FakeUpstream, ServerHandle, TokenError, TokenReply

CLAUDE_CODE_CLIENT_ID = Settings().oauth_client_id  # what the fake expects

BODY = {"model": "claude-sonnet-4-6", "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}]}


def write_file(path: Path, accounts: dict[str, dict[str, Any]]) -> AccountsFile:
    """An accounts file with a top-level key and per-account keys ccrotate does not know."""
    path.write_text(json.dumps({"version": 1, "team": "keep-me", "accounts": accounts}))
    return AccountsFile(path)


def entry(fake: FakeUpstream, *, expires_in: float, refresh: str | None = None,
          live: bool = True) -> dict[str, Any]:
    """One OAuth entry whose tokens the fake knows (``live=False``: a dead refresh token)."""
    access = fake.add_access_token()
    if refresh is None:
        refresh = fake.oauth.add_refresh_token() if live else "sk-ant-ort01-dead-0000-9999"
    return {"accessToken": access, "refreshToken": refresh,
            "expiresAt": round((time.time() + expires_in) * 1000), "note": "mine"}


def refresher_for(server: ServerHandle[FakeUpstream], pool: AccountPool,
                  file: AccountsFile | None, **options: Any) -> TokenRefresher:
    """A refresher aimed at the served fake, with test-sized pauses."""
    options = {"backoff": 0.01, "retry_interval": 0.05, "poll_interval": 0.05, **options}
    return TokenRefresher(pool, file, token_url=server.url + "/v1/oauth/token",
                          client_id=CLAUDE_CODE_CLIENT_ID, **options)


async def wait_until(predicate: Any, limit: float = 5.0) -> None:
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - the refresher offers no event to wait on
            await anyio.sleep(0.01)


async def test_proactive_refresh_happens_before_expiry_and_is_persisted(
        tmp_path: Path, fake_upstream_server: ServerHandle[FakeUpstream]) -> None:
    """The loop refreshes refresh_buffer before expiry (cooling accounts too) and saves first."""
    fake = fake_upstream_server.app
    file = write_file(tmp_path / "accounts.json", {
        "soon": entry(fake, expires_in=600.4), "cool": entry(fake, expires_in=300),
        "later": entry(fake, expires_in=7200)})
    pool = AccountPool(file.load())
    pool.cool_down("cool", time.time() + 3600, reason="rate limited")
    old = {a.name: a for a in file.load()}
    refresher = refresher_for(fake_upstream_server, pool, file, refresh_buffer=600)
    async with refresher:
        await wait_until(lambda: refresher.refreshes == 1)  # "cool" at once
        assert fake.oauth.refresh_count() == 1
        await wait_until(lambda: refresher.refreshes == 2)  # "soon" ~0.4 s later
        assert time.time() < (old["soon"].expires_at or 0)  # before it expired
        await anyio.sleep(0.2)
    assert fake.oauth.refresh_count() == 2  # "later" is not due
    on_disk = {a.name: a for a in file.load()}
    for name in ("soon", "cool"):
        assert on_disk[name] == pool.account(name)
        assert on_disk[name].refresh_token != old[name].refresh_token
        assert on_disk[name].extra == {"note": "mine"}
        assert not fake.oauth.is_live(old[name].refresh_token.reveal())  # type: ignore[union-attr]
    assert on_disk["later"] == old["later"]
    assert json.loads(file.path.read_text())["team"] == "keep-me"
    assert pool.status("cool").state is AccountState.RATE_LIMITED  # still cooling, now fresh


async def test_fifty_concurrent_requests_on_an_expired_account_cause_one_refresh(
        tmp_path: Path, fake_upstream_server: ServerHandle[FakeUpstream]) -> None:
    """Fifty requests through the proxy on an expired token: one refresh, all served with it."""
    fake = fake_upstream_server.app
    file = write_file(tmp_path / "accounts.json", {"sub": entry(fake, expires_in=-5)})
    pool = AccountPool(file.load())
    fake.oauth.script(TokenReply(delay=0.2))  # keep the refresh in flight while all arrive
    refresher = refresher_for(fake_upstream_server, pool, file)
    proxy = RotatingProxy(pool, config=ProxyConfig(upstream_url=fake_upstream_server.url),
                          refresher=refresher)
    async with proxy, httpx.AsyncClient(transport=httpx.ASGITransport(proxy),
                                        base_url="http://proxy") as client:
        statuses: list[int] = []

        async def one() -> None:
            statuses.append((await client.post("/v1/messages", json=BODY)).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(one)
    assert statuses == [200] * 50
    assert fake.oauth.refresh_count() == 1
    new = file.load()[0]
    assert new == pool.account("sub")
    assert len(fake.requests_for(new.access_token.reveal())) == 50  # type: ignore[union-attr]


async def test_401_from_the_messages_api_triggers_one_refresh_and_one_retry(
        tmp_path: Path, fake_upstream_server: ServerHandle[FakeUpstream]) -> None:
    """An access token the upstream calls expired is refreshed once and the request retried."""
    fake = fake_upstream_server.app
    file = write_file(tmp_path / "accounts.json", {"sub": entry(fake, expires_in=3600)})
    pool = AccountPool(file.load())
    old = pool.account("sub").access_token.reveal()  # type: ignore[union-attr]
    fake.expire(old)
    proxy = RotatingProxy(pool, config=ProxyConfig(upstream_url=fake_upstream_server.url),
                          refresher=refresher_for(fake_upstream_server, pool, file))
    async with proxy, httpx.AsyncClient(transport=httpx.ASGITransport(proxy),
                                        base_url="http://proxy") as client:
        response = await client.post("/v1/messages", json=BODY)
    assert response.status_code == 200
    assert fake.oauth.refresh_count() == 1
    calls = [r for r in fake.requests if r.path == "/v1/messages"]
    assert [(r.credential == old, r.status) for r in calls] == [(True, 401), (False, 200)]
    assert pool.status("sub").state is AccountState.AVAILABLE
    assert file.load()[0].access_token == pool.account("sub").access_token


_TWIN = """
import hashlib, sys, time
from pathlib import Path
import anyio
from ccrotate import AccountPool, AccountsFile
from ccrotate._tokens.refresh import TokenRefresher

async def main() -> None:
    path, url, client_id, go = sys.argv[1:5]
    file = AccountsFile(path)
    pool = AccountPool(file.load())
    refresher = TokenRefresher(pool, file, token_url=url, client_id=client_id, backoff=0.01)
    print("ready", flush=True)
    while not Path(go).exists():
        await anyio.sleep(0.005)
    new = await refresher.ensure_fresh(pool.account("shared"))
    print(hashlib.sha256(new.access_token.reveal().encode()).hexdigest(), refresher.refreshes)

anyio.run(main)
"""


def test_two_processes_sharing_one_file_cause_exactly_one_refresh(
        tmp_path: Path, fake_upstream_server: ServerHandle[FakeUpstream]) -> None:
    """Two processes refreshing the same expired account: one token request, same tokens."""
    import hashlib

    fake = fake_upstream_server.app
    file = write_file(tmp_path / "accounts.json", {"shared": entry(fake, expires_in=-5)})
    fake.oauth.script(TokenReply(delay=0.3))  # the winner holds the lock a while
    go = tmp_path / "go"
    args = [sys.executable, "-c", _TWIN, str(file.path),
            fake_upstream_server.url + "/v1/oauth/token", CLAUDE_CODE_CLIENT_ID, str(go)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        go.touch()
        outputs = [proc.communicate(timeout=20)[0].split() for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert all(proc.returncode == 0 for proc in procs)
    assert fake.oauth.refresh_count() == 1
    assert sorted(int(refreshes) for _, refreshes in outputs) == [0, 1]
    on_disk = file.load()[0].access_token.reveal()  # type: ignore[union-attr]
    assert {digest for digest, _ in outputs} == {hashlib.sha256(on_disk.encode()).hexdigest()}


async def test_tokens_another_process_saved_are_adopted_without_a_request(
        tmp_path: Path, fake_upstream_server: ServerHandle[FakeUpstream]) -> None:
    """If the file already holds newer, valid tokens, they are used and nothing is refreshed."""
    fake = fake_upstream_server.app
    file = write_file(tmp_path / "accounts.json", {"sub": entry(fake, expires_in=-5)})
    pool = AccountPool(file.load())
    issued = fake.oauth.issue()  # another process refreshed and saved these

    def rotated(accounts: dict[str, Account]) -> dict[str, Account]:
        accounts["sub"] = accounts["sub"].with_tokens(
            access_token=issued.access_token, refresh_token=issued.refresh_token,
            expires_at=issued.expires_at)
        return accounts

    file.update(rotated)
    account = await refresher_for(fake_upstream_server, pool, file).ensure_fresh(
        pool.account("sub"))
    assert account.access_token == Secret(issued.access_token)
    assert pool.account("sub") == account
    assert fake.oauth.refresh_count() == 0


async def test_invalid_grant_puts_only_that_account_in_auth_error(
        tmp_path: Path, fake_upstream_server: ServerHandle[FakeUpstream]) -> None:
    """A dead refresh token: that account needs a login, says why; the other refreshes fine."""
    fake = fake_upstream_server.app
    file = write_file(tmp_path / "accounts.json", {
        "dead": entry(fake, expires_in=-5, live=False), "fine": entry(fake, expires_in=-5)})
    pool = AccountPool(file.load())
    refresher = refresher_for(fake_upstream_server, pool, file)
    with pytest.raises(InvalidGrant) as caught:
        await refresher.refresh("dead")
    await refresher.refresh("fine")
    dead = pool.status("dead")
    assert dead.state is AccountState.AUTH_ERROR
    assert dead.last_error is not None
    assert "invalid_grant" in dead.last_error
    assert "ccrotate accounts login dead" in dead.last_error
    assert "sk-ant-ort01-dead-0000-9999" not in dead.last_error + str(caught.value)
    assert pool.status("fine").state is AccountState.AVAILABLE
    assert fake.oauth.refresh_count("sk-ant-ort01-dead-0000-9999") == 1  # not retried
    assert refresher.next_refresh("dead") is None  # the loop leaves it alone


async def test_server_errors_are_retried_and_a_valid_token_keeps_serving(
        tmp_path: Path, fake_upstream_server: ServerHandle[FakeUpstream]) -> None:
    """5xx: retried with backoff; when all fail, a token still valid is used, not dropped."""
    fake = fake_upstream_server.app
    file = write_file(tmp_path / "accounts.json", {"sub": entry(fake, expires_in=30)})
    pool = AccountPool(file.load())
    before = pool.account("sub")
    refresher = refresher_for(fake_upstream_server, pool, file, attempts=3)
    fake.oauth.script(*[TokenError(status=503)] * 3)
    assert await refresher.ensure_fresh(before) == before  # 30 s left: still usable
    assert fake.oauth.refresh_count() == 3
    status = pool.status("sub")
    assert status.state is AccountState.AVAILABLE
    assert status.last_error is not None
    assert "503" in status.last_error
    fake.oauth.script(TokenError(status=502))
    renewed = await refresher.refresh("sub")  # one more 5xx, then success
    assert renewed.access_token != before.access_token
    assert fake.oauth.refresh_count() == 5


async def test_network_failure_on_an_expired_token_raises_without_auth_error(
        tmp_path: Path, fake_upstream_server: ServerHandle[FakeUpstream]) -> None:
    """Unreachable endpoint, expired token: RefreshError, not InvalidGrant; retried later."""
    fake = fake_upstream_server.app
    file = write_file(tmp_path / "accounts.json", {"sub": entry(fake, expires_in=-5)})
    pool = AccountPool(file.load())
    refresher = TokenRefresher(pool, file, token_url="http://127.0.0.1:9/v1/oauth/token",
                               client_id=CLAUDE_CODE_CLIENT_ID, backoff=0.01, attempts=2)
    with pytest.raises(RefreshError) as caught:
        await refresher.ensure_fresh(pool.account("sub"))
    assert not isinstance(caught.value, InvalidGrant)
    assert "cannot reach the token endpoint" in str(caught.value)
    assert pool.status("sub").state is AccountState.AVAILABLE
    at = refresher.next_refresh("sub")
    assert at is not None
    assert at > time.time()


async def test_refresh_request_shape_and_kept_refresh_token(
        tmp_path: Path, httpx_mock: HTTPXMock) -> None:
    """The request is JSON with the OAuth beta header; an answer without refresh_token keeps it."""
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps({"accounts": {"sub": {
        "accessToken": "sk-ant-oat01-old-access-0001", "refreshToken": "sk-ant-ort01-keep-0002",
        "expiresAt": 1000}}}))
    file = AccountsFile(path)
    pool = AccountPool(file.load())
    httpx_mock.add_response(status_code=500, json={"error": "server_error"})
    httpx_mock.add_response(json={"access_token": "sk-ant-oat01-new-access-0003",
                                  "expires_in": 28800, "token_type": "Bearer"})
    refresher = TokenRefresher(pool, file, token_url="https://auth.test/v1/oauth/token",
                               client_id="cid", backoff=0.01)
    before = time.time()
    account = await refresher.refresh("sub")
    requests = httpx_mock.get_requests()
    assert len(requests) == 2
    assert requests[-1].headers["anthropic-beta"] == "oauth-2025-04-20"
    assert json.loads(requests[-1].content) == {
        "grant_type": "refresh_token", "refresh_token": "sk-ant-ort01-keep-0002",
        "client_id": "cid"}
    assert account.refresh_token == Secret("sk-ant-ort01-keep-0002")
    assert account.expires_at is not None
    assert before + 28800 <= account.expires_at <= time.time() + 28800
    assert file.load()[0] == account


async def test_a_cancelled_caller_does_not_lose_the_refreshed_tokens(
        tmp_path: Path, fake_upstream_server: ServerHandle[FakeUpstream]) -> None:
    """The client leaves mid-refresh: the refresh still completes and is saved."""
    fake = fake_upstream_server.app
    file = write_file(tmp_path / "accounts.json", {"sub": entry(fake, expires_in=-5)})
    pool = AccountPool(file.load())
    old = pool.account("sub")
    fake.oauth.script(TokenReply(delay=0.3))
    refresher = refresher_for(fake_upstream_server, pool, file)
    with anyio.move_on_after(0.1) as scope:
        await refresher.ensure_fresh(old)
    assert scope.cancel_called  # the deadline passed while the token request was out
    assert fake.oauth.refresh_count() == 1
    assert file.load()[0] == pool.account("sub") != old


async def test_a_request_deadline_mid_refresh_still_saves_the_tokens(
        tmp_path: Path, fake_upstream_server: ServerHandle[FakeUpstream]) -> None:
    """The request deadline passes while the account's token request is out: the client
    gets its 504, and the refreshed tokens are saved all the same. The deadline cancels
    the request's scope, not its task, so the refresh's shield holds (the refresh token is
    single-use: losing the answer would lose the account)."""
    fake = fake_upstream_server.app
    file = write_file(tmp_path / "accounts.json", {"sub": entry(fake, expires_in=-5)})
    pool = AccountPool(file.load())
    old = pool.account("sub")
    fake.oauth.script(TokenReply(delay=0.5))
    proxy = RotatingProxy(pool, refresher=refresher_for(fake_upstream_server, pool, file),
                          config=ProxyConfig(upstream_url=fake_upstream_server.url,
                                             request_timeout=0.1))
    async with proxy, httpx.AsyncClient(transport=httpx.ASGITransport(app=proxy),
                                        base_url="http://proxy") as client:
        answer = await client.post("/v1/messages", json={
            "model": "claude-sonnet-4-6", "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 504
    assert fake.oauth.refresh_count() == 1
    assert file.load()[0] == pool.account("sub") != old
    assert pool.status("sub").in_flight == 0


async def test_a_failed_write_back_serves_from_memory_reports_it_and_retries(
        tmp_path: Path, fake_upstream_server: ServerHandle[FakeUpstream],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Write-back fails after the rotation: served from memory, error shown, saved later."""
    fake = fake_upstream_server.app
    file = write_file(tmp_path / "accounts.json", {"sub": entry(fake, expires_in=-5)})
    pool = AccountPool(file.load())
    stale = file.load()[0]
    real_write = file._write

    def disk_full(doc: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(file, "_write", disk_full)
    refresher = refresher_for(fake_upstream_server, pool, file)
    first = await refresher.ensure_fresh(stale)
    assert first.refresh_token != stale.refresh_token
    assert pool.account("sub") == first  # the old tokens are dead: serve the new ones
    assert file.load()[0] == stale
    assert refresher.unsaved == {"sub": "No space left on device"}
    status = pool.status("sub")
    assert status.last_error is not None
    assert "could not be saved" in status.last_error
    assert first.refresh_token.reveal() not in status.last_error  # type: ignore[union-attr]

    # A reload of the stale file must not swap the dead tokens back in.
    await AccountsWatcher(pool, file, refresher=refresher).check()
    assert pool.account("sub") == first
    # A refresh while unsaved uses the live token in memory, never the dead one on disk.
    second = await refresher.refresh("sub")
    assert fake.oauth.refresh_count(stale.refresh_token.reveal()) == 1  # type: ignore[union-attr]
    assert fake.oauth.refresh_count(first.refresh_token.reveal()) == 1  # type: ignore[union-attr]

    monkeypatch.setattr(file, "_write", real_write)  # the disk has room again
    assert await refresher.flush()
    assert refresher.unsaved == {}
    assert file.load()[0] == second == pool.account("sub")


async def test_the_background_loop_retries_an_unsaved_write(
        tmp_path: Path, fake_upstream_server: ServerHandle[FakeUpstream],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The running service keeps retrying the write-back until it lands."""
    fake = fake_upstream_server.app
    file = write_file(tmp_path / "accounts.json", {"sub": entry(fake, expires_in=-5)})
    pool = AccountPool(file.load())
    real_write = file._write
    failures = 0

    def flaky(doc: Any) -> None:
        nonlocal failures
        if failures < 3:
            failures += 1
            raise OSError(5, "Input/output error")
        real_write(doc)

    monkeypatch.setattr(file, "_write", flaky)
    refresher = refresher_for(fake_upstream_server, pool, file)
    async with refresher:
        await wait_until(lambda: refresher.refreshes == 1 and not refresher.unsaved)
    assert failures == 3
    assert file.load()[0] == pool.account("sub")
    assert fake.oauth.refresh_count() == 1


async def test_a_dead_grant_fails_over_and_leaves_other_accounts_serving(
        tmp_path: Path, fake_upstream_server: ServerHandle[FakeUpstream]) -> None:
    """Through the proxy: the dead account drops out after one try, requests go to the other."""
    fake = fake_upstream_server.app
    file = write_file(tmp_path / "accounts.json", {
        "dead": entry(fake, expires_in=-5, live=False), "fine": entry(fake, expires_in=3600)})
    pool = AccountPool(file.load())
    proxy = RotatingProxy(pool, config=ProxyConfig(upstream_url=fake_upstream_server.url),
                          refresher=refresher_for(fake_upstream_server, pool, file))
    async with proxy, httpx.AsyncClient(transport=httpx.ASGITransport(proxy),
                                        base_url="http://proxy") as client:
        codes = [(await client.post("/v1/messages", json=BODY)).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    assert pool.status("dead").state is AccountState.AUTH_ERROR
    assert "invalid_grant" in (pool.status("dead").last_error or "")
    assert pool.status("fine").requests == 3
    assert fake.oauth.refresh_count() == 1


async def test_without_an_accounts_file_tokens_are_renewed_in_memory(
        fake_upstream_server: ServerHandle[FakeUpstream],
        caplog: pytest.LogCaptureFixture) -> None:
    """accounts_file=None: the refresh works, and the log says nothing was saved."""
    fake = fake_upstream_server.app
    old = Account(name="mem", kind=AccountKind.OAUTH, access_token=Secret(fake.add_access_token()),
                  refresh_token=Secret(fake.oauth.add_refresh_token()), expires_at=time.time())
    pool = AccountPool([old])
    new = await refresher_for(fake_upstream_server, pool, None).ensure_fresh(old)
    assert new.refresh_token != old.refresh_token
    assert pool.account("mem") == new
    assert "this process only" in caplog.text
