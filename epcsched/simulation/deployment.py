"""A long-running enclave Deployment whose EPC use follows a load curve, and what scales it.

The job workloads (`workload`) answer "where do these pods go"; this one answers "how many
replicas should there be". One Deployment serves a total load `L(t)`, given as EPC bytes over
time (linear between the points of the scenario), shared evenly by its running replicas: each
replica holds `base + L(t) / running` bytes of EPC, however large that is. Above the pod's EPC
limit the enclave pages (its misc cgroup's `sgx_epc.max` makes the kernel evict its own pages),
and the simulator counts those enclave-seconds. Its CPU use follows the same share
(`cpuBase + cpuPerGiB * share`), so that a CPU-based HPA sees the load too, in its own proportion.

Each scenario compares *scalers* for that one Deployment: a fixed replica count, or an HPA on a
metric (`sgx_epc_usage_ratio` with an averageValue target, or `cpu` with an averageUtilization
target) with its min/max and scale-down stabilization, decided by the controller's own rule
(`epcsched.metricsapi.hpa`). The node pools and the node autoscaler are the scenario's, as for
jobs. `paging_free_minimum` gives the fewest replicas and nodes that would keep every enclave
within its limit at every moment, the yardstick the runs are measured against.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from epcsched.config import ConfigError, parse_duration
from epcsched.metricsapi.hpa import SYNC_PERIOD, TOLERANCE, Behavior
from epcsched.metricsapi.values import USAGE_RATIO
from epcsched.model import NodeInfo
from epcsched.quantity import MIB, QuantityError, parse_quantity

FIXED = "fixed"
CPU = "cpu"
SCALER_METRICS = (USAGE_RATIO, CPU)
"""The metrics an HPA scaler may name."""


@dataclass(frozen=True, slots=True)
class LoadCurve:
    """A piecewise-linear function of time: `points` (time s, value), constant outside them.

    Two points at the same time make a step; at that time the curve already has the later value.
    """

    points: tuple[tuple[float, float], ...]

    def _segments(self) -> list[tuple[float, float, float, float]]:
        """(t0, v0, t1, v1) for every stretch of positive length, unbounded ones included."""
        pts = self.points
        inner = [(t0, v0, t1, v1) for (t0, v0), (t1, v1) in itertools.pairwise(pts) if t1 > t0]
        first, last = pts[0], pts[-1]
        return [
            (-math.inf, first[1], first[0], first[1]),
            *inner,
            (last[0], last[1], math.inf, last[1]),
        ]

    @staticmethod
    def _within(segment: tuple[float, float, float, float], t: float) -> float:
        t0, v0, t1, v1 = segment
        if math.isinf(t0) or math.isinf(t1):
            return v0
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    def at(self, t: float) -> float:
        for segment in self._segments():
            if segment[0] <= t < segment[2]:
                return self._within(segment, t)
        return self.points[-1][1]

    def _pieces(self, start: float, end: float) -> list[tuple[float, float, float, float]]:
        """(t0, v0, t1, v1) linear pieces that cover [start, end], with each piece's own values
        at its ends (a step's two sides belong to different pieces)."""
        pieces = []
        for segment in self._segments():
            a, b = max(start, segment[0]), min(end, segment[2])
            if b > a:
                pieces.append((a, self._within(segment, a), b, self._within(segment, b)))
        return pieces

    def seconds_above(self, start: float, end: float, threshold: float) -> float:
        """How long within [start, end] the curve is strictly above `threshold`."""
        total = 0.0
        for t0, v0, t1, v1 in self._pieces(start, end):
            if v0 > threshold and v1 > threshold:
                total += t1 - t0
            elif v0 > threshold or v1 > threshold:
                crossing = t0 + (threshold - v0) / (v1 - v0) * (t1 - t0)
                total += (crossing - t0) if v0 > threshold else (t1 - crossing)
        return total

    def peak(self, start: float, end: float) -> float:
        """The largest value within [start, end] (reached at the end of some piece)."""
        pieces = self._pieces(start, end)
        if not pieces:
            return self.at(start)
        return max(max(v0, v1) for _, v0, _, v1 in pieces)

    def integral_of_steps(self, start: float, end: float, step: float) -> float:
        """The integral over [start, end] of `max(1, ceil(curve / step))`, exactly."""

        def antiderivative(x: float) -> float:
            # Of ceil(u) from 0 to x >= 0: 1 + 2 + ... + n, then (n + 1) over the last f.
            n = math.floor(x)
            return n * (n + 1) / 2 + (x - n) * (n + 1)

        total = 0.0
        for t0, v0, t1, v1 in self._pieces(start, end):
            u0, u1 = v0 / step, v1 / step
            if u0 == u1:
                total += (t1 - t0) * max(1, math.ceil(u0))
            else:
                # Over u in (0, 1] ceil is already 1, so max(1, .) changes nothing but u == 0.
                total += (t1 - t0) * (antiderivative(u1) - antiderivative(u0)) / (u1 - u0)
        return total


@dataclass(frozen=True, slots=True)
class ScalerSpec:
    """One way of choosing the replica count: fixed, or an HPA on one metric."""

    name: str
    metric: str
    """`fixed`, `sgx_epc_usage_ratio` or `cpu`."""
    replicas: int = 1
    """The fixed count, or the HPA's starting count (its minReplicas)."""
    target: int = 0
    """averageValue in thousandths (sgx_epc_usage_ratio) or averageUtilization in percent."""
    behavior: Behavior = field(default_factory=Behavior)


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """The `workload: {deployment: ...}` of a scenario."""

    name: str
    epc_limit: int
    """EPC request and limit of each replica, in bytes."""
    epc_base: int
    """EPC a replica holds with no load, in bytes."""
    cpu_request: int
    """CPU request of each replica, in millicores."""
    cpu_base: int
    cpu_per_gib: float
    """Millicores a replica uses per GiB of load it holds."""
    memory: int
    load: LoadCurve
    """Total EPC bytes of load over time, shared by the running replicas."""
    scalers: tuple[ScalerSpec, ...]
    sync_period: float = SYNC_PERIOD
    tolerance: float = TOLERANCE

    @property
    def headroom(self) -> int:
        """Load bytes one replica holds before it reaches its limit."""
        return self.epc_limit - self.epc_base

    def scaler(self, name: str) -> ScalerSpec:
        for scaler in self.scalers:
            if scaler.name == name:
                return scaler
        raise KeyError(name)


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _number(value: object, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(where, f"must be a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise _fail(where, f"must be {'positive' if positive else 'non-negative'}, got {value!r}")
    return float(value)


def _count(value: object, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(where, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _duration(value: object, where: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _fail(where, str(exc)) from None


def _load(data: object, where: str) -> LoadCurve:
    if not isinstance(data, list) or not data:
        raise _fail(where, "must be a non-empty list of [time, EPC MiB] points")
    points: list[tuple[float, float]] = []
    for i, point in enumerate(data):
        at = f"{where}[{i}]"
        if not isinstance(point, list) or len(point) != 2:
            raise _fail(at, f"must be [time, EPC MiB], e.g. [30m, 4096], got {point!r}")
        t = _duration(point[0], f"{at}[0]")
        if points and t < points[-1][0]:
            raise _fail(f"{at}[0]", "times must not go backwards")
        points.append((t, _number(point[1], f"{at}[1]") * MIB))
    return LoadCurve(tuple(points))


_SCALER_KEYS = (
    "name",
    "replicas",
    "metric",
    "averageValue",
    "averageUtilization",
    "minReplicas",
    "maxReplicas",
    "scaleDownStabilization",
)


def _scaler(data: object, where: str) -> ScalerSpec:
    if not isinstance(data, dict):
        raise _fail(where, "must be a map: {name, replicas} or {name, metric, target, ...}")
    for key in data:
        if key not in _SCALER_KEYS:
            raise _fail(f"{where}.{key}", f"unknown key (known: {', '.join(_SCALER_KEYS)})")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(f"{where}.name", "required, a string")
    if "metric" not in data:
        if set(data) - {"name", "replicas"}:
            raise _fail(where, "a fixed scaler has only name and replicas; an HPA names a metric")
        if "replicas" not in data:
            raise _fail(f"{where}.replicas", "required for a fixed replica count")
        return ScalerSpec(name, FIXED, replicas=_count(data["replicas"], f"{where}.replicas", 1))
    metric = data["metric"]
    if metric not in SCALER_METRICS:
        raise _fail(
            f"{where}.metric", f"must be one of {', '.join(SCALER_METRICS)}, got {metric!r}"
        )
    if "replicas" in data:
        raise _fail(f"{where}.replicas", "an HPA starts at minReplicas")
    if metric == CPU:
        if "averageValue" in data or "averageUtilization" not in data:
            raise _fail(f"{where}.averageUtilization", "required for cpu (percent of the request)")
        target = _count(data["averageUtilization"], f"{where}.averageUtilization", 1)
    else:
        if "averageUtilization" in data or "averageValue" not in data:
            raise _fail(f"{where}.averageValue", f"required for {metric} (e.g. 800m)")
        raw = data["averageValue"]
        try:
            if isinstance(raw, bool) or not isinstance(raw, str | int | float):
                raise QuantityError(f"invalid quantity {raw!r}")
            target = math.ceil(parse_quantity(raw) * 1000)
        except QuantityError as exc:
            raise _fail(f"{where}.averageValue", str(exc)) from None
        if target <= 0:
            raise _fail(f"{where}.averageValue", f"must be positive, got {raw!r}")
    low = _count(data.get("minReplicas", 1), f"{where}.minReplicas", 1)
    high = _count(data.get("maxReplicas", 10), f"{where}.maxReplicas", 1)
    if high < low:
        raise _fail(f"{where}.maxReplicas", "must be >= minReplicas")
    window = _duration(data.get("scaleDownStabilization", "5m"), f"{where}.scaleDownStabilization")
    return ScalerSpec(
        name,
        metric,
        replicas=low,
        target=target,
        behavior=Behavior(min_replicas=low, max_replicas=high, scale_down_window=window),
    )


_KEYS = (
    "name",
    "epcLimitMiB",
    "epcBaseMiB",
    "cpuM",
    "cpuBaseM",
    "cpuPerGiBM",
    "memoryMiB",
    "load",
    "scalers",
    "syncPeriod",
    "tolerance",
)


def parse_deployment(data: object, where: str) -> DeploymentSpec:
    """The `deployment` map of a scenario's workload; errors name the key path."""
    if not isinstance(data, dict):
        raise _fail(where, "must be a map")
    for key in data:
        if key not in _KEYS:
            raise _fail(f"{where}.{key}", f"unknown key (known: {', '.join(_KEYS)})")
    for key in ("epcLimitMiB", "load", "scalers"):
        if key not in data:
            raise _fail(f"{where}.{key}", "required")
    name = data.get("name", "enclave")
    if not isinstance(name, str) or not name:
        raise _fail(f"{where}.name", "must be a non-empty string")
    limit = math.ceil(_number(data["epcLimitMiB"], f"{where}.epcLimitMiB", positive=True) * MIB)
    base = math.ceil(_number(data.get("epcBaseMiB", 0), f"{where}.epcBaseMiB") * MIB)
    if base >= limit:
        raise _fail(f"{where}.epcBaseMiB", "must be below epcLimitMiB")
    raw_scalers = data["scalers"]
    if not isinstance(raw_scalers, list) or not raw_scalers:
        raise _fail(f"{where}.scalers", "must be a non-empty list")
    scalers = tuple(_scaler(s, f"{where}.scalers[{i}]") for i, s in enumerate(raw_scalers))
    names = [s.name for s in scalers]
    for i, scaler_name in enumerate(names):
        if names.index(scaler_name) != i:
            raise _fail(f"{where}.scalers[{i}].name", f"duplicate scaler name {scaler_name!r}")
    sync = _duration(data.get("syncPeriod", SYNC_PERIOD), f"{where}.syncPeriod")
    if sync <= 0:
        raise _fail(f"{where}.syncPeriod", "must be positive")
    return DeploymentSpec(
        name=name,
        epc_limit=limit,
        epc_base=base,
        cpu_request=math.ceil(_number(data.get("cpuM", 500), f"{where}.cpuM", positive=True)),
        cpu_base=math.ceil(_number(data.get("cpuBaseM", 0), f"{where}.cpuBaseM")),
        cpu_per_gib=_number(data.get("cpuPerGiBM", 0), f"{where}.cpuPerGiBM"),
        memory=math.ceil(_number(data.get("memoryMiB", 128), f"{where}.memoryMiB") * MIB),
        load=_load(data["load"], f"{where}.load"),
        scalers=scalers,
        sync_period=sync,
        tolerance=_number(data.get("tolerance", TOLERANCE), f"{where}.tolerance"),
    )


def replicas_per_node(
    spec: DeploymentSpec, node: NodeInfo, epc_resource: str, headroom: int
) -> int:
    """How many replicas one node of this template holds, by every resource they request."""
    epc = node.epc_allocatable.get(epc_resource, 0) - headroom
    return max(
        0,
        min(
            epc // spec.epc_limit,
            node.cpu_milli // spec.cpu_request,
            node.memory // spec.memory if spec.memory else node.pods,
            node.pods,
        ),
    )


@dataclass(frozen=True, slots=True)
class PagingFree:
    """The fewest replicas, and nodes to hold them, that keep every enclave within its limit."""

    peak_replicas: int
    peak_nodes: int
    node_hours: float
    pool: str
    """The pool whose template holds the most replicas (the nodes are counted in it)."""
    per_node: int

    def to_json(self) -> dict[str, object]:
        return {
            "peakReplicas": self.peak_replicas,
            "peakNodes": self.peak_nodes,
            "nodeHours": round(self.node_hours, 4),
            "pool": self.pool,
            "replicasPerNode": self.per_node,
        }


def paging_free_minimum(
    spec: DeploymentSpec, horizon: float, pools: Sequence[tuple[str, int]]
) -> PagingFree:
    """At each moment at least `max(1, ceil(L(t) / headroom))` replicas are needed for no
    enclave to be over its limit, and `ceil(replicas / per_node)` nodes to hold them;
    integrated over [0, horizon]. `pools` gives (name, replicas one node holds)."""
    name, per_node = max(pools, key=lambda p: (p[1], p[0]))
    peak = spec.load.peak(0.0, horizon)
    peak_replicas = max(1, math.ceil(peak / spec.headroom))
    if per_node <= 0:
        return PagingFree(peak_replicas, 0, 0.0, name, per_node)
    # ceil(ceil(x) / k) = ceil(x / k) for a whole k: nodes are steps of headroom * per_node.
    seconds = spec.load.integral_of_steps(0.0, horizon, spec.headroom * per_node)
    return PagingFree(
        peak_replicas, -(-peak_replicas // per_node), seconds / 3600.0, name, per_node
    )
