"""Choosing one node for one pod, as kube-scheduler with the epcsched extender would.

kube-scheduler first runs its own filters (NodeResourcesFit on CPU, memory and pod slots), then
the extender's EPC filter, then adds scores and takes the best node. The simulator and the
planner call this so that their placements are the ones the extender would have served.
"""

from __future__ import annotations

import numpy as np

from epcsched.core.fit import PodRequest, fit_masks
from epcsched.core.score import score
from epcsched.core.snapshot import BoolArray, ClusterSnapshot, IntArray


def all_slots(snapshot: ClusterSnapshot) -> tuple[list[str], IntArray]:
    """Every known node, sorted by name (ties are broken by name), with its slot."""
    names = snapshot.node_names()
    return names, snapshot.slots_of(names)


def resources_fit(snapshot: ClusterSnapshot, request: PodRequest, slots: IntArray) -> BoolArray:
    """kube-scheduler's NodeResourcesFit on CPU, memory and pod count, plus cordoned nodes."""
    cpu_ok = snapshot.cpu_requested[slots] + request.cpu_milli <= snapshot.cpu_allocatable[slots]
    mem_ok = snapshot.memory_requested[slots] + request.memory <= snapshot.memory_allocatable[slots]
    # A request of zero fits even a node that advertises none (kube-scheduler skips it).
    if request.cpu_milli == 0:
        cpu_ok[:] = True
    if request.memory == 0:
        mem_ok[:] = True
    pods_max = np.fromiter(
        (_pods(snapshot, int(s)) for s in slots.tolist()), dtype=np.int64, count=slots.shape[0]
    )
    schedulable = np.fromiter(
        (_schedulable(snapshot, int(s)) for s in slots.tolist()),
        dtype=np.bool_,
        count=slots.shape[0],
    )
    return cpu_ok & mem_ok & (snapshot.pod_count[slots] < pods_max) & schedulable


def _pods(snapshot: ClusterSnapshot, slot: int) -> int:
    info = snapshot.infos[slot]
    return info.pods if info is not None else 0


def _schedulable(snapshot: ClusterSnapshot, slot: int) -> bool:
    info = snapshot.infos[slot]
    return info is not None and info.ready and not info.unschedulable


def choose_node(
    snapshot: ClusterSnapshot,
    request: PodRequest,
    strategy: str,
    *,
    prefer_non_sgx: bool = True,
) -> str | None:
    """The node kube-scheduler plus the extender would bind to, or None if none fits."""
    names, slots = all_slots(snapshot)
    if not names:
        return None
    feasible = resources_fit(snapshot, request, slots) & fit_masks(snapshot, request, slots).ok
    if not feasible.any():
        return None
    candidates = slots[feasible]
    scores = score(snapshot, request, candidates, strategy, prefer_non_sgx=prefer_non_sgx)
    # argmax returns the first maximum; candidates are in name order, so ties go to the name.
    best = int(np.argmax(scores))
    index = int(np.flatnonzero(feasible)[best])
    return names[index]
