"""The exporter's Prometheus collector: kernel EPC figures, read afresh on every scrape.

A custom collector rather than gauges updated by a timer, so each scrape shows the files as they
are at that moment, with no second clock between the kernel and Prometheus, and so a figure the
kernel stops offering disappears from the next scrape instead of lingering at its last value.
Names follow DESIGN.md section 7; they mean what the kernel measured, never what pods requested.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from epcsched.exporter.sysfs import EpcReading, read_epc

CAPACITY = "epcsched_node_epc_capacity_bytes"
FREE = "epcsched_node_epc_free_bytes"
EVICTED = "epcsched_node_epc_evicted_pages"
LOADED_BACK = "epcsched_node_epc_loaded_back_pages"
CGROUP = "epcsched_cgroup_epc_bytes"
CGROUP_MAX_EVENTS = "epcsched_cgroup_epc_max_events"

_HELP = {
    CAPACITY: "Total EPC of the node, as the kernel reports it.",
    FREE: "EPC not held by any enclave, as the kernel reports it.",
    EVICTED: "EPC pages evicted to normal memory since boot (SGX driver counter).",
    LOADED_BACK: "EPC pages loaded back from normal memory since boot (SGX driver counter).",
    CGROUP: "EPC charged to a pod's misc cgroup (sgx_epc), by pod UID.",
    CGROUP_MAX_EVENTS: "Times a pod's misc cgroup refused EPC over its limit (misc.events "
    "sgx_epc.max), by pod UID.",
}


class EpcCollector(Collector):
    """Collects the EPC metrics of one node from the files under `root`."""

    def __init__(self, root: Path, node: str) -> None:
        self.root = root
        self.node = node

    def describe(self) -> Iterator[Metric]:
        # Naming the families lets the registry check for clashes without reading the files.
        yield GaugeMetricFamily(CAPACITY, _HELP[CAPACITY], labels=["node"])
        yield GaugeMetricFamily(FREE, _HELP[FREE], labels=["node"])
        yield CounterMetricFamily(EVICTED, _HELP[EVICTED], labels=["node"])
        yield CounterMetricFamily(LOADED_BACK, _HELP[LOADED_BACK], labels=["node"])
        yield GaugeMetricFamily(CGROUP, _HELP[CGROUP], labels=["node", "pod"])
        yield CounterMetricFamily(
            CGROUP_MAX_EVENTS, _HELP[CGROUP_MAX_EVENTS], labels=["node", "pod"]
        )

    def collect(self) -> Iterator[Metric]:
        yield from families(read_epc(self.root), self.node)


def families(reading: EpcReading, node: str) -> Iterator[Metric]:
    """The metric families for one reading; a figure the kernel did not give is left out."""
    for name, value in ((CAPACITY, reading.capacity), (FREE, reading.free)):
        if value is not None:
            gauge = GaugeMetricFamily(name, _HELP[name], labels=["node"])
            gauge.add_metric([node], value)
            yield gauge
    for name, count in ((EVICTED, reading.evicted_pages), (LOADED_BACK, reading.loaded_back_pages)):
        if count is not None:
            counter = CounterMetricFamily(name, _HELP[name], labels=["node"])
            counter.add_metric([node], count)
            yield counter
    if reading.pods:
        pods = GaugeMetricFamily(CGROUP, _HELP[CGROUP], labels=["node", "pod"])
        for uid in sorted(reading.pods):
            pods.add_metric([node, uid], reading.pods[uid])
        yield pods
    if reading.pod_max_events:
        hits = CounterMetricFamily(
            CGROUP_MAX_EVENTS, _HELP[CGROUP_MAX_EVENTS], labels=["node", "pod"]
        )
        for uid in sorted(reading.pod_max_events):
            hits.add_metric([node, uid], reading.pod_max_events[uid])
        yield hits
