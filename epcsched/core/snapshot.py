"""ClusterSnapshot: nodes, pods and per-node EPC sums kept incrementally, as arrays.

Every program reads cluster state through this one structure. A snapshot file, a watch-fed
informer and a simulated clock all feed it the same way (`upsert_node`, `upsert_pod`, ...), and
each event costs O(1): per-node sums are adjusted, never recomputed. The sums live in numpy
arrays indexed by a stable node slot, so a filter over thousands of candidate nodes is a few
vector operations and never walks the pods. The derived per-slot arrays (free EPC, used share)
follow the same rule: an event records the one slot it changed, and the arrays are brought up
to date for those slots only, so a bind between two scheduling cycles costs the next one O(1),
not a pass over every node.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from epcsched.model import NodeInfo, PodInfo

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

ACCOUNTING_MODES = ("requests", "usage", "max")

# Generation and version stamps come from one process-wide sequence, so a cache keyed on a stamp
# can never mistake one snapshot (or a later incarnation of it) for another.
_STAMPS = itertools.count(1)

#: Free EPC recorded for a slot that can take no EPC pod at all (no such resource, no node,
#: EPC pressure); far below any real request, so one comparison rejects it.
NO_FIT = -(2**62)

#: Up to this many changed slots, derived arrays are updated slot by slot in plain Python: an
#: event between two requests changes one or two slots, and a numpy call on so few elements
#: costs more in its overhead than the arithmetic itself.
_FEW_SLOTS = 8


@dataclass(frozen=True, slots=True)
class Headroom:
    """EPC kept free on every node (aesmd, quoting enclaves): a share of allocatable plus bytes."""

    fraction: Fraction = Fraction(0)
    bytes: int = 0

    def of(self, allocatable: int) -> int:
        return int(-(-allocatable * self.fraction // 1)) + self.bytes


class EpcColumn:
    """Per-slot figures for one EPC resource name, in bytes."""

    __slots__ = ("allocatable", "has", "headroom", "requested", "reserved")

    def __init__(self, size: int) -> None:
        self.allocatable: IntArray = np.zeros(size, dtype=np.int64)
        self.has: BoolArray = np.zeros(size, dtype=np.bool_)
        self.headroom: IntArray = np.zeros(size, dtype=np.int64)
        self.requested: IntArray = np.zeros(size, dtype=np.int64)
        self.reserved: IntArray = np.zeros(size, dtype=np.int64)

    def grow(self, size: int) -> None:
        for attr in self.__slots__:
            old = getattr(self, attr)
            new = np.zeros(size, dtype=old.dtype)
            new[: old.shape[0]] = old
            setattr(self, attr, new)


@dataclass(slots=True)
class _Derived:
    """Arrays derived from the per-slot figures, and how far they have followed the changes."""

    layout: int
    read: int
    """How many entries of the snapshot's touched-slot log are already applied."""
    version: int


@dataclass(slots=True)
class _FitView(_Derived):
    view: IntArray


@dataclass(slots=True)
class _Fractions(_Derived):
    used: FloatArray
    allocatable: FloatArray


def _used(view: IntArray, allocatable: FloatArray) -> FloatArray:
    out: FloatArray = np.where(view == NO_FIT, 0.0, allocatable - view.astype(np.float64))
    return out


@dataclass(frozen=True, slots=True)
class Reservation:
    """EPC held for a pod that bind placed but the API does not yet show bound."""

    node: str
    epc: dict[str, int]
    expires_at: float


