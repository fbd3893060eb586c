"""Prometheus metrics: values after real traffic through the proxy, bounded labels, /metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ccrotate import AccountPool, RequestRecord, Rotator, Settings
from ccrotate._observe.metrics import PrometheusMetrics
from ccrotate._proxy.record import Failover
from ccrotate.testing import Limits, Overloaded, RateLimited, Reply, StreamError
from conftest import HELLO, KEY_A, KEY_C, MODEL, TOKEN_B, FakeClock, Stack

prometheus_client = pytest.importorskip("prometheus_client")


def sample(metrics: PrometheusMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)  # type: ignore[no-any-return]


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    # The proxy runs in the server's thread: observers see a request just after
    # the client has its answer.
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def served(serve_proxy: Any) -> tuple[Stack, PrometheusMetrics]:
    stack: Stack = serve_proxy()
    metrics = PrometheusMetrics(stack.pool)
    stack.proxy.observers.append(metrics)
    return stack, metrics


def ask(stack: Stack, *, model: str = MODEL, pin: str | None = None) -> httpx.Response:
    body = {"model": model, "max_tokens": 32, "messages": HELLO}
    headers = {"x-account-name": pin} if pin else {}
    return httpx.post(stack.url + "/v1/messages", json=body, headers=headers, timeout=10)


def requests_total(metrics: PrometheusMetrics, account: str, status: str) -> float:
    return sample(metrics, "ccrotate_requests_total", account=account, model=MODEL,
                  route="messages", status=status) or 0.0


def test_failover_counts_reason_cooldown_state_and_winner(
        served: tuple[Stack, PrometheusMetrics], clock: FakeClock) -> None:
    """A 429 on a counts a rate_limited failover, a cooldown, and b's 200 with tokens and cost."""
    stack, metrics = served
    stack.fake.script(KEY_A, RateLimited(retry_after=120, reset_after=120))
    stack.fake.script(TOKEN_B, Reply(input_tokens=1000, output_tokens=200))
    assert ask(stack).status_code == 200
    assert wait_for(lambda: requests_total(metrics, "b", "200") == 1)
    assert sample(metrics, "ccrotate_failovers_total", account="a", reason="quota") == 1
    assert sample(metrics, "ccrotate_cooldowns_total", account="a") == 1
    assert sample(metrics, "ccrotate_account_state", account="a", state="rate_limited") == 1
    assert sample(metrics, "ccrotate_account_state", account="a", state="available") == 0
    assert sample(metrics, "ccrotate_account_cooldown_seconds", account="a") == pytest.approx(
        120, abs=1)
    assert sample(metrics, "ccrotate_account_cooldown_seconds", account="b") == 0
    assert sample(metrics, "ccrotate_tokens_total", account="b", model=MODEL, kind="input") == 1000
    assert sample(metrics, "ccrotate_tokens_total", account="b", model=MODEL, kind="output") == 200
    # claude-sonnet-4-6: $3 in, $15 out per million tokens.
    assert sample(metrics, "ccrotate_cost_usd_total", account="b", model=MODEL) == pytest.approx(
        (1000 * 3 + 200 * 15) / 1e6)
    assert sample(metrics, "ccrotate_request_errors_total", account="b", route="messages",
                  error_type="rate_limit_error") is None
    clock.advance(121)
    assert sample(metrics, "ccrotate_account_state", account="a", state="available") == 1
    assert sample(metrics, "ccrotate_account_cooldown_seconds", account="a") == 0


def test_overloaded_failover_has_its_own_reason_and_no_cooldown(
        served: tuple[Stack, PrometheusMetrics]) -> None:
    """A 529 fails over as "overloaded" without cooling the account."""
    stack, metrics = served
    stack.fake.script(KEY_A, Overloaded())
    assert ask(stack).status_code == 200
    assert wait_for(lambda: requests_total(metrics, "b", "200") == 1)
    assert sample(metrics, "ccrotate_failovers_total", account="a", reason="overloaded") == 1
    assert sample(metrics, "ccrotate_failovers_total", account="a", reason="rate_limited") is None
    assert sample(metrics, "ccrotate_cooldowns_total", account="a") is None


def test_client_disconnect_is_499_and_not_an_error(
        served: tuple[Stack, PrometheusMetrics]) -> None:
    """A client that drops a stream mid-way is counted as 499 and as a disconnect, not an error."""
    stack, metrics = served
    stack.fake.script(KEY_A, Reply(text="a long answer " * 10, text_deltas=40, event_gap=0.05))
    body = {"model": MODEL, "max_tokens": 32, "messages": HELLO, "stream": True}
    with httpx.Client(timeout=10) as client, client.stream(
            "POST", stack.url + "/v1/messages", json=body,
            headers={"x-account-name": "a"}) as response:
        assert response.status_code == 200
        next(response.iter_raw())  # the first events arrived; now leave
    assert wait_for(lambda: requests_total(metrics, "a", "499") == 1)
    assert sample(metrics, "ccrotate_client_disconnects_total", account="a",
                  route="messages") == 1
    assert requests_total(metrics, "a", "200") == 0
    errors = [s for m in metrics.registry.collect() if m.name == "ccrotate_request_errors"
              for s in m.samples if s.name.endswith("_total")]
    assert errors == []


