"""The EPC metrics served to the HorizontalPodAutoscaler, and how each value is worked out.

Pure: the inputs are what Prometheus measured (one `Measurements`, keyed by pod UID or node name)
and what the informers know about pods, nodes and the configured pools; the outputs are the
values as Kubernetes quantity strings, the form the metrics APIs carry them in. No I/O and no
clock, so the benchmarks, the tests' hand-worked figures and the server compute the same thing.

Per pod (custom.metrics.k8s.io, `type: Pods` in an HPA):
- `sgx_epc_usage_bytes`: EPC the pod's misc cgroup holds (its containers included), in bytes;
- `sgx_epc_usage_ratio`: that over the pod's EPC limit, in thousandths (`800m` = 80 %);
- `sgx_epc_limit_hits`: `max` events of the pod's cgroup per second over the window: how often
  an enclave wanted more EPC than its limit allowed.
A pod with no sample in the window is left out, as metrics-server does, so the HPA counts it as
missing rather than idle; a pod without an EPC limit has no ratio.

External (external.metrics.k8s.io, `type: External`), one value per pool or node, with labels
the HPA's `selector` picks from:
- `sgx_epc_pool_utilization`: per configured node pool, EPC in use over allocatable in
  thousandths, a node's use being the larger of requested and measured (the autoscaler's rule,
  core/plan.py), labels `pool` and the pool's node labels;
- `sgx_epc_node_paging_rate`: EPC pages evicted per second per node over the window, labels
  `node`, `pool` (when the node is in one) and the node's own labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from epcsched.metricsapi.selectors import Selector

USAGE_BYTES = "sgx_epc_usage_bytes"
USAGE_RATIO = "sgx_epc_usage_ratio"
LIMIT_HITS = "sgx_epc_limit_hits"
POOL_UTILIZATION = "sgx_epc_pool_utilization"
NODE_PAGING_RATE = "sgx_epc_node_paging_rate"


@dataclass(frozen=True, slots=True)
class MetricInfo:
    name: str
    description: str
    rate: bool
    """Computed over the window from a counter (windowSeconds is the window), rather than an
    instantaneous reading (windowSeconds 0)."""


POD_METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo(USAGE_BYTES, "EPC held by the pod's misc cgroup, in bytes", rate=False),
        MetricInfo(USAGE_RATIO, "EPC held over the pod's EPC limit (800m = 80%)", rate=False),
        MetricInfo(LIMIT_HITS, "EPC charges refused over the pod's limit, per second", rate=True),
    )
}
EXTERNAL_METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo(
            POOL_UTILIZATION,
            "EPC in use (max of requested and measured per node) over allocatable, per pool",
            rate=False,
        ),
        MetricInfo(NODE_PAGING_RATE, "EPC pages evicted per second, per node", rate=True),
    )
}


@dataclass(frozen=True, slots=True)
class PodEntry:
    """What the metrics need to know about one pod."""

    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str] = field(default_factory=dict)
    epc_limit: int = 0
    """The pod's EPC request in bytes (for extended resources a limit equals the request)."""
    node: str | None = None


@dataclass(frozen=True, slots=True)
class NodeEntry:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    epc_allocatable: int = 0
    """Allocatable EPC in bytes, all EPC resource names together."""


@dataclass(frozen=True, slots=True)
class PoolEntry:
    name: str
    node_selector: Mapping[str, str]
    """The labels that mark the pool's nodes; empty selects no node."""

    def holds(self, node: NodeEntry) -> bool:
        return bool(self.node_selector) and all(
            node.labels.get(k) == v for k, v in self.node_selector.items()
        )


@dataclass(frozen=True, slots=True)
class Measurements:
    """One round of Prometheus answers, evaluated at `time` (Unix seconds)."""

    time: float
    pod_usage: Mapping[str, float] = field(default_factory=dict)
    """EPC bytes held, by pod UID: the newest sample within the window."""
    pod_limit_hits: Mapping[str, float] = field(default_factory=dict)
    """`max` events per second over the window, by pod UID."""
    node_used: Mapping[str, float] = field(default_factory=dict)
    """Measured EPC in use in bytes, by node."""
    node_paging: Mapping[str, float] = field(default_factory=dict)
    """EPC pages evicted per second over the window, by node."""