class ClusterSnapshot:
    """The cluster as placement sees it. Not thread-safe; one owner mutates it."""

    def __init__(
        self,
        epc_resources: Mapping[str, int],
        *,
        headroom: Headroom | None = None,
        accounting: str = "requests",
        capacity: int = 64,
    ) -> None:
        if accounting not in ACCOUNTING_MODES:
            raise ValueError(f"accounting must be one of {ACCOUNTING_MODES}, got {accounting!r}")
        self.epc_resources: dict[str, int] = dict(epc_resources)
        self.headroom = headroom or Headroom()
        self._accounting = accounting
        self._size = max(capacity, 1)
        self.slot_names: list[str | None] = [None] * self._size
        self.slots: dict[str, int] = {}
        self.infos: list[NodeInfo | None] = [None] * self._size
        self._free_slots: list[int] = list(range(self._size - 1, -1, -1))
        self.epc: dict[str, EpcColumn] = {n: EpcColumn(self._size) for n in self.epc_resources}
        self.cpu_allocatable: IntArray = np.zeros(self._size, dtype=np.int64)
        self.cpu_requested: IntArray = np.zeros(self._size, dtype=np.int64)
        self.memory_allocatable: IntArray = np.zeros(self._size, dtype=np.int64)
        self.memory_requested: IntArray = np.zeros(self._size, dtype=np.int64)
        self.pod_count: IntArray = np.zeros(self._size, dtype=np.int64)
        self.usage: IntArray = np.full(self._size, -1, dtype=np.int64)
        """Measured EPC in use per node in bytes (all names together); -1 when unknown."""
        self.pressure: dict[str, str] = {}
        """Nodes under EPC pressure, with the reason new EPC pods must avoid them."""
        self.pods: dict[str, PodInfo] = {}
        """Every non-terminal pod, bound or pending, by `namespace/name`."""
        self.node_pods: dict[str, set[str]] = {}
        """Keys of the pods bound to each node name, including names not (yet) known as nodes."""
        self.reservations: dict[str, Reservation] = {}
        self.advertisers: dict[str, int] = dict.fromkeys(self.epc_resources, 0)
        """How many nodes advertise each EPC resource name."""
        self._sorted: tuple[int, list[str], IntArray] | None = None
        self.generation = next(_STAMPS)
        """Changes whenever the set of nodes changes: caches of name-to-slot lookups key on it."""
        self.version = next(_STAMPS)
        """Changes on every change that can alter a decision: derived arrays key on it."""
        self._layout = next(_STAMPS)
        """Changes when per-slot figures move in bulk (nodes added or removed, arrays grown,
        accounting switched, all usage cleared): derived arrays are then rebuilt whole."""
        self._touched: list[int] = []
        """Slots changed one by one since the last bulk change, in order; a derived array
        remembers how far it has read and updates only the slots after that."""
        self._views: dict[str, _FitView] = {}
        self._fractions: dict[str, _Fractions] = {}

    @property
    def accounting(self) -> str:
        """How free EPC is counted: `requests`, measured `usage`, or the stricter `max`."""
        return self._accounting

    @accounting.setter
    def accounting(self, mode: str) -> None:
        if mode not in ACCOUNTING_MODES:
            raise ValueError(f"accounting must be one of {ACCOUNTING_MODES}, got {mode!r}")
        self._accounting = mode
        self._bulk_change()

    # ----- change tracking for derived arrays ----------------------------------------------
    def _bulk_change(self) -> None:
        self.version = next(_STAMPS)
        self._layout = next(_STAMPS)
        self._touched.clear()

    def _touch(self, slot: int) -> None:
        self.version = next(_STAMPS)
        self._touched.append(slot)
        # A log longer than the arrays costs more to replay than a rebuild.
        if len(self._touched) > max(1024, 2 * self._size):
            self._bulk_change()

    # ----- nodes -------------------------------------------------------------------------
    def _grow(self) -> None:
        old = self._size
        size = old * 2
        for column in self.epc.values():
            column.grow(size)
        for attr in (
            "cpu_allocatable",
            "cpu_requested",
            "memory_allocatable",
            "memory_requested",
            "pod_count",
        ):
            arr = getattr(self, attr)
            new = np.zeros(size, dtype=np.int64)
            new[:old] = arr
            setattr(self, attr, new)
        usage = np.full(size, -1, dtype=np.int64)
        usage[:old] = self.usage
        self.usage = usage
        self.slot_names.extend([None] * old)
        self.infos.extend([None] * old)
        self._free_slots.extend(range(size - 1, old - 1, -1))
        self._size = size

    def upsert_node(self, info: NodeInfo) -> None:
        slot = self.slots.get(info.name)
        if slot is None:
            if not self._free_slots:
                self._grow()
            slot = self._free_slots.pop()
            self.slots[info.name] = slot
            self.slot_names[slot] = info.name
            self.generation = next(_STAMPS)
            self._bulk_change()
            self.infos[slot] = info
            self._set_capacity(slot, info, sign=1)
            # Pods seen bound to this name before the node itself was seen count from now on.
            self._apply_node_pods(info.name, 1)
            return
        self._set_capacity(slot, self.infos[slot], sign=-1)
        self.infos[slot] = info
        self._set_capacity(slot, info, sign=1)
        self._touch(slot)

    def _set_capacity(self, slot: int, info: NodeInfo | None, *, sign: int) -> None:
        if info is None:
            return
        for name, column in self.epc.items():
            if name in info.epc_allocatable:
                if sign > 0:
                    amount = info.epc_allocatable[name]
                    column.allocatable[slot] = amount
                    column.headroom[slot] = self.headroom.of(amount)
                    column.has[slot] = True
                    self.advertisers[name] += 1
                else:
                    column.allocatable[slot] = 0
                    column.headroom[slot] = 0
                    column.has[slot] = False
                    self.advertisers[name] -= 1
        self.cpu_allocatable[slot] = info.cpu_milli if sign > 0 else 0
        self.memory_allocatable[slot] = info.memory if sign > 0 else 0

    def remove_node(self, name: str) -> None:
        slot = self.slots.pop(name, None)
        if slot is None:
            return
        self._set_capacity(slot, self.infos[slot], sign=-1)
        for key in [k for k, r in self.reservations.items() if r.node == name]:
            del self.reservations[key]
        # The pods stay in node_pods under the name: if the node comes back they count again.
        for column in self.epc.values():
            column.requested[slot] = 0
            column.reserved[slot] = 0
        self.cpu_requested[slot] = 0
        self.memory_requested[slot] = 0
        self.pod_count[slot] = 0
        self.usage[slot] = -1
        self.pressure.pop(name, None)
        self.infos[slot] = None
        self.slot_names[slot] = None
        self._free_slots.append(slot)
        self.generation = next(_STAMPS)
        self._bulk_change()

    def node(self, name: str) -> NodeInfo | None:
        slot = self.slots.get(name)
        return None if slot is None else self.infos[slot]

    def nodes(self) -> Iterator[NodeInfo]:
        for slot in sorted(self.slots.values()):
            info = self.infos[slot]
            if info is not None:
                yield info

    def node_names(self) -> list[str]:
        return sorted(self.slots)

    def sorted_slots(self) -> tuple[list[str], IntArray]:
        """Every node name in sorted order and its slot, cached until the set of nodes changes
        (placement asks for this on every what-if pod). The caller must not modify either."""
        cached = self._sorted
        if cached is None or cached[0] != self.generation:
            names = sorted(self.slots)
            cached = (self.generation, names, self.slots_of(names))
            self._sorted = cached
        return cached[1], cached[2]

    def slots_of(self, names: Iterable[str]) -> IntArray:
        """Slot of each name, -1 for names that are not known nodes."""
        get = self.slots.get
        return np.fromiter((get(n, -1) for n in names), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.slots)

    # ----- pods --------------------------------------------------------------------------
    def _account(self, pod: PodInfo, node: str, sign: int) -> None:
        slot = self.slots.get(node)
        if slot is None:
            return
        self._touch(slot)
        for name, amount in pod.epc.items():
            column = self.epc.get(name)
            if column is not None:
                column.requested[slot] += sign * amount
        self.cpu_requested[slot] += sign * pod.cpu_milli
        self.memory_requested[slot] += sign * pod.memory
        self.pod_count[slot] += sign

    def _apply_node_pods(self, name: str, sign: int) -> None:
        for key in self.node_pods.get(name, ()):
            self._account(self.pods[key], name, sign)

    def upsert_pod(self, pod: PodInfo) -> None:
        """Add or replace a pod; terminal pods are dropped, since they hold nothing."""
        self.remove_pod(pod.key, keep_reservation=True)
        if pod.terminal:
            self.release(pod.key)
            return
        self.pods[pod.key] = pod
        if pod.node_name is not None:
            self.node_pods.setdefault(pod.node_name, set()).add(pod.key)
            self._account(pod, pod.node_name, 1)
            # The API now shows the binding the reservation stood in for.
            self.release(pod.key)

    def remove_pod(self, key: str, *, keep_reservation: bool = False) -> PodInfo | None:
        old = self.pods.pop(key, None)
        if old is not None and old.node_name is not None:
            self._account(old, old.node_name, -1)
            on_node = self.node_pods.get(old.node_name)
            if on_node is not None:
                on_node.discard(key)
                if not on_node:
                    del self.node_pods[old.node_name]
        if not keep_reservation:
            self.release(key)
        return old

    def pods_on(self, node: str) -> list[PodInfo]:
        return [self.pods[k] for k in sorted(self.node_pods.get(node, ()))]

    def pending_pods(self) -> list[PodInfo]:
        return [p for p in self.pods.values() if p.node_name is None]

    # ----- reservations, telemetry -------------------------------------------------------
    def reserve(self, key: str, node: str, epc: Mapping[str, int], *, expires_at: float) -> None:
        self.release(key)
        slot = self.slots.get(node)
        if slot is None:
            raise KeyError(node)
        for name, amount in epc.items():
            self.epc[name].reserved[slot] += amount
        self._touch(slot)
        self.reservations[key] = Reservation(node, dict(epc), expires_at)

    def release(self, key: str) -> None:
        held = self.reservations.pop(key, None)
        if held is None:
            return
        slot = self.slots.get(held.node)
        if slot is None:
            return
        for name, amount in held.epc.items():
            self.epc[name].reserved[slot] -= amount
        self._touch(slot)

    def expire_reservations(self, now: float) -> list[str]:
        expired = [k for k, r in self.reservations.items() if r.expires_at <= now]
        for key in expired:
            self.release(key)
        return expired

    def set_usage(self, node: str, used: int | None) -> None:
        slot = self.slots.get(node)
        if slot is not None:
            self.usage[slot] = -1 if used is None else used
            self._touch(slot)

    def clear_usage(self) -> None:
        self.usage[:] = -1
        self._bulk_change()

    def set_pressure(self, node: str, reason: str | None) -> None:
        if reason is None:
            self.pressure.pop(node, None)
        else:
            self.pressure[node] = reason
        slot = self.slots.get(node)
        if slot is None:
            # Not a node yet: its pressure counts when it is added, which rebuilds the views.
            self.version = next(_STAMPS)
        else:
            self._touch(slot)

    # ----- derived figures ---------------------------------------------------------------
    def free(self, name: str, slots: IntArray) -> IntArray:
        """Free EPC of resource `name` in bytes at `slots` (may be negative when overcommitted)."""
        column = self.epc[name]
        by_requests = (
            column.allocatable[slots]
            - column.requested[slots]
            - column.reserved[slots]
            - column.headroom[slots]
        )
        if self.accounting == "requests":
            return by_requests
        usage = self.usage[slots]
        measured = column.allocatable[slots] - usage - column.headroom[slots]
        known = usage >= 0
        if self.accounting == "usage":
            return np.where(known, measured, by_requests)
        return np.where(known, np.minimum(by_requests, measured), by_requests)

    def mark(self) -> tuple[int, int]:
        """Where the per-slot change log stands now, for `changed_since`."""
        return self._layout, len(self._touched)

    def changed_since(self, mark: tuple[int, int]) -> IntArray | None:
        """Slots changed one by one since `mark`, or None when figures have moved in bulk since
        (a node added or removed, accounting switched, usage cleared) and a per-slot array
        derived before `mark` must be rebuilt. A slot changed twice appears twice; updating it
        twice gives the same value."""
        layout, read = mark
        if layout != self._layout:
            return None
        return np.array(self._touched[read:], dtype=np.int64)

    def _stale(self, derived: _Derived | None) -> list[int] | None:
        """The slots `derived` must update to be current, or None when it must be rebuilt.

        Marks it current: the caller updates it before anyone else reads it.
        """
        if derived is None or derived.layout != self._layout:
            return None
        changed = self._touched[derived.read :]
        derived.read = len(self._touched)
        derived.version = self.version
        return changed

    def _fit_at(self, name: str, slots: IntArray) -> IntArray:
        view = np.where(self.epc[name].has[slots], self.free(name, slots), NO_FIT)
        if self.pressure:
            names = self.slot_names
            for i, slot in enumerate(slots.tolist()):
                if names[slot] in self.pressure:
                    view[i] = NO_FIT
        return view

    def _fit_one(self, name: str, slot: int) -> int:
        """`_fit_at` for one slot, in Python integers: the same figure, without numpy's cost
        per call (`free` spelled out for one slot)."""
        column = self.epc[name]
        if not column.has[slot] or (self.pressure and self.slot_names[slot] in self.pressure):
            return NO_FIT
        allocatable, headroom = int(column.allocatable[slot]), int(column.headroom[slot])
        by_requests = (
            allocatable - int(column.requested[slot]) - int(column.reserved[slot]) - headroom
        )
        usage = int(self.usage[slot])
        if self.accounting == "requests" or usage < 0:
            return by_requests
        measured = allocatable - usage - headroom
        return measured if self.accounting == "usage" else min(by_requests, measured)

    def fit_view(self, name: str) -> IntArray:
        """Free EPC of `name` for every slot, `NO_FIT` where no EPC pod may go, plus one slot.

        The extra last element is always `NO_FIT`, so indexing with -1 (a name that is not a
        known node) rejects it without a separate check. Kept current slot by slot as events
        change them, so a filter costs one gather and one comparison however many pods the
        cluster runs, and an event between two filters costs the second one its node only.
        The array is updated in place: read it, do not keep it.
        """
        derived = self._views.get(name)
        if derived is not None and derived.version == self.version:
            return derived.view
        changed = self._stale(derived)
        if derived is not None and changed is not None:
            view = derived.view
            if len(changed) <= _FEW_SLOTS:
                for slot in changed:
                    view[slot] = self._fit_one(name, slot)
            else:
                at = np.array(changed, dtype=np.int64)
                view[at] = self._fit_at(name, at)
            return view
        size = self._size
        view = np.full(size + 1, NO_FIT, dtype=np.int64)
        view[:size] = self._fit_at(name, np.arange(size, dtype=np.int64))
        self._views[name] = _FitView(self._layout, len(self._touched), self.version, view)
        return view

    def used_and_allocatable(self, name: str) -> tuple[FloatArray, FloatArray]:
        """EPC counted as used (allocatable minus free) and allocatable, as floats, per slot.

        Both are whole numbers below 2**53, so they convert to floats exactly and a fraction
        computed from them is the correctly rounded quotient: equal shares compare equal.
        Only meaningful where `fit_view` admits EPC pods; kept current like `fit_view`.
        """
        view = self.fit_view(name)
        derived = self._fractions.get(name)
        if derived is not None and derived.version == self.version:
            return derived.used, derived.allocatable
        changed = self._stale(derived)
        if derived is not None and changed is not None:
            used, allocatable = derived.used, derived.allocatable
            if len(changed) <= _FEW_SLOTS:
                # `_used` for one slot: the same float64 operations on the same integers.
                column = self.epc[name].allocatable
                for slot in changed:
                    total = float(column[slot])
                    free = int(view[slot])
                    allocatable[slot] = total
                    used[slot] = 0.0 if free == NO_FIT else total - float(free)
            else:
                at = np.array(changed, dtype=np.int64)
                allocatable[at] = self.epc[name].allocatable[at]
                used[at] = _used(view[at], allocatable[at])
            return used, allocatable
        allocatable = np.zeros(self._size + 1, dtype=np.float64)
        allocatable[: self._size] = self.epc[name].allocatable
        used = _used(view, allocatable)
        read = len(self._touched)
        self._fractions[name] = _Fractions(self._layout, read, self.version, used, allocatable)
        return used, allocatable

    def epc_names_advertised(self) -> list[str]:
        return [name for name, count in self.advertisers.items() if count > 0]

    def fork(self) -> ClusterSnapshot:
        """An independent copy for what-if planning; the original is never touched."""
        return copy.deepcopy(self)