def test_errors_count_http_errors_and_error_events_in_a_200_stream(
        served: tuple[Stack, PrometheusMetrics]) -> None:
    """An overloaded event inside a 200 stream and an upstream 400 both count as errors."""
    stack, metrics = served
    stack.fake.script(KEY_A, StreamError(after=2, error_type="overloaded_error",
                                        event_gap=0.02))
    with httpx.Client(timeout=10) as client, client.stream(
            "POST", stack.url + "/v1/messages", headers={"x-account-name": "a"},
            json={"model": MODEL, "max_tokens": 32, "messages": HELLO, "stream": True}) as r:
        r.read()
    bad = httpx.post(stack.url + "/v1/messages", json={"model": MODEL, "messages": HELLO},
                     headers={"x-account-name": "c"}, timeout=10)
    assert bad.status_code == 400
    assert wait_for(lambda: sample(metrics, "ccrotate_request_errors_total", account="c",
                                   route="messages", error_type="invalid_request_error") == 1)
    assert sample(metrics, "ccrotate_request_errors_total", account="a", route="messages",
                  error_type="overloaded_error") == 1
    assert requests_total(metrics, "a", "200") == 1


def test_quota_utilisation_per_window_from_upstream_headers(
        served: tuple[Stack, PrometheusMetrics]) -> None:
    """The unified 5h/7d utilisation an OAuth account last reported becomes a gauge."""
    stack, metrics = served
    stack.fake.set_limits(TOKEN_B, Limits(five_hour=0.42, seven_day=0.17))
    assert ask(stack, pin="b").status_code == 200
    assert sample(metrics, "ccrotate_account_quota_utilization", account="b",
                  window="5h") == pytest.approx(0.42)
    assert sample(metrics, "ccrotate_account_quota_utilization", account="b",
                  window="7d") == pytest.approx(0.17)
    assert sample(metrics, "ccrotate_account_token_expires_in_seconds",
                  account="b") == pytest.approx(3600, abs=30)


def test_unknown_model_is_unpriced_not_guessed(served: tuple[Stack, PrometheusMetrics]) -> None:
    """Usage of a model the pricing table lacks counts tokens but no cost."""
    stack, metrics = served
    assert ask(stack, model="claude-nonesuch-9", pin="a").status_code == 200
    assert wait_for(lambda: sample(metrics, "ccrotate_unpriced_requests_total",
                                   model="claude-nonesuch-9") == 1)
    assert sample(metrics, "ccrotate_cost_usd_total", account="a",
                  model="claude-nonesuch-9") is None
    assert (sample(metrics, "ccrotate_tokens_total", account="a", model="claude-nonesuch-9",
                   kind="output") or 0) > 0


def record(model: str | None, route: str = "messages") -> RequestRecord:
    return RequestRecord(request_id="r", started_at=0.0, route=route, model=model,
                         account="a", status=200, latency=0.1)


def test_labels_stay_bounded() -> None:
    """Models beyond the cap, odd model strings, routes and reasons collapse into "other"."""
    metrics = PrometheusMetrics(max_models=2)
    for model in ("claude-a", "claude-b", "claude-c", "../../etc/passwd", None, "claude-a"):
        metrics.on_request(record(model))
    metrics.on_request(record("claude-a", route="/v1/some/raw/path"))
    metrics.on_failover(record("claude-a"), Failover("a", "bizarre reason"))
    models = {s.labels["model"] for m in metrics.registry.collect()
              if m.name == "ccrotate_requests" for s in m.samples if s.name.endswith("_total")}
    assert models == {"claude-a", "claude-b", "other", "none"}
    assert sample(metrics, "ccrotate_requests_total", account="a", model="other",
                  route="messages", status="200") == 2
    assert sample(metrics, "ccrotate_requests_total", account="a", model="claude-a",
                  route="other", status="200") == 1
    assert sample(metrics, "ccrotate_failovers_total", account="a", reason="other") == 1


def test_record_refresh_counts_outcomes() -> None:
    """The token refresher's hook counts outcomes; free text cannot mint new labels."""
    metrics = PrometheusMetrics()
    metrics.record_refresh("b", "success")
    metrics.record_refresh("b", "success")
    metrics.record_refresh("b", "invalid_grant")
    metrics.record_refresh("b", "upstream said: <html>nope</html>")
    assert sample(metrics, "ccrotate_token_refreshes_total", account="b", outcome="success") == 2
    assert sample(metrics, "ccrotate_token_refreshes_total", account="b",
                  outcome="invalid_grant") == 1
    assert sample(metrics, "ccrotate_token_refreshes_total", account="b", outcome="other") == 1


