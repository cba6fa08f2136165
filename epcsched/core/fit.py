"""Whether a pod's EPC fits a node, per resource name, as the kubelet admits pods.

A request under name X fits only nodes that advertise X; bytes compare amounts, never names.
Failures split as kube-scheduler expects: `unresolvable` when no eviction can help (the node
lacks the name, or has less of it allocatable than the pod needs), `failed` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from epcsched.core.rules import NO_CONSTRAINTS, Constraints
from epcsched.core.snapshot import BoolArray, ClusterSnapshot, IntArray
from epcsched.model import PodInfo
from epcsched.quantity import format_apart, format_bytes


@dataclass(frozen=True, slots=True)
class PodRequest:
    """What one pod asks of a node: EPC bytes per resource name, CPU and memory, and the
    pod-and-node rules (selector, affinity, tolerations) that kube-scheduler's filters read."""

    epc: dict[str, int] = field(default_factory=dict)
    cpu_milli: int = 0
    memory: int = 0
    constraints: Constraints = NO_CONSTRAINTS

    @classmethod
    def of(cls, pod: PodInfo) -> PodRequest:
        return cls(
            epc=dict(pod.epc),
            cpu_milli=pod.cpu_milli,
            memory=pod.memory,
            constraints=Constraints.of(pod),
        )

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


def fits_everywhere(snapshot: ClusterSnapshot, request: PodRequest, slots: IntArray) -> bool:
    """Whether `request` fits at every slot: the common case, answered without any masks."""
    if not request.wants_epc:
        return bool(slots.shape[0] == 0 or slots.min() >= 0)
    for name, need in request.epc.items():
        if name not in snapshot.epc:
            return bool(slots.shape[0] == 0)
        if slots.shape[0] and snapshot.fit_view(name)[slots].min() < need:
            return False
    return True


def fit_masks(snapshot: ClusterSnapshot, request: PodRequest, slots: IntArray) -> FitMasks:
    """Vectorised fit of `request` at each slot (-1 marks a name that is not a known node)."""
    n = slots.shape[0]
    if not request.wants_epc:
        unknown = slots < 0
        empty = np.zeros(n, dtype=np.bool_)
        return FitMasks(~unknown, empty, empty.copy(), unknown)
    ok: BoolArray | None = None
    for name, need in request.epc.items():
        if name not in snapshot.epc:
            ok = np.zeros(n, dtype=np.bool_)
            break
        fits = snapshot.fit_view(name)[slots] >= need
        ok = fits if ok is None else ok & fits
    assert ok is not None  # wants_epc: at least one name
    if ok.all():
        empty = np.zeros(n, dtype=np.bool_)
        return FitMasks(ok, empty, empty.copy(), empty.copy())
    # Only the rejected candidates need sorting into why; usually they are few.
    bad = np.flatnonzero(~ok)
    bad_slots = slots[bad]
    unknown_bad = bad_slots < 0
    safe = np.where(unknown_bad, 0, bad_slots)
    hard = np.zeros(bad.shape[0], dtype=np.bool_)
    for name, need in request.epc.items():
        column = snapshot.epc.get(name)
        if column is None:
            hard[:] = True
            continue
        usable = column.allocatable[safe] - column.headroom[safe]
        hard |= ~column.has[safe] | (usable < need)
    hard &= ~unknown_bad
    unknown = np.zeros(n, dtype=np.bool_)
    unresolvable = np.zeros(n, dtype=np.bool_)
    failed = np.zeros(n, dtype=np.bool_)
    unknown[bad] = unknown_bad
    unresolvable[bad] = hard
    failed[bad] = ~hard & ~unknown_bad
    return FitMasks(ok, failed, unresolvable, unknown)


def reasons(snapshot: ClusterSnapshot, request: PodRequest, slots: IntArray) -> list[str]:
    """Why `request` does not fit each slot, in words an operator can act on.

    Figures are read for all slots at once; only the formatting is per node, so explaining
    thousands of failures stays cheap.
    """
    n = slots.shape[0]
    unknown = slots < 0
    safe = np.where(unknown, 0, slots)
    parts: list[list[str]] = [[] for _ in range(n)]
    for name, need in sorted(request.epc.items()):
        column = snapshot.epc.get(name)
        if column is None or snapshot.advertisers.get(name, 0) == 0:
            advertised = ", ".join(snapshot.epc_names_advertised()) or "none"
            text = (
                f"no node in the cluster advertises {name} (EPC resources advertised: {advertised})"
            )
            for p in parts:
                p.append(text)
            continue
        has = column.has[safe].tolist()
        allocatable = column.allocatable[safe].tolist()
        headroom = column.headroom[safe].tolist()
        free = snapshot.free(name, safe).tolist()
        usage = snapshot.usage[safe].tolist()
        measured = snapshot.accounting != "requests"
        for i in range(n):
            if not has[i]:
                info = snapshot.infos[int(safe[i])]
                others = ", ".join(sorted(info.epc_allocatable)) if info is not None else ""
                parts[i].append(
                    f"node does not advertise {name}"
                    + (f" (it advertises {others})" if others else " (it has no EPC)")
                )
            elif allocatable[i] - headroom[i] < need:
                kept = f" after {format_bytes(headroom[i])} headroom" if headroom[i] else ""
                asked, usable = format_apart(need, allocatable[i] - headroom[i])
                parts[i].append(
                    f"{name}: requested {asked}, but the node has only {usable} allocatable{kept}"
                )
            elif free[i] < need:
                note = (
                    f" (measured in use {format_bytes(usage[i])})"
                    if measured and usage[i] >= 0
                    else ""
                )
                asked, left = format_apart(need, max(free[i], 0))
                parts[i].append(
                    f"insufficient {name}: requested {asked}, "
                    f"free {left} of {format_bytes(allocatable[i])}" + note
                )
    result = []
    names = snapshot.slot_names
    for i in range(n):
        if unknown[i]:
            result.append("node is not in epcsched's cluster cache")
            continue
        node = names[int(safe[i])]
        if request.wants_epc and node in snapshot.pressure:
            parts[i].append(snapshot.pressure[node])
        result.append("; ".join(parts[i]) if parts[i] else "fits")
    return result


def fits_after_evicting(
    snapshot: ClusterSnapshot, request: PodRequest, node: str, victims: list[PodInfo]
) -> bool:
    """Whether `request` fits `node` once `victims` are gone (what preemption would achieve).

    The victims' requests are credited as freed EPC, under every accounting mode (an evicted
    enclave releases its pages). A node under EPC pressure stays out: eviction is no cure for
    paging that other enclaves cause.
    """
    slot = snapshot.slots.get(node)
    if slot is None or (request.wants_epc and node in snapshot.pressure):
        return False
    at = np.array([slot], dtype=np.int64)
    for name, need in request.epc.items():
        column = snapshot.epc.get(name)
        if column is None or not column.has[slot]:
            return False
        freed = sum(v.epc.get(name, 0) for v in victims)
        if int(snapshot.free(name, at)[0]) + freed < need:
            return False
    return True
