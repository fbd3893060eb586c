"""Two `ccrotate serve` replicas, each its own process, on one accounts file and one Redis,
in front of a FakeUpstream: they rotate as one, respect each other's cooldowns, refresh an
OAuth token exactly once, lose no request when Redis dies, and share again when it returns.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _redis import RedisServer
from ccrotate.testing import FakeUpstream, RateLimited, ServerHandle, TokenReply

pytestmark = pytest.mark.slow

KEYS = {"x": "sk-ant-api03-e2e-xxxx-0001", "y": "sk-ant-api03-e2e-yyyy-0002",
        "z": "sk-ant-api03-e2e-zzzz-0003"}
BODY = {"model": "claude-sonnet-4-6", "max_tokens": 16,
        "messages": [{"role": "user", "content": "hello"}]}


class Replica:
    """One `ccrotate serve` process; its log lines are collected as they come."""

    def __init__(self, home: Path, accounts: Path, upstream: str, redis_url: str,
                 *extra: str, **env: str) -> None:
        environ = {**os.environ, "HOME": str(home), "PYTHONPATH": os.pathsep.join(sys.path),
                   "CCROTATE_STATE_URL": redis_url, "CCROTATE_STATE_NAMESPACE": "e2e",
                   "CCROTATE_OAUTH_TOKEN_URL": f"{upstream}/v1/oauth/token",
                   "CCROTATE_HOT_RELOAD": "false", **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ccrotate._cli.main", "serve", "--port", "0",
             "--accounts", str(accounts), "--upstream-url", upstream, *extra],
            stderr=subprocess.PIPE, text=True, env=environ, cwd=home)
        self.lines: list[str] = []
        self._url = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            found = re.search(r"ANTHROPIC_BASE_URL=(http://127\.0\.0\.1:\d+)/api", line)
            if found and not self.url:
                self.url = found[1]
                self._url.set()

    def wait_ready(self) -> None:
        assert self._url.wait(30), "".join(self.lines)
        wait_for(lambda: _get(self.url + "/health") is not None, "the replica answers")

    def status(self) -> dict[str, Any]:
        return httpx.get(self.url + "/status", timeout=10).json()  # type: ignore[no-any-return]

    def account_state(self, name: str) -> str:
        return next(a["state"] for a in self.status()["accounts"] if a["name"] == name)

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None


def wait_for(check: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Wait for something another process does (a deadline, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def send(replica: Replica) -> httpx.Response:
    return httpx.post(replica.url + "/api/v1/messages", json=BODY, timeout=30,
                      headers={"anthropic-version": "2023-06-01"})


def credentials_used(fake: FakeUpstream) -> list[str | None]:
    return [r.credential for r in fake.requests_for(path="/v1/messages")]


def api_key_accounts(path: Path) -> Path:
    path.write_text(json.dumps({"version": 1, "accounts": {
        name: {"apiKey": key} for name, key in KEYS.items()}}))
    path.chmod(0o600)
    return path


@pytest.fixture
def replicas(tmp_path: Path, upstream_server: ServerHandle[FakeUpstream],
             redis_server: RedisServer) -> Iterator[tuple[Replica, Replica]]:
    """Replicas A and B of one pool of three API-key accounts."""
    accounts = api_key_accounts(tmp_path / "accounts.json")
    pair = (Replica(tmp_path, accounts, upstream_server.url, redis_server.url),
            Replica(tmp_path, accounts, upstream_server.url, redis_server.url))
    try:
        for replica in pair:
            replica.wait_ready()
        yield pair
    finally:
        for replica in pair:
            replica.stop()


def cool_on(replica: Replica, fake: FakeUpstream, name: str) -> None:
    """Make ``name`` answer 429 and send requests to ``replica`` until it has tried it."""
    fake.set_default(KEYS[name], RateLimited(retry_after=600))
    for _ in range(6):
        assert send(replica).status_code == 200
        if KEYS[name] in credentials_used(fake):
            return
    raise AssertionError(f"{name} was never tried")


def test_a_cooldown_seen_by_one_replica_is_respected_by_the_other(
        replicas: tuple[Replica, Replica], upstream_server: ServerHandle[FakeUpstream]) -> None:
    """A's 429 on x cools x on B too: B then sends nothing to x."""
    a, b = replicas
    fake = upstream_server.app
    cool_on(a, fake, "x")
    wait_for(lambda: b.account_state("x") == "rate_limited", "B hears of x's cooldown")
    fake.clear_requests()
    for _ in range(12):
        assert send(b).status_code == 200
    used = credentials_used(fake)
    assert len(used) == 12
    assert KEYS["x"] not in used


def test_round_robin_over_both_replicas_is_even(
        replicas: tuple[Replica, Replica], upstream_server: ServerHandle[FakeUpstream]) -> None:
    """Requests alternating between A and B spread over the accounts as one rotation."""
    fake = upstream_server.app
    fake.clear_requests()
    for i in range(30):
        assert send(replicas[i % 2]).status_code == 200
    used = credentials_used(fake)
    counts = [used.count(key) for key in KEYS.values()]
    assert sum(counts) == 30
    assert max(counts) - min(counts) <= 1, counts


