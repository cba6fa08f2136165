"""Choosing one node for one pod, as kube-scheduler with the epcsched extender would.

kube-scheduler first runs its own filters (NodeUnschedulable, TaintToleration, NodeAffinity,
NodeResourcesFit on CPU, memory and pod slots), then the extender's EPC filter, then adds scores
and takes the best node. The simulator and the planner call this so that their placements are the
ones the extender would have served.

The pod-and-node rules (`core.rules`) are evaluated once per group of nodes with identical labels,
taints and state, not once per node: a cluster of a thousand nodes is a handful of pools, so a
pod's verdict over every slot costs a few rule checks and one gather.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable

import numpy as np

from epcsched.core.fit import PodRequest, fit_masks
from epcsched.core.rules import Constraints, refusal
from epcsched.core.score import score
from epcsched.core.snapshot import BoolArray, ClusterSnapshot, IntArray
from epcsched.model import NodeInfo

# Verdicts kept per node table; a planner sees a few dozen distinct pod constraints at most.
_MAX_VERDICTS = 4096


class _NodeTable:
    """Per-slot constants of one snapshot's nodes, valid while its `infos` list is unchanged.

    Each array has one extra last element for slot -1 (a name that is not a known node): no pod
    slots, refused by every rule.
    """

    __slots__ = ("__weakref__", "group", "groups", "infos", "pods_max", "verdicts")

    def __init__(self, infos: list[NodeInfo | None]) -> None:
        self.infos = list(infos)
        keys: dict[Hashable, int] = {}
        self.groups: list[NodeInfo] = []
        group = np.full(len(infos) + 1, -1, dtype=np.int64)
        pods_max = np.zeros(len(infos) + 1, dtype=np.int64)
        for slot, info in enumerate(infos):
            if info is None:
                continue
            pods_max[slot] = info.pods
            key = (
                tuple(sorted(info.labels.items())),
                info.taints,
                info.unschedulable,
                info.ready,
            )
            index = keys.get(key)
            if index is None:
                index = keys[key] = len(self.groups)
                self.groups.append(info)
            group[slot] = index
        # Empty slots (and slot -1) point at a last group that every rule refuses.
        group[group < 0] = len(self.groups)
        self.group = group
        self.pods_max = pods_max
        self.verdicts: dict[Constraints, BoolArray] = {}

    def admitted(self, constraints: Constraints) -> BoolArray:
        """Per slot (plus slot -1): whether the pod-and-node rules admit the node."""
        cached = self.verdicts.get(constraints)
        if cached is not None:
            return cached
        if constraints.reads_node_name:
            # matchFields reads the node's name, so nodes alike in labels can differ.
            verdict = np.fromiter(
                (i is not None and refusal(constraints, i) is None for i in self.infos),
                dtype=np.bool_,
                count=len(self.infos),
            )
            verdict = np.append(verdict, False)
        else:
            by_group = np.fromiter(
                (refusal(constraints, info) is None for info in self.groups),
                dtype=np.bool_,
                count=len(self.groups),
            )
            verdict = np.append(by_group, False)[self.group]
        if len(self.verdicts) >= _MAX_VERDICTS:
            self.verdicts.clear()
        self.verdicts[constraints] = verdict
        return verdict


_tables: weakref.WeakKeyDictionary[ClusterSnapshot, _NodeTable] = weakref.WeakKeyDictionary()


def _table(snapshot: ClusterSnapshot) -> _NodeTable:
    table = _tables.get(snapshot)
    # Node records are frozen and only ever replaced, so an unchanged list (compared item by
    # item, identity first: microseconds for a thousand nodes) means unchanged constants.
    if table is None or table.infos != snapshot.infos:
        table = _tables[snapshot] = _NodeTable(snapshot.infos)
    return table


def rules_fit(snapshot: ClusterSnapshot, constraints: Constraints, slots: IntArray) -> BoolArray:
    """NodeUnschedulable, TaintToleration and NodeAffinity (plus Ready) at each slot."""
    return _table(snapshot).admitted(constraints)[slots]


def all_slots(snapshot: ClusterSnapshot) -> tuple[list[str], IntArray]:
    """Every known node, sorted by name (ties are broken by name), with its slot."""
    return snapshot.sorted_slots()


def resources_fit(snapshot: ClusterSnapshot, request: PodRequest, slots: IntArray) -> BoolArray:
    """kube-scheduler's own filters: the pod-and-node rules, and NodeResourcesFit on CPU, memory
    and pod count. EPC is the extender's filter (`fit_masks`)."""
    table = _table(snapshot)
    ok = table.admitted(request.constraints)[slots]
    ok &= snapshot.pod_count[slots] < table.pods_max[slots]
    # A request of zero fits even a node that advertises none (kube-scheduler skips it).
    if request.cpu_milli:
        ok &= snapshot.cpu_requested[slots] + request.cpu_milli <= snapshot.cpu_allocatable[slots]
    if request.memory:
        ok &= (
            snapshot.memory_requested[slots] + request.memory <= snapshot.memory_allocatable[slots]
        )
    return ok


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