def milli_quantity(milli: int) -> str:
    """A value given in thousandths as Kubernetes writes a decimal quantity: `950m`, `2`, `0`."""
    if milli % 1000 == 0:
        return str(milli // 1000)
    return f"{milli}m"


def to_milli(value: float) -> int:
    """`value` in thousandths, rounded half away from zero as resource.Quantity rounds."""
    scaled = value * 1000
    return int(scaled + 0.5) if scaled >= 0 else -int(-scaled + 0.5)


def ratio_milli(part: int, whole: int) -> int:
    """`part / whole` in thousandths, rounded half up, in integers (bytes are never floats)."""
    return (2000 * part + whole) // (2 * whole)


def pod_value(metric: str, pod: PodEntry, measured: Measurements) -> str | None:
    """The value of pod metric `metric` for `pod`, or None when there is none to give."""
    if metric == LIMIT_HITS:
        hits = measured.pod_limit_hits.get(pod.uid)
        return None if hits is None else milli_quantity(to_milli(max(hits, 0.0)))
    usage = measured.pod_usage.get(pod.uid)
    if usage is None or usage < 0:
        return None
    held = round(usage)
    if metric == USAGE_BYTES:
        return str(held)
    if metric == USAGE_RATIO:
        return milli_quantity(ratio_milli(held, pod.epc_limit)) if pod.epc_limit > 0 else None
    raise KeyError(metric)


def pod_values(
    metric: str, pods: Iterable[PodEntry], selector: Selector, measured: Measurements
) -> list[tuple[PodEntry, str]]:
    """Each pod `selector` picks that has a value, in name order."""
    found = []
    everything = selector.everything
    for pod in pods:
        if everything or selector.matches(pod.labels):
            value = pod_value(metric, pod, measured)
            if value is not None:
                found.append((pod, value))
    found.sort(key=_by_name)
    return found


def _by_name(item: tuple[PodEntry, str]) -> str:
    return item[0].name


def requested_by_node(pods: Iterable[PodEntry]) -> dict[str, int]:
    """EPC requested per node by the pods bound there, in bytes."""
    totals: dict[str, int] = {}
    for pod in pods:
        if pod.node and pod.epc_limit:
            totals[pod.node] = totals.get(pod.node, 0) + pod.epc_limit
    return totals


def pool_utilization(
    pool: PoolEntry,
    nodes: Iterable[NodeEntry],
    requested: Mapping[str, int],
    measured: Measurements,
) -> str | None:
    """EPC in use over allocatable across the pool's nodes; None for a pool with no EPC."""
    used = 0
    allocatable = 0
    for node in nodes:
        if not pool.holds(node) or node.epc_allocatable <= 0:
            continue
        allocatable += node.epc_allocatable
        seen = measured.node_used.get(node.name)
        # A node with no fresh sample counts by requests, as the autoscaler counts it.
        in_use = max(requested.get(node.name, 0), round(seen) if seen and seen > 0 else 0)
        used += min(in_use, node.epc_allocatable)
    if allocatable == 0:
        return None
    return milli_quantity(ratio_milli(used, allocatable))


def node_pool(node: NodeEntry, pools: Iterable[PoolEntry]) -> str | None:
    """The first configured pool that holds `node`."""
    return next((p.name for p in pools if p.holds(node)), None)


def external_values(
    metric: str,
    selector: Selector,
    *,
    pools: Iterable[PoolEntry],
    nodes: Iterable[NodeEntry],
    pods: Iterable[PodEntry],
    measured: Measurements,
) -> list[tuple[dict[str, str], str]]:
    """(metric labels, value) of each series `selector` picks, in label order."""
    found: list[tuple[dict[str, str], str]] = []
    pool_list = list(pools)
    if metric == POOL_UTILIZATION:
        node_list = list(nodes)
        requested = requested_by_node(pods)
        for pool in pool_list:
            labels = {**pool.node_selector, "pool": pool.name}
            if not selector.matches(labels):
                continue
            value = pool_utilization(pool, node_list, requested, measured)
            if value is not None:
                found.append((labels, value))
        found.sort(key=lambda item: item[0]["pool"])
        return found
    if metric == NODE_PAGING_RATE:
        for node in nodes:
            rate = measured.node_paging.get(node.name)
            if rate is None:
                continue
            labels = {**node.labels, "node": node.name}
            member_of = node_pool(node, pool_list)
            if member_of is not None:
                labels["pool"] = member_of
            if selector.matches(labels):
                found.append((labels, milli_quantity(to_milli(max(rate, 0.0)))))
        found.sort(key=lambda item: item[0]["node"])
        return found
    raise KeyError(metric)
