"""The metrics API's own Prometheus metrics: what it was asked, what it answered, how long
Prometheus took.

When HPAs stop scaling on EPC, an operator needs to tell apart the HPA's requests not arriving,
being refused (401/403: the front-proxy CA or RBAC), failing (503: Prometheus or the informers)
and being slow (the queries behind them). The HPA controller asks every 15 s per HPA, so these
are prometheus_client's own counters and histograms, in a registry per server (no process-wide
globals), beside `epcsched_build_info` and the process collectors.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from epcsched.metricsapi.source import SERIES
from epcsched.metricsapi.values import EXTERNAL_METRICS, POD_METRICS
from epcsched.metricsapi.wire import Route

# An answer from the informer cache takes about a millisecond; one that waits for Prometheus
# takes up to its timeout (prometheus.timeout, 5 s by default).
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

METRICS_PATH = "/metrics"


def request_kind(route: Route) -> str:
    """The `kind` label of a request: `pods`, `external`, `discovery`, `metrics` (this
    server's own /metrics) or `unknown`."""
    if route.kind == "unknown" and route.path == METRICS_PATH:
        return "metrics"
    return route.kind


class ApiMetrics:
    """Requests by kind, metric and status code, their answer time, and the Prometheus
    queries behind them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "epcsched_metrics_api_requests",
            "Requests to the metrics API by kind (pods, external, discovery, metrics, unknown), "
            "metric (empty when the path names none it serves) and HTTP status code.",
            ["kind", "metric", "code"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "epcsched_metrics_api_request_seconds",
            "Time to answer a request to the metrics API (authentication, authorisation and "
            "the Prometheus query included), by kind.",
            ["kind"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.query_seconds = Histogram(
            "epcsched_metrics_api_prometheus_query_seconds",
            "Time Prometheus took to answer a query the metrics API sent (answers served from "
            "the cache are not counted), by query: usage, limit_hits, node_used, node_paging.",
            ["query"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.query_failures = Counter(
            "epcsched_metrics_api_prometheus_query_failures",
            "Queries to Prometheus that gave no usable answer (unreachable, timed out, "
            "rejected), by query; each made the requests waiting for it answer 503.",
            ["query"],
            registry=registry,
        )
        # Present at 0 from the start, so that rate() and alerts see the first failure.
        for name in SERIES:
            self.query_failures.labels(name)

    def request(self, route: Route, code: int, seconds: float) -> None:
        """Count one answered request."""
        kind = request_kind(route)
        known = POD_METRICS if kind == "pods" else EXTERNAL_METRICS if kind == "external" else {}
        # Only metric names this server serves become label values: a client asking for
        # made-up names must not grow the series without bound.
        metric = route.metric if route.metric in known else ""
        self.requests.labels(kind, metric, str(code)).inc()
        self.request_seconds.labels(kind).observe(seconds)

    def query(self, name: str, seconds: float, ok: bool) -> None:
        """Count one query sent to Prometheus (the `PrometheusSource` observer)."""
        self.query_seconds.labels(name).observe(seconds)
        if not ok:
            self.query_failures.labels(name).inc()
