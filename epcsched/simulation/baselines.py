"""The policies a simulation compares: epcsched's strategies and the baselines they must beat.

- `binpack`, `spread`, `balanced`: kube-scheduler plus the epcsched extender (`choose_node`),
  and the epcsched planner when the scenario autoscales.
- `kube-default`: kube-scheduler alone. NodeResourcesFit filters on CPU, memory and pod slots and
  checks EPC only as an extended resource (allocatable minus requested, by name, no headroom),
  then scores LeastAllocated on CPU and memory. The pool sizes stay fixed.
- `epc-unaware`: kube-default with pods that declare no EPC, so nodes oversubscribe it and the
  scenario's paging model slows their enclaves down. The pool sizes stay fixed.
- `cluster-autoscaler`: kube-default plus an emulation of cluster-autoscaler: scale-up for
  pending pods only, packed on CPU and memory, and scale-down of nodes under 0.5 CPU/memory
  utilization for 10 minutes; EPC plays no part in its choices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from epcsched.config import AutoscalerSettings
from epcsched.core.fit import PodRequest
from epcsched.core.placement import choose_node, resources_fit
from epcsched.core.plan import PlanPolicy
from epcsched.core.snapshot import BoolArray, ClusterSnapshot, IntArray

#: kube-scheduler's MaxNodeScore: plugin scores are integers 0..100.
KUBE_MAX_SCORE = 100


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """How one policy schedules and scales."""

    name: str
    scheduler: str
    """`epcsched` (kube-scheduler with the extender) or `kube` (kube-scheduler alone)."""
    strategy: str = "binpack"
    declares_epc: bool = True
    """False for `epc-unaware`: the pods' specs carry no EPC request."""
    autoscaler: PlanPolicy | None = None


def policy_spec(name: str, autoscaler: AutoscalerSettings | None) -> PolicySpec:
    """The scheduler and autoscaler behind policy `name` in a scenario with `autoscaler`."""
    if name in ("binpack", "spread", "balanced"):
        planner = None
        if autoscaler is not None:
            # The simulated cluster has no other autoscaler, so plain pods are planned for too.
            planner = PlanPolicy.from_settings(autoscaler, strategy=name, epc_pods_only=False)
        return PolicySpec(name, "epcsched", strategy=name, autoscaler=planner)
    if name == "kube-default":
        return PolicySpec(name, "kube")
    if name == "epc-unaware":
        return PolicySpec(name, "kube", declares_epc=False)
    if name == "cluster-autoscaler":
        if autoscaler is None:
            raise ValueError("cluster-autoscaler needs the scenario's autoscaler enabled")
        return PolicySpec(name, "kube", autoscaler=cluster_autoscaler_policy(autoscaler))
    raise ValueError(f"unknown policy {name!r}")


def cluster_autoscaler_policy(settings: AutoscalerSettings) -> PlanPolicy:
    """cluster-autoscaler's defaults: least-waste on CPU/memory, 0.5 utilization, 10 min."""
    return PlanPolicy(
        expander="least-waste",
        target_utilization=1.0,
        tolerance=0.0,
        scale_down_utilization=0.5,
        scale_down_unneeded_time=600.0,
        scale_down_delay_after_add=settings.scale_down_delay_after_add,
        strategy="binpack",
        epc_aware=False,
        pressure=False,
        epc_pods_only=False,
    )


def extended_resource_fit(
    snapshot: ClusterSnapshot, request: PodRequest, slots: IntArray
) -> BoolArray:
    """NodeResourcesFit on extended resources: by name, allocatable minus requested, no headroom."""
    ok = np.ones(slots.shape[0], dtype=np.bool_)
    for name, need in request.epc.items():
        column = snapshot.epc.get(name)
        if column is None:
            ok[:] = False
            continue
        free = column.allocatable[slots] - column.requested[slots] - column.reserved[slots]
        ok &= column.has[slots] & (free >= need)
    return ok


def _least_allocated(requested: IntArray, allocatable: IntArray) -> IntArray:
    """kube-scheduler's leastRequestedScore: (capacity - requested) * 100 / capacity, integer."""
    out = np.zeros(requested.shape[0], dtype=np.int64)
    valid = (allocatable > 0) & (requested <= allocatable)
    out[valid] = (allocatable[valid] - requested[valid]) * KUBE_MAX_SCORE // allocatable[valid]
    return out


def kube_default_scores(
    snapshot: ClusterSnapshot, request: PodRequest, slots: IntArray
) -> IntArray:
    """LeastAllocated over CPU and memory, weight 1 each, as NodeResourcesFit scores."""
    cpu = _least_allocated(
        snapshot.cpu_requested[slots] + request.cpu_milli, snapshot.cpu_allocatable[slots]
    )
    memory = _least_allocated(
        snapshot.memory_requested[slots] + request.memory, snapshot.memory_allocatable[slots]
    )
    return (cpu + memory) // 2


def kube_default_node(snapshot: ClusterSnapshot, request: PodRequest) -> str | None:
    """Where kube-scheduler alone binds the pod; ties go to the first node by name."""
    names = snapshot.node_names()
    if not names:
        return None
    slots = snapshot.slots_of(names)
    feasible = resources_fit(snapshot, request, slots) & extended_resource_fit(
        snapshot, request, slots
    )
    hits = np.flatnonzero(feasible)
    if hits.size == 0:
        return None
    scores = kube_default_scores(snapshot, request, slots[hits])
    return names[int(hits[int(np.argmax(scores))])]


def place(snapshot: ClusterSnapshot, request: PodRequest, spec: PolicySpec) -> str | None:
    """The node policy `spec` binds `request` to, or None (the pod stays pending)."""
    if spec.scheduler == "epcsched":
        return choose_node(snapshot, request, spec.strategy)
    return kube_default_node(snapshot, request)
