"""Hot reload: edits apply with state kept, garbage is ignored and shown, own writes are quiet."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from pytest_httpx import HTTPXMock

from ccrotate import (
    Account,
    AccountKind,
    AccountPool,
    AccountsFile,
    AccountState,
    Rotator,
    Secret,
    Settings,
)
from ccrotate._tokens.refresh import TokenRefresher
from ccrotate._tokens.reload import AccountsWatcher

SECRET = "sk-ant-api03-never-log-this-value-7777"


def doc(**accounts: dict[str, Any]) -> str:
    return json.dumps({"version": 1, "accounts": accounts})


def key(n: int, **extra: Any) -> dict[str, Any]:
    return {"apiKey": f"sk-ant-api03-test-key-{n:04d}", **extra}


def oauth(**extra: Any) -> dict[str, Any]:
    return {"accessToken": "sk-ant-oat01-test-access-0001",
            "refreshToken": "sk-ant-ort01-test-refresh-0001",
            "expiresAt": round((time.time() - 5) * 1000), **extra}


def rewrite(path: Path, text: str) -> None:
    """Replace the file the way editors and our own writer do (new inode, new stamp)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, AccountsFile, AccountPool, AccountsWatcher]:
    path = tmp_path / "accounts.json"
    path.write_text(doc(a=key(1), b=key(2), c=key(3)))
    file = AccountsFile(path)
    pool = AccountPool(file.load())
    return path, file, pool, AccountsWatcher(pool, file, interval=0.02)


async def test_edits_apply_and_unchanged_accounts_keep_their_state(
        setup: tuple[Path, AccountsFile, AccountPool, AccountsWatcher]) -> None:
    """Add, remove and change accounts; the untouched one keeps its cooldown and counters."""
    path, _, pool, watcher = setup
    assert await watcher.check() is None  # the first look finds the loaded set: no change
    pool.release(pool.acquire("a").name)
    pool.cool_down("a", time.time() + 600, reason="rate limited")
    rewrite(path, doc(a=key(1), b=key(2, weight=5), d=key(4)))
    result = await watcher.check()
    assert result is not None
    assert (result.added, result.removed, result.changed) == (("d",), ("c",), ("b",))
    assert pool.names == ["a", "b", "d"]
    assert pool.account("b").weight == 5
    a = pool.status("a")
    assert (a.state, a.requests) == (AccountState.RATE_LIMITED, 1)
    assert watcher.reloads == 1
    assert watcher.last_error is None


