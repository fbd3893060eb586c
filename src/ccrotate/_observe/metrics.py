"""Prometheus metrics: request counters and histograms, plus the pool's state at scrape time.

:class:`PrometheusMetrics` is three things at once: an
:class:`~ccrotate.Observer` (counts each request as it ends), a pool listener
(counts cooldowns as they start), and a collector that reads
``pool.statuses()`` when Prometheus scrapes (account states, cooldown seconds
left, quota utilisation), so gauges are never stale. ``prometheus_client`` is
the optional extra ``ccrotate[metrics]`` and is imported only here.

Label values stay bounded: routes, failover reasons and error types come from
fixed sets; a model id is a label only if it keeps the proxy's model-id rule
(``ccrotate._wire.MODEL_ID_SHAPE``, at most 128 characters) and fewer than
``max_models`` distinct ones are in use, else it becomes ``"other"``; nothing
per-request (ids, paths) is ever a label.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import anyio

from ccrotate._asgi import Receive, Scope, Send, send_bytes
from ccrotate._checks import at_least, positive
from ccrotate._exceptions import ConfigError
from ccrotate._observe.pricing import ModelPrice, PricingTable
from ccrotate._pool.pool import AccountPool, PoolEvent
from ccrotate._pool.state import AccountState, Event
from ccrotate._pool.taxonomy import Reason
from ccrotate._proxy.record import Failover, RequestRecord
from ccrotate._state.backend import StateBackend
from ccrotate._wire import MODEL_ID_SHAPE

if TYPE_CHECKING:
    from ccrotate._observe.accesslog import AccessLog

__all__ = ["MetricsApp", "PrometheusMetrics"]

ROUTES = frozenset({"messages", "count_tokens", "models", "chat_completions",
                    "sdk_messages", "sdk_chat_completions"})
REASONS = frozenset(reason.value for reason in Reason)
ERROR_TYPES = frozenset({
    "invalid_request_error", "authentication_error", "permission_error", "not_found_error",
    "request_too_large", "rate_limit_error", "api_error", "overloaded_error", "billing_error",
    "timeout_error",
})
TOKEN_KINDS = (("input", "input_tokens"), ("output", "output_tokens"),
               ("cache_read", "cache_read_tokens"), ("cache_write", "cache_write_tokens"))
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
                   600.0)
TTFB_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
_OUTCOME_SHAPE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_NAMESPACE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


_NO_USAGE = (None, None, None, None)
_ROWS_MAX = 4096


_REQUESTS, _OUTCOME, _DURATION, _TTFB, _UPSTREAM, _TOKENS = range(6)
_COST, _UNPRICED = _TOKENS + len(TOKEN_KINDS), _TOKENS + len(TOKEN_KINDS) + 1


class _Family:
    # One metric's series in plain Python: label values -> a cell that the request path
    # bumps without a lock or a call. A counter's cell is [value, created], a histogram's
    # [sum, created, count per bucket...] (bucket i: the first upper bound >= the value,
    # as prometheus_client files it). They become Prometheus samples at scrape time only.
    __slots__ = ("bounds", "doc", "kind", "labelnames", "name", "series")

    def __init__(self, name: str, doc: str, labelnames: tuple[str, ...],
                 bounds: tuple[float, ...] | None = None) -> None:
        self.name = name
        self.doc = doc
        self.kind = "counter" if bounds is None else "histogram"
        self.labelnames = labelnames
        # With +Inf last, as prometheus_client's own histograms.
        self.bounds = None if bounds is None else (*bounds, math.inf)
        self.series: dict[tuple[str, ...], list[float]] = {}

    def cell(self, labels: tuple[str, ...]) -> list[float]:
        cell = self.series.get(labels)
        if cell is None:
            if self.bounds is None:
                cell = [0.0, time.time()]
            else:
                cell = [0.0, time.time(), *(0.0 for _ in self.bounds)]
            # setdefault: a series made by two threads at once is still one series.
            cell = self.series.setdefault(labels, cell)
        return cell

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self.cell(labels)[0] += amount

    def metric(self, pc: Any, created: bool) -> Any:
        # Exactly the samples prometheus_client's Counter and Histogram give, in order.
        metric = pc.metrics_core.Metric(self.name, self.doc, self.kind)
        add, names, bounds = metric.add_sample, self.labelnames, self.bounds
        for labels, cell in self.series.copy().items():
            base = dict(zip(names, labels, strict=True))
            if bounds is None:
                add(self.name + "_total", base, cell[0], None, None)
            else:
                acc = 0.0
                for bound, count in zip(bounds, cell[2:], strict=True):
                    acc += count
                    add(self.name + "_bucket", {**base, "le": pc.utils.floatToGoString(bound)},
                        acc, None, None)
                add(self.name + "_count", base, acc, None, None)
                add(self.name + "_sum", base, cell[0], None, None)
            if created:
                add(self.name + "_created", base, cell[1], None, None)
        return metric


class _Row:
    # One combination of request labels: each family's label values, its cells once made
    # (a series appears when it is first counted), and the model's price.
    __slots__ = ("cells", "labels", "price")

    def __init__(self, labels: list[tuple[_Family, tuple[str, ...]] | None],
                 price: ModelPrice | None) -> None:
        self.labels = labels
        self.cells: list[list[float] | None] = [None] * len(labels)
        self.price = price

    def cell(self, i: int) -> list[float]:
        cell = self.cells[i]
        if cell is None:
            family, labels = self.labels[i]  # type: ignore[misc]  # None only for _OUTCOME
            cell = self.cells[i] = family.cell(labels)
        return cell


def _buckets(owner: str, field: str, values: Iterable[float]) -> tuple[float, ...]:
    # prometheus_client would reject unsorted ones too, but without naming the argument.
    buckets = tuple(values)
    for value in buckets:
        positive(owner, field, value)
    if not buckets or any(a >= b for a, b in itertools.pairwise(buckets)):
        raise ConfigError(f"{owner}.{field}: must be increasing upper bounds in seconds "
                          f"(got {buckets!r})")
    return buckets


def _prometheus() -> Any:
    try:
        import prometheus_client
        import prometheus_client.core
        import prometheus_client.exposition
    except ImportError as exc:
        raise ImportError("metrics need prometheus-client: "
                          "pip install 'ccrotate[metrics]'") from exc
    return prometheus_client


class _Bounded:
    # Admits label values that look sane until `cap` distinct ones are in use;
    # every later newcomer shares "other". Lock-free: a race can admit one extra.

    def __init__(self, cap: int, shape: re.Pattern[str], seed: Iterable[str] = ()) -> None:
        self.cap = cap
        self.shape = shape
        self.known: set[str] = set()
        for value in seed:
            self(value)

    def __call__(self, value: str | None) -> str:
        if value is None or value == "":
            return "none"
        if value in self.known:
            return value
        if len(self.known) >= self.cap or not self.shape.fullmatch(value):
            return "other"
        self.known.add(value)
        return value


def _checked(namespace: str, max_models: int, latency: Iterable[float],
             ttfb: Iterable[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # PrometheusMetrics' arguments, checked before any metric is registered.
    owner = "PrometheusMetrics"
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise ConfigError(f"{owner}.namespace: must be a Prometheus name prefix, letters, "
                          f"digits and _ not starting with a digit (got {namespace!r})")
    at_least(owner, "max_models", max_models, 0)
    return (_buckets(owner, "latency_buckets", latency),
            _buckets(owner, "ttfb_buckets", ttfb))


class PrometheusMetrics:
    """ccrotate's Prometheus metrics (see ``docs/observability.md`` for names and labels).

    Parameters:
        pool: the :class:`AccountPool` to report on (cooldowns and state gauges);
            :meth:`attach` adds one later.
        registry: a ``prometheus_client.CollectorRegistry`` of yours; by default a
            private one (pass ``prometheus_client.REGISTRY`` to join the global one).
        pricing: the :class:`PricingTable` for ``ccrotate_cost_usd_total``.
        namespace: the metric name prefix.
        max_models: distinct model labels before further ones count as ``"other"``.
        latency_buckets: request-latency histogram buckets in seconds.
        ttfb_buckets: time-to-first-byte histogram buckets in seconds.

    Raises ``ImportError`` with the install hint when ``prometheus_client`` is missing.
    """

    def __init__(self, pool: AccountPool | None = None, *, registry: Any = None,
                 pricing: PricingTable | None = None, namespace: str = "ccrotate",
                 max_models: int = 32, latency_buckets: Iterable[float] = LATENCY_BUCKETS,
                 ttfb_buckets: Iterable[float] = TTFB_BUCKETS) -> None:
        latency_buckets, ttfb_buckets = _checked(namespace, max_models, latency_buckets,
                                                 ttfb_buckets)
        if importlib.util.find_spec("prometheus_client") is None:
            _prometheus()  # the ImportError with the install hint
        self.pricing = pricing if pricing is not None else PricingTable.load()
        self.namespace = namespace
        # The same rule the proxy enforces on requests: anything it let through may be
        # a label, garbage never (a record may come from elsewhere than the proxy).
        self._models = _Bounded(max_models, MODEL_ID_SHAPE)
        self._outcomes = _Bounded(16, _OUTCOME_SHAPE)
        self._rows: dict[tuple[Any, ...], _Row] = {}
        self._pools: list[AccountPool] = []
        self._access_logs: list[AccessLog] = []
        self._states: list[StateBackend] = []
        families = _request_families(namespace, latency_buckets, ttfb_buckets)
        (self.requests, self.errors, self.disconnects, self.duration, self.ttfb,
         self.upstream_latency, self.failovers, self.cooldowns, self.refreshes, self.tokens,
         self.cost, self.unpriced) = families
        self._collectors = (_RequestCollector(families), _PoolCollector(self))
        self.collector = self._collectors[1]
        # prometheus_client is imported when the registry is first needed (a scrape, or
        # the caller's own registry): the request path never touches it.
        self._registry: Any = None
        self._lock = threading.Lock()
        if registry is not None:
            self._register(registry)
        if pool is not None:
            self.attach(pool)

    @property
    def registry(self) -> Any:
        """The ``prometheus_client`` registry these metrics are in (a private one, made on
        first use, unless one was passed)."""
        if self._registry is None:
            with self._lock:
                if self._registry is None:
                    self._register(_prometheus().CollectorRegistry())
        return self._registry

    def _register(self, registry: Any) -> None:
        for collector in self._collectors:
            registry.register(collector)
        self._registry = registry

    def __repr__(self) -> str:
        return f"<PrometheusMetrics namespace={self.namespace!r} pools={len(self._pools)}>"

    def attach(self, pool: AccountPool) -> None:
        """Report on ``pool``: listen to its events and read its state at scrape time."""
        if pool not in self._pools:
            self._pools.append(pool)
            pool.add_listener(self.on_pool_event)

    def attach_access_log(self, access_log: AccessLog) -> None:
        """Report the records ``access_log`` lost, and what its store still has to write,
        read at scrape time (``ccrotate_access_log_dropped_total``,
        ``ccrotate_access_log_store_buffered``)."""
        if access_log not in self._access_logs:
            self._access_logs.append(access_log)

    def attach_state(self, backend: StateBackend) -> None:
        """Report on a shared state backend: its errors and whether it is degraded."""
        if backend not in self._states:
            self._states.append(backend)

    @property
    def app(self) -> MetricsApp:
        """An ASGI app answering ``GET`` with this registry in the Prometheus text format."""
        return MetricsApp(_Registry(self))

    # -- Observer ------------------------------------------------------------------------

    def on_failover(self, record: RequestRecord, failover: Failover) -> None:
        """Count one failed-over attempt."""
        reason = failover.reason if failover.reason in REASONS else "other"
        self.failovers.inc((failover.account, reason))

    def on_request(self, record: RequestRecord) -> None:
        """Count one finished request: status, timings, tokens and cost."""
        key = (record.account, record.model, record.route, record.status,
               record.client_disconnected, record.error_type)
        row = self._rows.get(key)
        if row is None:
            row = self._row(record)
            if len(self._rows) >= _ROWS_MAX:  # model ids come from clients: stay bounded
                self._rows.clear()
            self._rows[key] = row
        cells, get = row.cells, row.cell
        (cells[_REQUESTS] or get(_REQUESTS))[0] += 1.0
        if row.labels[_OUTCOME] is not None:
            get(_OUTCOME)[0] += 1.0
        # A histogram's cell: [sum, created, buckets...]; the bucket is the first upper
        # bound >= the value.
        if (value := record.latency) is not None:
            cell = cells[_DURATION] or get(_DURATION)
            cell[0] += value
            cell[bisect_left(self.duration.bounds, value) + 2] += 1.0  # type: ignore[arg-type]
        if (value := record.ttfb) is not None:
            cell = cells[_TTFB] or get(_TTFB)
            cell[0] += value
            cell[bisect_left(self.ttfb.bounds, value) + 2] += 1.0  # type: ignore[arg-type]
        if (value := record.upstream_latency) is not None and record.account is not None:
            cell = cells[_UPSTREAM] or get(_UPSTREAM)
            cell[0] += value
            cell[bisect_left(self.upstream_latency.bounds, value) + 2] += 1.0  # type: ignore[arg-type]
        counts = (record.input_tokens, record.output_tokens, record.cache_read_tokens,
                  record.cache_write_tokens)
        if counts != _NO_USAGE:
            self._usage(row, counts)

    @staticmethod
    def _usage(row: _Row, counts: tuple[int | None, int | None, int | None, int | None]
               ) -> None:
        i = _TOKENS
        for count in counts:
            if count is not None and count > 0:
                row.cell(i)[0] += count
            i += 1
        if row.price is None:
            row.cell(_UNPRICED)[0] += 1.0
            return
        n_in, n_out, n_read, n_write = counts
        cost = row.price.cost(n_in or 0, n_out or 0, n_read or 0, n_write or 0)
        if cost > 0:
            row.cell(_COST)[0] += cost

    def _row(self, record: RequestRecord) -> _Row:
        # The labels of each metric for one combination of request fields, resolved once;
        # a child is made on first use only, so a series appears when it is counted.
        account = record.account or "none"
        model = self._models(record.model)
        route = record.route if record.route in ROUTES else "other"
        disconnected = record.client_disconnected or record.status == 499
        outcome: tuple[_Family, tuple[str, ...]] | None = None
        if disconnected:
            outcome = (self.disconnects, (account, route))
        elif record.status == 0 or record.status >= 400 or record.error_type is not None:
            error_type = record.error_type if record.error_type in ERROR_TYPES else "other"
            outcome = (self.errors, (account, route, error_type))
        status = "499" if disconnected else str(record.status)
        labels: list[tuple[_Family, tuple[str, ...]] | None] = [
                  (self.requests, (account, model, route, status)), outcome,
                  (self.duration, (route, model)), (self.ttfb, (route, model)),
                  (self.upstream_latency, (account, route)),
                  *((self.tokens, (account, model, kind)) for kind, _ in TOKEN_KINDS),
                  (self.cost, (account, model)), (self.unpriced, (model,))]
        return _Row(labels, self.pricing.price_for(record.model))

    # -- pool events and hooks -----------------------------------------------------------

    def on_pool_event(self, event: PoolEvent) -> None:
        """Pool listener: count a cooldown when an account starts cooling."""
        # Another replica's cooldown is that replica's to count: summed over replicas,
        # the counter stays the number of cooldowns.
        if (not event.remote and event.event is Event.RATE_LIMITED
                and event.after is AccountState.RATE_LIMITED
                and event.before is not AccountState.RATE_LIMITED):
            self.cooldowns.inc((event.account,))

    def record_refresh(self, account: str, outcome: str) -> None:
        """Count one OAuth token refresh of ``account``.

        ``outcome`` is a short word such as ``success``, ``failure`` or
        ``invalid_grant``; odd or too many distinct values count as ``other``.
        """
        self.refreshes.inc((account, self._outcomes(outcome.lower())))


def _request_families(ns: str, latency: tuple[float, ...],
                      ttfb: tuple[float, ...]) -> tuple[_Family, ...]:
    # In prometheus_client's registration order of old, which is the exposition's order.
    return (
        _Family(f"{ns}_requests", "Client requests by the status the client saw (499: the "
                "client went away first).", ("account", "model", "route", "status")),
        _Family(f"{ns}_request_errors", "Requests that ended in an error, by error type "
                "(client disconnects are not errors).", ("account", "route", "error_type")),
        _Family(f"{ns}_client_disconnects", "Requests the client abandoned before the answer "
                "was complete.", ("account", "route")),
        _Family(f"{ns}_request_duration_seconds", "Whole request time, from arrival to the "
                "last byte.", ("route", "model"), latency),
        _Family(f"{ns}_ttfb_seconds", "Time from arrival to the first response byte sent to "
                "the client.", ("route", "model"), ttfb),
        _Family(f"{ns}_upstream_latency_seconds", "Time from sending the winning attempt "
                "upstream to its response head.", ("account", "route"), ttfb),
        _Family(f"{ns}_failovers", "Attempts that failed over to another account, by the "
                "account that failed and why.", ("account", "reason")),
        _Family(f"{ns}_cooldowns", "Cooldowns started (an account became rate-limited).",
                ("account",)),
        _Family(f"{ns}_token_refreshes", "OAuth token refreshes by outcome.",
                ("account", "outcome")),
        _Family(f"{ns}_tokens", "Tokens reported by the upstream, by kind (input, output, "
                "cache_read, cache_write).", ("account", "model", "kind")),
        _Family(f"{ns}_cost_usd", "Estimated cost in USD from the pricing table.",
                ("account", "model")),
        _Family(f"{ns}_unpriced_requests", "Requests with usage but a model the pricing table "
                "does not know (their cost is not counted).", ("model",)),
    )


class _RequestCollector:
    # The request counters and histograms, turned into Prometheus families when scraped.

    def __init__(self, families: tuple[_Family, ...]) -> None:
        self._families = families

    def describe(self) -> list[Any]:
        metric = _prometheus().metrics_core.Metric
        return [metric(f.name, f.doc, f.kind) for f in self._families]

    def collect(self) -> list[Any]:
        pc = _prometheus()
        # Read at each scrape, as prometheus_client's own metrics do
        # (PROMETHEUS_DISABLE_CREATED_SERIES, disable_created_metrics()).
        created = pc.metrics._use_created
        return [family.metric(pc, created) for family in self._families]


class _Registry:
    # What MetricsApp renders: the metrics' registry, made (and prometheus_client
    # imported) at the first scrape rather than when the server starts.

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        return self._metrics.registry.collect()  # type: ignore[no-any-return]


class _PoolCollector:
    # Reads the pools when Prometheus scrapes: gauges that are never stale and cost
    # nothing between scrapes.

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._metrics = metrics

    def _families(self) -> dict[str, Any]:
        pc = _prometheus()
        ns, gauge = self._metrics.namespace, pc.core.GaugeMetricFamily
        counter = pc.core.CounterMetricFamily
        return {
            "out": gauge(f"{ns}_account_out_reason", "1 for why an account is not serving "
                         "(quota, throttle, spend_cap, overloaded, ...); absent while it serves.",
                         labels=["account", "reason"]),
            "picks": counter(f"{ns}_account_picks", "Requests given to an account, by who "
                             "decided: the strategy or session affinity.",
                             labels=["account", "by"]),
            "affinity": counter(f"{ns}_affinity_decisions", "Session-affinity decisions: hit "
                                "(the bound account served), miss (a new session), rebind.",
                                labels=["outcome"]),
            "state": gauge(f"{ns}_account_state", "1 for the state each account is in, else 0.",
                           labels=["account", "state"]),
            "cooldown": gauge(f"{ns}_account_cooldown_seconds", "Seconds until a rate-limited "
                              "account is tried again (0 when not cooling).",
                              labels=["account"]),
            "quota": gauge(f"{ns}_account_quota_utilization", "Latest quota utilisation "
                           "(0..1) per window, from the upstream rate-limit headers.",
                           labels=["account", "window"]),
            "in_flight": gauge(f"{ns}_account_in_flight", "Requests in flight per account.",
                               labels=["account"]),
            "expires": gauge(f"{ns}_account_token_expires_in_seconds", "Seconds until an "
                             "OAuth account's access token expires.", labels=["account"]),
            "log_dropped": counter(f"{ns}_access_log_dropped", "Access-log records lost: "
                                   "stage=buffer (the log's own buffer was full), store (the "
                                   "store's buffer was full or its database refused them).",
                                   labels=["stage"]),
            "log_buffered": gauge(f"{ns}_access_log_store_buffered", "Access-log entries "
                                  "waiting for the store's database (grows while it is away)."),
            "state_errors": counter(f"{ns}_state_backend_errors", "Calls to the shared state "
                                    "store that failed (timeouts, refused connections).",
                                    labels=["backend"]),
            "state_degraded": gauge(f"{ns}_state_backend_degraded", "1 while the shared state "
                                    "store is unreachable (each replica decides alone).",
                                    labels=["backend"]),
        }

    def _collect_access_logs(self, fam: dict[str, Any]) -> None:
        logs = self._metrics._access_logs
        if not logs:
            return
        # Stores without a buffer of their own (memory, DuckDB) lose nothing there.
        fam["log_dropped"].add_metric(["buffer"], float(sum(a.dropped for a in logs)))
        fam["log_dropped"].add_metric(["store"], float(sum(
            getattr(a.store, "dropped", 0) for a in logs)))
        fam["log_buffered"].add_metric([], float(sum(
            getattr(a.store, "buffered", 0) for a in logs)))

    def describe(self) -> Iterator[Any]:
        yield from self._families().values()

    def collect(self) -> Iterator[Any]:
        fam = self._families()
        affinity: dict[str, int] = {"hit": 0, "miss": 0, "rebind": 0}
        for pool in self._metrics._pools:
            now = pool.now()
            for outcome, count in pool.affinity_counts.items():
                affinity[outcome] = affinity.get(outcome, 0) + count
            for st in pool.statuses():
                if st.out_reason is not None:
                    fam["out"].add_metric([st.name, st.out_reason], 1.0)
                fam["picks"].add_metric([st.name, "strategy"], float(st.strategy_picks))
                fam["picks"].add_metric([st.name, "affinity"], float(st.affinity_picks))
                for state in AccountState:
                    fam["state"].add_metric([st.name, state.value],
                                            1.0 if st.state is state else 0.0)
                left = 0.0 if st.cooldown_until is None else max(0.0, st.cooldown_until - now)
                fam["cooldown"].add_metric([st.name], left)
                fam["in_flight"].add_metric([st.name], float(st.in_flight))
                if st.token_expires_at is not None:
                    fam["expires"].add_metric([st.name], st.token_expires_at - now)
                if st.quota is not None:
                    for window, quota in st.quota.windows.items():
                        if quota.utilization is not None:
                            fam["quota"].add_metric([st.name, window], quota.utilization)
        for outcome, count in affinity.items():
            fam["affinity"].add_metric([outcome], float(count))
        self._collect_access_logs(fam)
        for backend in self._metrics._states:
            health = backend.health()
            fam["state_errors"].add_metric([health.kind], float(health.errors))
            fam["state_degraded"].add_metric([health.kind], 1.0 if health.degraded else 0.0)
        yield from fam.values()


class MetricsApp:
    """``GET /metrics`` as a pure ASGI app, for any registry.

    Mount it with ``Route("/metrics", MetricsApp(registry))``. It negotiates the
    OpenMetrics format through ``Accept`` and renders in a worker thread, so a
    scrape never stalls the event loop.

    Parameters:
        registry: a ``prometheus_client`` registry (or any collector).
    """

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send_bytes(send, 405, [(b"allow", b"GET, HEAD")], b"")
            return
        accept = ""
        for key, value in scope["headers"]:
            if key == b"accept":
                accept = value.decode("latin-1")
        encoder, content_type = _prometheus().exposition.choose_encoder(accept)
        body: bytes = await anyio.to_thread.run_sync(encoder, self.registry)
        headers = [(b"content-type", content_type.encode()), (b"cache-control", b"no-store")]
        if scope["method"] == "HEAD":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        await send_bytes(send, 200, headers, body)
