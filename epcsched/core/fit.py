"""Whether a pod's EPC fits a node, per resource name, as the kubelet admits pods.

A request under name X fits only nodes that advertise X; bytes compare amounts, never names.
Failures split as kube-scheduler expects: `unresolvable` when no eviction can help (the node
lacks the name, or has less of it allocatable than the pod needs), `failed` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from epcsched.core.snapshot import BoolArray, ClusterSnapshot, IntArray
from epcsched.model import PodInfo
from epcsched.quantity import format_bytes


@dataclass(frozen=True, slots=True)
class PodRequest:
    """What one pod asks of a node: EPC bytes per resource name, CPU and memory."""

    epc: dict[str, int] = field(default_factory=dict)
    cpu_milli: int = 0
    memory: int = 0

    @classmethod
    def of(cls, pod: PodInfo) -> PodRequest:
        return cls(epc=dict(pod.epc), cpu_milli=pod.cpu_milli, memory=pod.memory)

    @property
    def wants_epc(self) -> bool:
        return bool(self.epc)


@dataclass(frozen=True, slots=True)
class FitMasks:
    """Per-candidate outcome of a filter: exactly one of the three masks is true (or unknown)."""

    ok: BoolArray
    failed: BoolArray
    """Could fit if pods were evicted, or the node is under EPC pressure."""
    unresolvable: BoolArray
    """Can never fit: name not advertised, or allocatable too small."""
    unknown: BoolArray
    """The candidate is not a node epcsched knows."""


def fit_masks(snapshot: ClusterSnapshot, request: PodRequest, slots: IntArray) -> FitMasks:
    """Vectorised fit of `request` at each slot (-1 marks a name that is not a known node)."""
    unknown = slots < 0
    n = slots.shape[0]
    if not request.wants_epc:
        ok = ~unknown
        empty = np.zeros(n, dtype=np.bool_)
        return FitMasks(ok, empty, empty.copy(), unknown)
    safe = np.where(unknown, 0, slots)
    unresolvable = np.zeros(n, dtype=np.bool_)
    short = np.zeros(n, dtype=np.bool_)
    for name, need in request.epc.items():
        column = snapshot.epc.get(name)
        if column is None:
            unresolvable[:] = True
            continue
        has = column.has[safe]
        usable = column.allocatable[safe] - column.headroom[safe]
        unresolvable |= ~has | (usable < need)
        short |= snapshot.free(name, safe) < need
    if snapshot.pressure:
        names = snapshot.slot_names
        pressured = np.fromiter(
            (names[s] in snapshot.pressure for s in safe.tolist()), dtype=np.bool_, count=n
        )
        short |= pressured
    unresolvable &= ~unknown
    failed = short & ~unresolvable & ~unknown
    ok = ~(unresolvable | failed | unknown)
    return FitMasks(ok, failed, unresolvable, unknown)


def reason(snapshot: ClusterSnapshot, request: PodRequest, node: str) -> str:
    """Why `request` does not fit `node`, in words an operator can act on."""
    slot = snapshot.slots.get(node)
    if slot is None:
        return f"node {node} is not in epcsched's cluster cache"
    info = snapshot.infos[slot]
    parts: list[str] = []
    for name, need in sorted(request.epc.items()):
        column = snapshot.epc.get(name)
        if column is None or not column.has[slot]:
            if snapshot.advertisers.get(name, 0) == 0:
                advertised = ", ".join(snapshot.epc_names_advertised()) or "none"
                parts.append(
                    f"no node in the cluster advertises {name} "
                    f"(EPC resources advertised: {advertised})"
                )
            else:
                has = ", ".join(sorted(info.epc_allocatable)) if info else ""
                parts.append(
                    f"node does not advertise {name}"
                    + (f" (it advertises {has})" if has else " (it has no EPC)")
                )
            continue
        allocatable = int(column.allocatable[slot])
        usable = allocatable - int(column.headroom[slot])
        if usable < need:
            kept = f" after {format_bytes(allocatable - usable)} headroom" if usable != allocatable else ""
            parts.append(
                f"{name}: requested {format_bytes(need)}, but the node has only "
                f"{format_bytes(usable)} allocatable{kept}"
            )
            continue
        free = int(snapshot.free(name, np.array([slot], dtype=np.int64))[0])
        if free < need:
            parts.append(
                f"insufficient {name}: requested {format_bytes(need)}, "
                f"free {format_bytes(max(free, 0))} of {format_bytes(allocatable)}"
                + _measured_note(snapshot, name, slot)
            )
    if node in snapshot.pressure:
        parts.append(snapshot.pressure[node])
    return "; ".join(parts) if parts else "fits"


def _measured_note(snapshot: ClusterSnapshot, name: str, slot: int) -> str:
    usage = int(snapshot.usage[slot])
    if usage < 0 or snapshot.accounting == "requests":
        return ""
    return f" (measured in use {format_bytes(usage)})"