@pytest.mark.parametrize("files", ["one file", "a file each"])
def test_an_expiring_token_is_refreshed_exactly_once_by_two_busy_replicas(
        files: str, tmp_path: Path, upstream_server: ServerHandle[FakeUpstream],
        redis_server: RedisServer) -> None:
    """Both replicas want the refresh (its answer is slow) while each serves 50 requests at
    once: one token request is made, and both replicas then use the new token. With a file
    each (two hosts), only the Redis lock and the shared tokens can make that true."""
    fake = upstream_server.app
    refresh = fake.oauth.add_refresh_token()
    old_access = fake.add_access_token()
    fake.oauth.script(TokenReply(delay=2.0))
    record = {"version": 1, "accounts": {"sub": {
        "accessToken": old_access, "refreshToken": refresh,
        "expiresAt": round((time.time() + 30) * 1000)}}}
    paths = [tmp_path / "one.json", tmp_path / "two.json"]
    for path in paths:
        path.write_text(json.dumps(record))
        path.chmod(0o600)
    if files == "one file":
        paths = [paths[0], paths[0]]
    pair = [Replica(tmp_path, path, upstream_server.url, redis_server.url) for path in paths]
    try:
        for replica in pair:
            replica.wait_ready()
        statuses = asyncio.run(_storm([r.url for r in pair], 50))
        assert statuses == [200] * 100
        assert fake.oauth.refresh_count() == 1, pair[0].log() + "\n-----\n" + pair[1].log()
        new_access = fake.oauth.issued[-1].access_token
        used = set(credentials_used(fake))
        assert used == {new_access}
        for replica in pair:
            assert "token refreshed" in replica.log() or "adopted tokens" in replica.log()
    finally:
        for replica in pair:
            replica.stop()
    # Written back by the replica that refreshed (with a file each: to its own file).
    on_disk = {json.loads(p.read_text())["accounts"]["sub"]["accessToken"] for p in paths}
    assert new_access in on_disk


async def _storm(urls: list[str], each: int) -> list[int]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as c:
        calls = [c.post(url + "/api/v1/messages", json=BODY,
                        headers={"anthropic-version": "2023-06-01"})
                 for url in urls for _ in range(each)]
        return [r.status_code for r in await asyncio.gather(*calls)]


def test_redis_dying_mid_run_loses_no_request_and_its_return_resumes_sharing(
        replicas: tuple[Replica, Replica], upstream_server: ServerHandle[FakeUpstream],
        redis_server: RedisServer) -> None:
    """Redis killed while requests flow: every request is answered, each replica warns once
    and says degraded; Redis back: both resynchronise and a new cooldown propagates again."""
    a, b = replicas
    fake = upstream_server.app
    statuses = asyncio.run(_flow([a.url, b.url], 60, when=20, then=redis_server.stop))
    assert statuses == [200] * 60
    for replica in replicas:
        wait_for(lambda r=replica: r.status()["state"]["degraded"], "the replica notices")
        health = httpx.get(replica.url + "/health", timeout=5)
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert replica.log().count("is unreachable") == 1
    for i in range(10):  # served on local state meanwhile
        assert send(replicas[i % 2]).status_code == 200
    redis_server.start()
    for replica in replicas:
        wait_for(lambda r=replica: not r.status()["state"]["degraded"], "the replica is back")
    cool_on(a, fake, "y")
    wait_for(lambda: b.account_state("y") == "rate_limited", "B hears of y's cooldown")
    fake.clear_requests()
    for _ in range(8):
        assert send(b).status_code == 200
    assert KEYS["y"] not in credentials_used(fake)


async def _flow(urls: list[str], total: int, *, when: int, then: Callable[[], None]
                ) -> list[int]:
    # `total` requests, six at a time over the replicas; `then()` runs after `when` answers.
    done: list[int] = []
    queue = list(range(total))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            i = queue.pop()
            response = await client.post(urls[i % len(urls)] + "/api/v1/messages", json=BODY,
                                         headers={"anthropic-version": "2023-06-01"})
            done.append(response.status_code)
            if len(done) == when:
                await asyncio.to_thread(then)

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(6)))
    return done


def test_workers_without_shared_state_are_refused(tmp_path: Path) -> None:
    """`serve --workers 2` alone explains why it needs CCROTATE_STATE_URL, and exits."""
    accounts = api_key_accounts(tmp_path / "accounts.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCROTATE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "ccrotate._cli.main", "serve", "--workers", "2", "--port", "0",
         "--accounts", str(accounts)], capture_output=True, text=True, timeout=60,
        env={**env, "HOME": str(tmp_path), "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode != 0
    assert "--workers 2 needs shared state" in proc.stderr
    assert "CCROTATE_STATE_URL" in proc.stderr


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_workers_share_one_rotation(tmp_path: Path, upstream_server: ServerHandle[FakeUpstream],
                                   redis_server: RedisServer) -> None:
    """`serve --workers 2` with Redis: two processes behind one port, one rotation."""
    accounts = api_key_accounts(tmp_path / "accounts.json")
    server = Replica(tmp_path, accounts, upstream_server.url, redis_server.url,
                     "--workers", "2")
    try:
        server.wait_ready()
        fake = upstream_server.app
        fake.clear_requests()
        for _ in range(30):
            assert send(server).status_code == 200
        used = credentials_used(fake)
        counts = [used.count(key) for key in KEYS.values()]
        assert max(counts) - min(counts) <= 1, counts
        assert "2 worker processes" in server.log()
    finally:
        server.stop()
