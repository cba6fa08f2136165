"""The extender's own Prometheus metrics, in a registry per app (no process-wide globals).

Request counters are pre-bound per verb so that counting costs next to nothing on the hot path;
per-node EPC figures are read from the snapshot at scrape time instead of on every event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from epcsched.core.snapshot import ClusterSnapshot

# Extender calls take well under a millisecond to a few; kube-scheduler times out at seconds.
_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class NodeEpcCollector(Collector):
    """`epcsched_node_epc_{allocatable,requested}_bytes{node,resource}` from requests."""

    def __init__(self, snapshot: Callable[[], ClusterSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        allocatable = GaugeMetricFamily(
            "epcsched_node_epc_allocatable_bytes",
            "EPC the node advertises as allocatable, in bytes, per resource name.",
            labels=["node", "resource"],
        )
        requested = GaugeMetricFamily(
            "epcsched_node_epc_requested_bytes",
            "EPC requested by non-terminal pods bound to the node, in bytes, per resource name.",
            labels=["node", "resource"],
        )
        for name, slot in sorted(snap.slots.items()):
            for resource, column in snap.epc.items():
                if column.has[slot]:
                    allocatable.add_metric([name, resource], float(column.allocatable[slot]))
                    requested.add_metric([name, resource], float(column.requested[slot]))
        yield allocatable
        yield requested


class ExtenderMetrics:
    """Counters and latency histograms for each verb, plus the per-node EPC collector."""

    def __init__(
        self, registry: CollectorRegistry, snapshot: Callable[[], ClusterSnapshot]
    ) -> None:
        self.registry = registry
        self.requests = Counter(
            "epcsched_extender_requests_total",
            "Extender requests by verb and HTTP status code.",
            ["verb", "code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "epcsched_extender_request_seconds",
            "Time to answer an extender request, by verb.",
            ["verb"],
            buckets=_BUCKETS,
            registry=registry,
        )
        registry.register(NodeEpcCollector(snapshot))
        self._counters: dict[tuple[str, int], Counter] = {}
        self._timers: dict[str, Histogram] = {}

    def observe(self, verb: str, code: int, seconds: float) -> None:
        counter = self._counters.get((verb, code))
        if counter is None:
            counter = self._counters[(verb, code)] = self.requests.labels(verb, str(code))
        timer = self._timers.get(verb)
        if timer is None:
            timer = self._timers[verb] = self.seconds.labels(verb)
        counter.inc()
        timer.observe(seconds)