async def test_garbage_is_ignored_and_shown_until_a_good_file_returns(
        setup: tuple[Path, AccountsFile, AccountPool, AccountsWatcher],
        caplog: pytest.LogCaptureFixture) -> None:
    """Half-written or invalid files leave the last good set serving, with the error visible."""
    path, _, pool, watcher = setup
    await watcher.check()
    good = doc(a=key(1), b=key(2), c=key(3))
    rewrite(path, good[: len(good) // 2])  # half-written
    assert await watcher.check() is None
    assert watcher.last_error is not None
    # The status API shows last_error: the file's name, not where it lives.
    assert watcher.last_error.startswith(path.name + ":")
    assert str(path.parent) not in watcher.last_error
    assert pool.names == ["a", "b", "c"]
    rewrite(path, doc(a=key(1), x={"apiKey": SECRET, "weight": "heavy"}))  # valid JSON, bad field
    assert await watcher.check() is None
    assert watcher.last_error is not None
    assert "'x'" in watcher.last_error
    assert "'weight'" in watcher.last_error
    assert pool.names == ["a", "b", "c"]
    assert SECRET not in caplog.text + watcher.last_error
    path.unlink()
    assert await watcher.check() is None
    assert watcher.last_error is not None
    assert "missing" in watcher.last_error
    rewrite(path, doc(a=key(1)))
    result = await watcher.check()
    assert result is not None
    assert result.removed == ("b", "c")
    assert watcher.last_error is None


async def test_the_service_picks_up_changes_while_running(
        setup: tuple[Path, AccountsFile, AccountPool, AccountsWatcher]) -> None:
    """Run as a service: a change made through the locked writer shows up in the pool."""
    _, file, pool, watcher = setup
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)

        def add(accounts: dict[str, Account]) -> dict[str, Account]:
            accounts.pop("c")
            return accounts

        await anyio.to_thread.run_sync(file.update, add)
        with anyio.fail_after(3):
            while "c" in pool:  # noqa: ASYNC110 - a removal emits no pool event
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert pool.names == ["a", "b"]


async def test_own_write_backs_do_not_reload(tmp_path: Path, httpx_mock: HTTPXMock) -> None:
    """After the refresher saves new tokens, the watcher sees the change and does nothing."""
    path = tmp_path / "accounts.json"
    path.write_text(doc(sub=oauth(), k=key(1)))
    file = AccountsFile(path)
    pool = AccountPool(file.load())
    watcher = AccountsWatcher(pool, file)
    await watcher.check()
    httpx_mock.add_response(json={"access_token": "sk-ant-oat01-test-access-0002",
                                  "refresh_token": "sk-ant-ort01-test-refresh-0002",
                                  "expires_in": 28800})
    refresher = TokenRefresher(pool, file, token_url="https://auth.test/token", client_id="c")
    stamp = file.stamp()
    await refresher.refresh("sub")
    assert file.stamp() != stamp
    assert await watcher.check() is None
    assert watcher.reloads == 0
    assert watcher.last_result is None
    assert await watcher.check() is None  # and it is not re-read again


def test_the_server_wires_refresher_and_watcher(tmp_path: Path) -> None:
    """The rotator: the proxy uses the refresher; hot_reload adds the watcher service."""
    path = tmp_path / "accounts.json"
    path.write_text(doc(k=key(1)))
    on = Rotator(Settings(accounts_path=path, refresh_buffer=120))
    refresher = on.refresher
    assert isinstance(refresher, TokenRefresher)
    assert refresher.refresh_buffer == 120
    assert on.proxy.refresher is refresher
    watcher = on.watcher
    assert isinstance(watcher, AccountsWatcher)
    assert watcher.refresher is refresher
    assert refresher in on.services
    assert watcher in on.services
    off = Rotator(Settings(accounts_path=path, hot_reload=False))
    assert off.watcher is None
    assert not any(isinstance(s, AccountsWatcher) for s in off.services)


async def test_a_new_login_in_the_file_repairs_an_auth_error(
        setup: tuple[Path, AccountsFile, AccountPool, AccountsWatcher]) -> None:
    """An account in auth_error comes back when `accounts login` writes new tokens."""
    from ccrotate._accounts.login import save_account

    path, file, pool, watcher = setup
    rewrite(path, doc(a=key(1), sub=oauth()))
    await watcher.check()
    pool.report_auth_error("sub", "refresh token rejected (invalid_grant)")
    old = pool.account("sub")
    assert old.refresh_token is not None
    await anyio.to_thread.run_sync(save_account, file, old.with_tokens(
        access_token="sk-ant-oat01-test-access-0009",
        refresh_token="sk-ant-ort01-test-refresh-0009", expires_at=time.time() + 28800))
    result = await watcher.check()
    assert result is not None
    assert result.changed == ("sub",)
    assert pool.status("sub").state is AccountState.AVAILABLE


def test_the_served_app_refreshes_and_reloads_in_its_lifespan(
        tmp_path: Path, fake_upstream_server: Any) -> None:
    """The rotator under uvicorn: a due token is refreshed and saved, a file edit is applied."""
    import httpx

    from ccrotate.testing import serve_app

    fake = fake_upstream_server.app
    path = tmp_path / "accounts.json"
    due = {"accessToken": fake.add_access_token(), "refreshToken": fake.oauth.add_refresh_token(),
           "expiresAt": round((time.time() + 120) * 1000)}
    path.write_text(doc(sub=due))
    settings = Settings(accounts_path=path, upstream_url=fake_upstream_server.url,
                        oauth_token_url=fake_upstream_server.url + "/v1/oauth/token")
    components = Rotator(settings)
    assert components.watcher is not None
    components.watcher.interval = 0.02
    with serve_app(components.app, lifespan="on") as server:
        deadline = time.monotonic() + 5
        while fake.oauth.refresh_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        AccountsFile(path).update(lambda accounts: {**accounts, "k": Account(
            name="k", kind=AccountKind.API_KEY, api_key=Secret("sk-ant-api03-test-key-0042"))})
        while "k" not in components.pool and time.monotonic() < deadline:
            time.sleep(0.01)
        response = httpx.post(server.url + "/api/v1/messages", headers={"x-account-name": "k"},
                              json={"model": "claude-sonnet-4-6", "max_tokens": 8,
                                    "messages": [{"role": "user", "content": "hi"}]})
    assert fake.oauth.refresh_count() == 1
    saved = {a.name: a for a in AccountsFile(path).load()}
    assert saved["sub"].access_token != Secret(due["accessToken"])
    assert saved["sub"] == components.pool.account("sub")
    assert response.status_code == 200
