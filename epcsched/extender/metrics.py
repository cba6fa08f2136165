"""The extender's own Prometheus metrics, in a registry per app (no process-wide globals).

Requests are counted in plain integers and turned into metric families only when scraped, so
counting costs next to nothing on the hot path; per-node EPC figures are likewise read from the
snapshot at scrape time instead of on every event.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
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


class ExtenderMetrics(Collector):
    """Request counts and latency histograms per verb, plus the per-node EPC collector.

    Counting happens on every extender call, so it is plain integer arithmetic on the event
    loop (the only writer); the Prometheus families are built from those counts at scrape time.
    """

    def __init__(
        self, registry: CollectorRegistry, snapshot: Callable[[], ClusterSnapshot]
    ) -> None:
        self.registry = registry
        self._requests: dict[tuple[str, int], int] = {}
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        registry.register(self)
        registry.register(NodeEpcCollector(snapshot))

    def observe(self, verb: str, code: int, seconds: float) -> None:
        key = (verb, code)
        self._requests[key] = self._requests.get(key, 0) + 1
        buckets = self._buckets.get(verb)
        if buckets is None:
            buckets = self._buckets[verb] = [0] * (len(_BUCKETS) + 1)
            self._sums[verb] = 0.0
        buckets[bisect_left(_BUCKETS, seconds)] += 1
        self._sums[verb] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "epcsched_extender_requests",
            "Extender requests by verb and HTTP status code.",
            labels=["verb", "code"],
        )
        for (verb, code), count in sorted(self._requests.items()):
            requests.add_metric([verb, str(code)], count)
        yield requests
        seconds = HistogramMetricFamily(
            "epcsched_extender_request_seconds",
            "Time to answer an extender request, by verb.",
            labels=["verb"],
        )
        for verb, counts in sorted(self._buckets.items()):
            cumulative = list(accumulate(counts))
            bounds = [*(str(b) for b in _BUCKETS), "+Inf"]
            seconds.add_metric(
                [verb], list(zip(bounds, cumulative, strict=True)), sum_value=self._sums[verb]
            )
        yield seconds
