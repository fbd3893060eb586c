"""The dashboard: the page as served, and the live page in a real headless Chromium.

The browser test drives Debian's ``chromium`` over the DevTools protocol with
aiohttp's websocket client (no browser download, no extra package). It is
marked ``browser`` and skips when no Chromium is installed; ``CCROTATE_CHROMIUM``
names a binary explicitly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx
import pytest

from ccrotate import AccountPool, Rotator, Settings
from ccrotate.testing import RateLimited, serve_app
from conftest import CREDENTIALS, HELLO, MODEL, make_accounts

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1000", "--remote-debugging-port=0"]


def find_chromium() -> str | None:
    named = os.environ.get("CCROTATE_CHROMIUM")
    if named:
        return shutil.which(named)
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


# -- the page as served ----------------------------------------------------------------------


async def test_page_is_self_contained_with_a_strict_policy(pool: AccountPool) -> None:
    """One HTML page, nothing fetched from elsewhere, scripts allowed only by this nonce."""
    rotator = Rotator(Settings(), pool=pool)
    transport = httpx.ASGITransport(app=rotator.app, root_path="/team")
    async with rotator, httpx.AsyncClient(transport=transport,
                                          base_url="http://localhost") as client:
        r = await client.get("/dashboard")
        again = await client.get("/dashboard")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    policy = r.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce is not None
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    page = r.text
    assert page.count(f'nonce="{nonce[1]}"') == 2  # the style and the script, nothing else
    # Nothing to fetch: the only link is the inline data: icon.
    assert re.findall(r"""(?:src|href)\s*=\s*["']?([a-z]+:)?""", page) == ["data:"]
    assert re.search(r"@import|url\(", page) is None
    blob = re.search(r'<script id="ccrotate-config" type="application/json">(.*?)</script>',
                     page, re.S)
    assert blob is not None
    config = json.loads(blob[1])
    assert config["status"] == "/team/status/"
    assert config["analytics"] == "/team/logs/analytics"
    assert config["interval"] == 2000
    assert again.headers["content-security-policy"] != policy


# -- the live page in Chromium ---------------------------------------------------------------


class DevTools:
    """Just enough of the Chrome DevTools protocol: commands, events, one page session."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    async def pump(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            future = self.pending.pop(data.get("id", -1), None)
            if future is None:
                self.events.append(data)
            elif "error" in data:
                future.set_exception(RuntimeError(f"DevTools: {data['error']}"))
            else:
                future.set_result(data.get("result", {}))

    async def call(self, method: str, page: bool = True, **params: Any) -> Any:
        ident = next(self.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[ident] = future
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if page and self.session:
            message["sessionId"] = self.session
        await self.ws.send_str(json.dumps(message))
        with anyio.fail_after(15):
            return await future

    async def js(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def until(self, expression: str, within: float) -> Any:
        """Poll ``expression`` until it is truthy; its value, or a failure after ``within`` s."""
        deadline = time.monotonic() + within
        while True:
            value = await self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"the page never satisfied {expression!r} within {within}s")
            await anyio.sleep(0.1)


@contextlib.asynccontextmanager
async def chromium(binary: str) -> AsyncIterator[DevTools]:
    # Chromium's helper processes may still be writing the profile as it is removed:
    # a leftover temp file is no test failure.
    with tempfile.TemporaryDirectory(prefix="ccrotate-chromium-",
                                     ignore_cleanup_errors=True) as profile:
        proc = await anyio.open_process(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # Chromium writes its DevTools port here once it listens.
            port_file = Path(profile) / "DevToolsActivePort"
            with anyio.fail_after(20):
                while not port_file.exists() or len(port_file.read_text().split()) < 2:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            port, path = port_file.read_text().split()[:2]
            async with aiohttp.ClientSession() as http, http.ws_connect(
                    f"ws://127.0.0.1:{port}{path}", max_msg_size=0) as ws:
                tools = DevTools(ws)
                pump = asyncio.ensure_future(tools.pump())
                try:
                    target = await tools.call("Target.createTarget", url="about:blank")
                    attached = await tools.call("Target.attachToTarget", flatten=True,
                                                targetId=target["targetId"])
                    tools.session = attached["sessionId"]
                    for domain in ("Page", "Runtime", "Log"):
                        await tools.call(f"{domain}.enable")
                    yield tools
                finally:
                    pump.cancel()
        finally:
            proc.terminate()
            with anyio.move_on_after(10) as waited:
                await proc.wait()
            if waited.cancelled_caught:
                proc.kill()
            await proc.aclose()


STATES = ("JSON.stringify(Array.from(document.querySelectorAll('.card[data-account]'))"
          ".map(c => [c.dataset.account, c.dataset.state, c.querySelector('.state').textContent]))")


@pytest.mark.browser
@pytest.mark.slow
async def test_dashboard_shows_the_pool_and_follows_a_rate_limit(fake_upstream: Any) -> None:
    """The page lists the accounts of a running server and shows a 429'd account cooling."""
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set CCROTATE_CHROMIUM)")
    pool = AccountPool(make_accounts())
    with serve_app(fake_upstream) as upstream:
        rotator = Rotator(Settings(upstream_url=upstream.url), pool=pool)
        with serve_app(rotator.app, lifespan="on") as server:
            async with chromium(binary) as page:
                await page.call("Page.navigate", url=server.url + "/dashboard")
                await page.until(f"{STATES} === JSON.stringify(["
                                 "['a','available','available'],['b','available','available'],"
                                 "['c','available','available']])", within=15)

                victim = pool.peek()
                assert victim is not None
                fake_upstream.script(CREDENTIALS[victim], RateLimited(retry_after=600,
                                                                      reset_after=600))
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                    r = await client.post("/api/v1/messages", json={
                        "model": MODEL, "max_tokens": 16, "messages": HELLO})
                assert r.status_code == 200
                winner = r.headers["x-ccrotate-account"]
                assert winner != victim
                t0 = time.monotonic()
                card = f"document.querySelector('.card[data-account=\"{victim}\"]')"
                await page.until(f"{card}.dataset.state === 'rate_limited' && "
                                 f"{card}.querySelector('.state').textContent === 'rate limited'",
                                 within=5)
                assert time.monotonic() - t0 < 5
                countdown = await page.until(f"{card}.querySelector('.cooldown')?.textContent",
                                             within=3)
                assert re.fullmatch(r"(9|10)m \d+s", countdown), countdown
                # Why it is out (the taxonomy's reason) and its utilization, as the API says.
                why = await page.until(f"{card}.querySelector('.why')?.textContent", within=3)
                assert why == "not serving: quota"
                bars = await page.until(f"{card}.querySelectorAll('.bar').length", within=3)
                assert bars >= 1  # the latest utilization per window, from the 429's headers
                row = await page.until(
                    "Array.from(document.querySelectorAll('#recent tr')).map(r => r.innerText)"
                    f".find(t => t.includes('{winner}') && t.includes('{MODEL}'))", within=6)
                assert "200" in row
                await page.until("document.querySelectorAll('#chart rect').length > 0", within=4)
                shot = await page.call("Page.captureScreenshot", format="png")
                ARTIFACTS.mkdir(exist_ok=True)
                (ARTIFACTS / "dashboard.png").write_bytes(base64.b64decode(shot["data"]))
                problems = [e["params"] for e in page.events
                            if e.get("method") == "Runtime.exceptionThrown"
                            or (e.get("method") == "Log.entryAdded"
                                and e["params"]["entry"]["level"] == "error")]
                assert problems == []
