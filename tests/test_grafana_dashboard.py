"""The Grafana dashboard (docs/grafana/ccrotate.json) queries only metrics ccrotate exports.

The exported names come from a live :class:`PrometheusMetrics` registry after real traffic
through the proxy (a failover, a cooldown, quota headers, tokens, an unpriced model, a
refresh, an error and a disconnect), so every labelled series exists. Each PromQL
expression in the dashboard (panel targets and the template variables' queries) is parsed
for the metric names it selects; each must be one of those.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccrotate import RequestRecord
from ccrotate.testing import Limits, RateLimited, Reply
from conftest import HELLO, KEY_A, MODEL, TOKEN_B, Stack

pytest.importorskip("prometheus_client")

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "ccrotate.json"

# Words in a PromQL expression that are not metric names once strings, label matchers,
# ranges and grouping clauses are gone: the operators and modifiers that are bare words.
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                # strings
    text = re.sub(r"\{[^}]*\}", "", text)                          # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                         # ranges, subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "",
                  text)                                            # grouping labels
    text = re.sub(r"\$\w+|\$\{[^}]*\}", "", text)                  # Grafana variables
    text = re.sub(r"\b\d+(\.\d+)?([eE][-+]?\d+)?\b", "", text)     # numbers
    names = set()
    for match in _IDENT.finditer(text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match[0].lower() in _KEYWORDS:
            continue                                               # a function, a keyword
        names.add(match[0])
    return names


def test_metric_names_parser() -> None:
    """The parser sees metrics, not functions, labels, variables or keywords."""
    assert metric_names('histogram_quantile(0.95, sum by (le, model) '
                        '(rate(x_bucket{account=~"$account"}[$__rate_interval])))') == {
        "x_bucket"}
    assert metric_names('sum(a_total{s!="499"}) / sum(b) and on (account) c == 1') == {
        "a_total", "b", "c"}


def _exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            found = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query)
            assert found, f"${variable['name']}: {query}"
            yield f"${variable['name']}", found[1]


@pytest.fixture
def exported(serve_proxy: Any) -> set[str]:
    """Every sample name a PrometheusMetrics registry exports after a little traffic."""
    from ccrotate import PrometheusMetrics

    stack: Stack = serve_proxy()
    metrics = PrometheusMetrics(stack.pool)
    stack.proxy.observers.append(metrics)
    stack.fake.script(KEY_A, RateLimited(retry_after=120, reset_after=120))
    stack.fake.script(TOKEN_B, Reply(input_tokens=1000, output_tokens=200))
    stack.fake.set_limits(TOKEN_B, Limits(five_hour=0.42, seven_day=0.17))
    for model, pin in ((MODEL, None), (MODEL, "b"), ("claude-nonesuch-9", "b")):
        response = httpx.post(stack.url + "/v1/messages", timeout=10,
                              headers={"x-account-name": pin} if pin else {},
                              json={"model": model, "max_tokens": 32, "messages": HELLO})
        assert response.status_code == 200
    metrics.on_request(RequestRecord(request_id="e", started_at=0.0, route="messages",
                                     model=MODEL, account="c", status=529, latency=0.1,
                                     error_type="overloaded_error"))
    metrics.on_request(RequestRecord(request_id="d", started_at=0.0, route="messages",
                                     model=MODEL, account="c", status=200,
                                     client_disconnected=True))
    metrics.record_refresh("b", "success")
    deadline = time.monotonic() + 5
    while metrics.registry.get_sample_value("ccrotate_unpriced_requests_total",
                                            {"model": "claude-nonesuch-9"}) is None:
        assert time.monotonic() < deadline, "the proxy never reported the last request"
        time.sleep(0.005)
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}


def test_every_dashboard_query_names_exported_metrics(exported: set[str]) -> None:
    """No panel queries a metric ccrotate does not export (a typo or a renamed metric)."""
    dashboard = json.loads(DASHBOARD.read_text())
    seen: set[str] = set()
    for where, expr in _exprs(dashboard):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"{where}: {sorted(unknown)} not exported ({expr!r})"
        seen |= names
    # And the dashboard shows every metric family ccrotate exports.
    families = {re.sub(r"_(bucket|count|sum|created|total)$", "", n) for n in exported}
    shown = {re.sub(r"_(bucket|count|sum|created|total)$", "", n) for n in seen}
    assert families - shown == set(), sorted(families - shown)


def test_dashboard_is_importable_json() -> None:
    """Unique panel ids, a Prometheus datasource variable every panel uses, a uid."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "ccrotate"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