def test_works_with_the_users_own_registry(pool: AccountPool) -> None:
    """Metrics land in a registry the user passes, next to the user's own metrics."""
    registry = prometheus_client.CollectorRegistry()
    mine = prometheus_client.Counter("my_app_things", "mine", registry=registry)
    mine.inc()
    PrometheusMetrics(pool, registry=registry, namespace="team")
    text = prometheus_client.generate_latest(registry).decode()
    assert "my_app_things_total 1.0" in text
    assert 'team_account_state{account="b",state="available"} 1.0' in text
    assert "# TYPE team_requests_total counter" in text


async def test_metrics_route_in_the_reference_server(pool: AccountPool) -> None:
    """``GET /metrics`` serves the text format, guarded like the status API's reads."""
    settings = Settings(auth_tokens=("client-key-0123456789",))
    rotator = Rotator(settings, pool=pool)
    transport = httpx.ASGITransport(app=rotator.app)
    async with rotator, httpx.AsyncClient(transport=transport,
                                          base_url="http://localhost") as client:
        refused = await client.get("/metrics")
        assert refused.status_code == 401
        r = await client.get("/metrics", headers={"authorization": "Bearer client-key-0123456789"})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert 'ccrotate_account_state{account="c",state="available"} 1.0' in r.text
        om = await client.get("/metrics", headers={
            "authorization": "Bearer client-key-0123456789",
            "accept": "application/openmetrics-text; version=1.0.0"})
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.endswith("# EOF\n")
        assert "client-key" not in r.text
    assert isinstance(rotator.metrics, PrometheusMetrics)


def test_sdk_style_keys_never_become_labels(served: tuple[Stack, PrometheusMetrics]) -> None:
    """No credential ends up in any exposed label or value."""
    stack, metrics = served
    assert ask(stack).status_code == 200
    text = prometheus_client.generate_latest(metrics.registry).decode()
    for secret in (KEY_A, TOKEN_B, KEY_C):
        assert secret not in text


async def test_token_refreshes_reach_the_metrics(tmp_path: Any) -> None:
    """The reference server wires the refresher to the metrics: outcomes are counted."""
    import json

    from ccrotate import AccountsFile, InvalidGrant
    from ccrotate.testing import FakeUpstream, serve_app

    fake = FakeUpstream()
    good, dead = fake.oauth.issue(), fake.oauth.issue()
    path = tmp_path / "accounts.json"
    soon = int(time.time() * 1000) + 3_600_000
    path.write_text(json.dumps({"version": 1, "accounts": {
        "ok": {"accessToken": good.access_token, "refreshToken": good.refresh_token,
               "expiresAt": soon},
        "gone": {"accessToken": dead.access_token, "refreshToken": "sk-ant-ort01-unknown",
                 "expiresAt": soon}}}))
    with serve_app(fake) as upstream:
        settings = Settings(accounts_path=path, upstream_url=upstream.url,
                            oauth_token_url=upstream.url + "/v1/oauth/token", hot_reload=False)
        c = Rotator(settings, accounts_file=AccountsFile(path))
        metrics = c.metrics
        assert metrics is not None
        await c.refresher.refresh("ok", reason="test")
        with pytest.raises(InvalidGrant):
            await c.refresher.refresh("gone", reason="test")
    assert sample(metrics, "ccrotate_token_refreshes_total", account="ok", outcome="success") == 1
    assert sample(metrics, "ccrotate_token_refreshes_total", account="gone",
                  outcome="invalid_grant") == 1


def test_decisions_are_visible_in_the_metrics(served: tuple[Stack, PrometheusMetrics]) -> None:
    """Failovers by taxonomy reason, why an account is out, who picked, and affinity."""
    stack, metrics = served
    stack.fake.script(KEY_A, Overloaded())
    body = {"model": MODEL, "max_tokens": 32, "messages": HELLO,
            "metadata": {"user_id": '{"session_id":"conv-1"}'}}
    for _ in range(3):
        assert httpx.post(stack.url + "/v1/messages", json=body, timeout=10).status_code == 200
    assert wait_for(lambda: sample(metrics, "ccrotate_failovers_total", account="a",
                                   reason="overloaded") == 1)
    assert sample(metrics, "ccrotate_account_out_reason", account="a",
                  reason="overloaded") == 1
    # The session was bound to a, which failed: rebound to b, which kept it after that.
    assert sample(metrics, "ccrotate_affinity_decisions_total", outcome="miss") == 1
    assert sample(metrics, "ccrotate_affinity_decisions_total", outcome="rebind") == 1
    assert sample(metrics, "ccrotate_affinity_decisions_total", outcome="hit") == 2
    assert sample(metrics, "ccrotate_account_picks_total", account="b", by="affinity") == 2
    assert sample(metrics, "ccrotate_account_picks_total", account="a", by="strategy") == 1
