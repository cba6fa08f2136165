"""The simulator's placement hot path: the core's decisions, with per-node constants cached.

`choose_node` sorts node names, looks up their slots and checks that its table of per-node
constants (pod limit, the pod-and-node rules' verdicts) is current, on every call: most of a
100,000-pod run on 1,000 nodes. In a simulation a node's `NodeInfo` never changes while it
exists (nodes are only added and removed, and either bumps `snapshot.generation`), so those
per-node constants are cached per generation here; the fit, the EPC filter and the scores still
come from the core on every call. The decisions are the core's (a test compares them with
`choose_node`).
"""

from __future__ import annotations

import numpy as np

from epcsched.core.fit import PodRequest, fit_masks
from epcsched.core.placement import rules_fit
from epcsched.core.rules import Constraints
from epcsched.core.score import score
from epcsched.core.snapshot import BoolArray, ClusterSnapshot, IntArray
from epcsched.simulation.baselines import PolicySpec, extended_resource_fit, kube_default_scores


class Placer:
    """Places pods on one snapshot whose nodes change only by add/remove."""

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.snapshot = snapshot
        self._generation = -1
        self._names: list[str] = []
        self._slots: IntArray = np.zeros(0, dtype=np.int64)
        self._pods_max: IntArray = np.zeros(0, dtype=np.int64)
        self._admitted: dict[Constraints, BoolArray | None] = {}
        """The rules' verdict per constraints; None where they admit every node."""
        self._constraints: Constraints | None = None
        self._mask: BoolArray | None = None

    def _refresh(self) -> None:
        snap = self.snapshot
        if snap.generation == self._generation:
            return
        self._names = snap.node_names()
        self._slots = snap.slots_of(self._names)
        infos = [snap.infos[int(s)] for s in self._slots]
        self._pods_max = np.asarray([i.pods if i else 0 for i in infos], dtype=np.int64)
        self._admitted = {}
        self._constraints = self._mask = None
        self._generation = snap.generation

    def resources_fit(self, request: PodRequest) -> BoolArray:
        """`core.placement.resources_fit` over every node in name order."""
        snap, slots = self.snapshot, self._slots
        ok = snap.pod_count[slots] < self._pods_max
        constraints = request.constraints
        if constraints is not self._constraints:
            # Cordons, taints, selectors and affinity: fixed while the node set is. A workload's
            # requests nearly all share one constraints object, so this runs once per node set.
            if constraints not in self._admitted:
                mask = rules_fit(snap, constraints, slots)
                self._admitted[constraints] = None if mask.all() else mask
            self._constraints = constraints
            self._mask = self._admitted[constraints]
        if self._mask is not None:
            ok &= self._mask
        if request.cpu_milli:
            ok &= snap.cpu_requested[slots] + request.cpu_milli <= snap.cpu_allocatable[slots]
        if request.memory:
            ok &= snap.memory_requested[slots] + request.memory <= snap.memory_allocatable[slots]
        return ok

    def choose(self, request: PodRequest, spec: PolicySpec) -> str | None:
        """The node `spec`'s scheduler binds `request` to, or None."""
        self._refresh()
        if not self._names:
            return None
        snap, slots = self.snapshot, self._slots
        if spec.scheduler == "epcsched":
            feasible = self.resources_fit(request) & fit_masks(snap, request, slots).ok
            hits = np.flatnonzero(feasible)
            if hits.size == 0:
                return None
            scores = score(snap, request, slots[hits], spec.strategy)
        else:
            feasible = self.resources_fit(request) & extended_resource_fit(snap, request, slots)
            hits = np.flatnonzero(feasible)
            if hits.size == 0:
                return None
            scores = kube_default_scores(snap, request, slots[hits])
        # The first maximum is the first by name: ties go to the node name.
        return self._names[int(hits[int(np.argmax(scores))])]
