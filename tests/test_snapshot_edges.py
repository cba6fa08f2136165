"""The snapshot's per-slot figures at the edges a mutation run found untested, every expected
value worked out by hand.

Protects: slots handed out lowest first, reused after a removal and kept (with every figure and
integer type) when the arrays double past their capacity; a removed node leaving nothing behind
in its slot, its reservations or its pressure; a node changing which EPC names it advertises;
headroom rounded up to a whole byte; requests, reservations (replaced, released, expired at
exactly `expires_at`) and measured usage (0 counts, -1 is unknown) in each accounting mode;
`fit_view` and `used_and_allocatable` right after a rebuild, after one changed slot and after
many, updated in place; the change log (`mark`/`changed_since`) and its bound; stamps never
shared between snapshots; `fork` sharing nothing with the original.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from epcsched.core.snapshot import NO_FIT, ClusterSnapshot, Headroom, Reservation
from epcsched.model import NodeInfo, PodInfo

EPC = "sgx.intel.com/epc"
LEGACY = "kubernetes.azure.com/sgx_epc_mem_in_MiB"
MI = 2**20
GI = 2**30
RESOURCES = {EPC: 1, LEGACY: MI}


def cluster(*nodes: NodeInfo, capacity: int = 8, **kwargs: Any) -> ClusterSnapshot:
    snap = ClusterSnapshot(RESOURCES, capacity=capacity, **kwargs)
    for info in nodes:
        snap.upsert_node(info)
    return snap


def epc_node(name: str, mib: int, **kwargs: Any) -> NodeInfo:
    return NodeInfo(name, {EPC: mib * MI}, **kwargs)


def bound(name: str, on: str | None, mib: int = 0, **kwargs: Any) -> PodInfo:
    epc = {EPC: mib * MI} if mib else {}
    return PodInfo("default", name, node_name=on, phase="Running", epc=epc, **kwargs)


def free_at(snap: ClusterSnapshot, *names: str) -> list[int]:
    out: list[int] = snap.free(EPC, snap.slots_of(names)).tolist()
    return out


def view_at(snap: ClusterSnapshot, *names: str) -> list[int]:
    out: list[int] = snap.fit_view(EPC)[snap.slots_of(names)].tolist()
    return out


# ----- construction -------------------------------------------------------------------------


def test_an_unknown_accounting_mode_is_refused_naming_the_modes() -> None:
    message = r"accounting must be one of \('requests', 'usage', 'max'\), got 'sum'"
    with pytest.raises(ValueError, match=message):
        ClusterSnapshot(RESOURCES, accounting="sum")
    snap = cluster()
    with pytest.raises(ValueError, match=message):
        snap.accounting = "sum"
    assert snap.accounting == "requests"


def test_the_default_capacity_holds_64_nodes_before_the_arrays_double() -> None:
    snap = ClusterSnapshot(RESOURCES)
    # 64 slots plus the view's always-NO_FIT last element.
    assert snap.fit_view(EPC).shape == (65,)
    for i in range(64):
        snap.upsert_node(epc_node(f"n{i:02}", 1))
    assert len(snap.slot_names) == 64
    assert [snap.slots[f"n{i:02}"] for i in range(64)] == list(range(64))
    snap.upsert_node(epc_node("n64", 1))
    assert snap.slots["n64"] == 64
    assert len(snap.slot_names) == 128
    assert snap.fit_view(EPC).shape == (129,)


def test_a_capacity_of_zero_still_makes_one_slot() -> None:
    snap = ClusterSnapshot(RESOURCES, capacity=0)
    assert len(snap.slot_names) == 1
    assert snap.fit_view(EPC).shape == (2,)
    snap.upsert_node(epc_node("a", 4))
    assert snap.slots == {"a": 0}
    assert len(snap.slot_names) == 1
    snap.upsert_node(epc_node("b", 4))
    # 1 slot doubles to 2; b takes the new one.
    assert snap.slots == {"a": 0, "b": 1}
    assert snap.slot_names == ["a", "b"]


def test_slots_are_handed_out_lowest_first_and_a_freed_slot_is_reused_first() -> None:
    snap = cluster(*(epc_node(n, 1) for n in "abc"), capacity=3)
    assert snap.slots == {"a": 0, "b": 1, "c": 2}
    # Full: 3 slots double to 6, and the new ones go lowest first: d 3, e 4.
    snap.upsert_node(epc_node("d", 1))
    snap.upsert_node(epc_node("e", 1))
    assert (snap.slots["d"], snap.slots["e"]) == (3, 4)
    snap.remove_node("b")
    snap.upsert_node(epc_node("f", 1))  # b's slot, freed last, before the never-used 5
    snap.upsert_node(epc_node("g", 1))
    assert (snap.slots["f"], snap.slots["g"]) == (1, 5)
    snap.upsert_node(epc_node("h", 1))  # full again: 6 doubles to 12, h takes 6
    assert snap.slots["h"] == 6
    assert snap.slot_names == ["a", "f", "c", "d", "e", "g", "h", *[None] * 5]
    assert len(snap.infos) == 12


def test_growing_keeps_every_figure_and_the_integer_types() -> None:
    snap = cluster(epc_node("a", 8, cpu_milli=1000, memory=2 * GI), capacity=1)
    snap.upsert_pod(bound("p", "a", 3, cpu_milli=100, memory=GI))
    snap.reserve("default/r", "a", {EPC: MI}, expires_at=5.0)
    snap.set_usage("a", 5 * MI)
    snap.upsert_node(epc_node("b", 16))  # 1 slot doubles to 2
    snap.upsert_node(NodeInfo("c"))  # 2 double to 4
    # 1 slot doubled to 2 for b, then to 4 for c: c takes 2, and 3 stays empty.
    assert snap.slots == {"a": 0, "b": 1, "c": 2}
    column = snap.epc[EPC]
    assert column.allocatable.tolist() == [8 * MI, 16 * MI, 0, 0]
    assert column.has.tolist() == [True, True, False, False]
    assert column.requested.tolist() == [3 * MI, 0, 0, 0]
    assert column.reserved.tolist() == [MI, 0, 0, 0]
    assert snap.cpu_allocatable.tolist() == [1000, 0, 0, 0]
    assert snap.cpu_requested.tolist() == [100, 0, 0, 0]
    assert snap.memory_allocatable.tolist() == [2 * GI, 0, 0, 0]
    assert snap.memory_requested.tolist() == [GI, 0, 0, 0]
    assert snap.pod_count.tolist() == [1, 0, 0, 0]
    assert snap.usage.tolist() == [5 * MI, -1, -1, -1]  # new slots' usage is unknown
    for arr in (
        snap.cpu_allocatable,
        snap.cpu_requested,
        snap.memory_allocatable,
        snap.memory_requested,
        snap.pod_count,
        snap.usage,
        column.allocatable,
        column.headroom,
        column.requested,
        column.reserved,
    ):
        assert arr.dtype == np.int64
    assert column.has.dtype == np.bool_
    assert snap.epc[LEGACY].has.dtype == np.bool_
    # a: 8 - 3 requested - 1 reserved = 4 MiB; b 16 MiB; c has no EPC; slot 3 and the extra
    # element admit nothing.
    assert snap.fit_view(EPC).tolist() == [4 * MI, 16 * MI, NO_FIT, NO_FIT, NO_FIT]


def test_a_fresh_snapshots_arrays_are_integers_and_hold_figures_beyond_float_precision() -> None:
    big = 2**53 + 1  # the first integer a float64 cannot hold
    snap = cluster(NodeInfo("a", {EPC: big}, cpu_milli=big, memory=big + 2))
    snap.upsert_pod(bound("p", "a", cpu_milli=big, memory=big + 2))
    for arr in (
        snap.cpu_allocatable,
        snap.cpu_requested,
        snap.memory_allocatable,
        snap.memory_requested,
        snap.pod_count,
        snap.usage,
    ):
        assert arr.dtype == np.int64
    assert snap.cpu_allocatable.tolist()[0] == big
    assert snap.memory_allocatable.tolist()[0] == big + 2
    assert snap.cpu_requested.tolist()[0] == big
    assert snap.memory_requested.tolist()[0] == big + 2
    assert snap.fit_view(EPC).tolist()[0] == big


# ----- stamps ----------------------------------------------------------------------------------


def test_two_snapshots_never_share_a_stamp_or_a_mark() -> None:
    one, two = ClusterSnapshot(RESOURCES), ClusterSnapshot(RESOURCES)
    assert isinstance(one.generation, int) and isinstance(one.version, int)
    assert one.generation != two.generation
    assert one.version != two.version
    # A mark from another snapshot is never mistaken for one of this one's.
    assert one.mark() != two.mark()
    assert two.changed_since(one.mark()) is None


def test_generation_changes_when_the_set_of_nodes_changes_and_only_then() -> None:
    snap = cluster(epc_node("a", 8))
    first = snap.generation
    snap.upsert_node(epc_node("a", 16))  # an update: same nodes
    snap.upsert_pod(bound("p", "a", 1))
    snap.set_usage("a", MI)
    assert snap.generation == first
    snap.upsert_node(epc_node("b", 8))
    added = snap.generation
    assert isinstance(added, int) and added != first
    snap.remove_node("b")
    assert isinstance(snap.generation, int) and snap.generation not in (first, added)


def test_pressure_on_a_name_not_yet_a_node_changes_the_version_each_time() -> None:
    snap = cluster(epc_node("a", 8))
    before = snap.version
    snap.set_pressure("ghost", "paging")
    on = snap.version
    snap.set_pressure("ghost", None)
    off = snap.version
    assert len({before, on, off}) == 3
    assert snap.pressure == {}


# ----- headroom --------------------------------------------------------------------------------


def test_headroom_rounds_the_fraction_up_to_a_whole_byte_then_adds_bytes() -> None:
    third = Headroom(Fraction(1, 3))
    assert third.of(9) == 3  # exact
    assert third.of(10) == 4  # 3.33.. rounds up
    assert third.of(11) == 4  # 3.66.. rounds up
    assert Headroom(Fraction(1, 3), 5).of(10) == 9
    assert Headroom(bytes=7).of(10) == 7
    assert Headroom().of(10) == 0


def test_headroom_is_kept_per_slot_and_taken_from_free_epc() -> None:
    # 64 MiB: a quarter is 16 MiB, plus 1 MiB = 17 MiB; 10 bytes: ceil(10 / 4) + 1 MiB.
    snap = cluster(
        epc_node("a", 64), NodeInfo("b", {EPC: 10}), headroom=Headroom(Fraction(1, 4), MI)
    )
    assert snap.epc[EPC].headroom[:2].tolist() == [17 * MI, 3 + MI]
    assert free_at(snap, "a", "b") == [47 * MI, 10 - 3 - MI]
    assert view_at(snap, "a", "b") == [47 * MI, 10 - 3 - MI]


# ----- accounting modes ------------------------------------------------------------------------


def headroom_cluster(accounting: str) -> ClusterSnapshot:
    """a: 64 MiB, 17 MiB headroom, a pod of 10 MiB: 37 MiB free by requests."""
    snap = cluster(
        epc_node("a", 64),
        headroom=Headroom(Fraction(1, 4), MI),
        accounting=accounting,
    )
    snap.upsert_pod(bound("p", "a", 10))
    return snap


@pytest.mark.parametrize(
    ("accounting", "usage_mib", "expected_mib"),
    [
        # usage unknown: requests, whatever the mode
        ("requests", None, 37),
        ("usage", None, 37),
        ("max", None, 37),
        # 20 MiB measured: 64 - 20 - 17 = 27 MiB; max takes the smaller of 37 and 27
        ("requests", 20, 37),
        ("usage", 20, 27),
        ("max", 20, 27),
        # 5 MiB measured: 64 - 5 - 17 = 42 MiB; max keeps the requests' 37
        ("usage", 5, 42),
        ("max", 5, 37),
        # 0 measured is a reading, not unknown: 64 - 0 - 17 = 47 MiB
        ("usage", 0, 47),
        ("max", 0, 37),
    ],
)
def test_free_epc_in_each_accounting_mode_on_every_path(
    accounting: str, usage_mib: int | None, expected_mib: int
) -> None:
    snap = headroom_cluster(accounting)
    before = snap.fit_view(EPC).copy()
    snap.set_usage("a", None if usage_mib is None else usage_mib * MI)
    # `free` itself, the view updated for the one changed slot, and a view built whole.
    assert free_at(snap, "a") == [expected_mib * MI]
    assert view_at(snap, "a") == [expected_mib * MI]
    assert before[0] == 37 * MI
    rebuilt = headroom_cluster(accounting)
    rebuilt.set_usage("a", None if usage_mib is None else usage_mib * MI)
    assert view_at(rebuilt, "a") == [expected_mib * MI]


def test_switching_accounting_moves_every_slot_at_once() -> None:
    snap = headroom_cluster("requests")
    snap.set_usage("a", 20 * MI)
    assert view_at(snap, "a") == [37 * MI]
    snap.accounting = "usage"
    assert view_at(snap, "a") == [27 * MI]
    snap.accounting = "requests"
    assert view_at(snap, "a") == [37 * MI]


def test_unknown_usage_is_minus_one_after_each_way_of_forgetting_it() -> None:
    snap = cluster(epc_node("a", 64), epc_node("b", 64), accounting="usage")
    snap.upsert_pod(bound("p", "a", 10))
    assert snap.usage[:3].tolist() == [-1, -1, -1]  # never measured
    assert free_at(snap, "a") == [54 * MI]
    snap.set_usage("a", 20 * MI)
    snap.set_usage("b", 30 * MI)
    assert view_at(snap, "a", "b") == [44 * MI, 34 * MI]
    snap.set_usage("a", None)
    assert snap.usage[:2].tolist() == [-1, 30 * MI]
    assert view_at(snap, "a", "b") == [54 * MI, 34 * MI]
    snap.clear_usage()
    assert snap.usage.tolist() == [-1] * 8
    assert view_at(snap, "a", "b") == [54 * MI, 64 * MI]
    snap.set_usage("ghost", MI)  # not a node: nothing to record
    assert snap.usage.tolist() == [-1] * 8


# ----- nodes -----------------------------------------------------------------------------------


def test_two_nodes_advertising_a_name_count_two() -> None:
    snap = cluster(epc_node("a", 8), NodeInfo("b", {EPC: 8 * MI, LEGACY: 8 * MI}), NodeInfo("c"))
    assert snap.advertisers == {EPC: 2, LEGACY: 1}
    assert snap.epc_names_advertised() == [EPC, LEGACY]
    snap.remove_node("b")
    assert snap.advertisers == {EPC: 1, LEGACY: 0}
    assert snap.epc_names_advertised() == [EPC]
    snap.remove_node("a")
    assert snap.advertisers == {EPC: 0, LEGACY: 0}
    assert snap.epc_names_advertised() == []


def test_a_node_that_changes_which_epc_name_it_advertises() -> None:
    snap = cluster(
        NodeInfo("a", {EPC: 64 * MI}, cpu_milli=2000, memory=4 * GI),
        epc_node("b", 32),
        headroom=Headroom(bytes=MI),
    )
    # Read first, so the change below goes through the one-slot update.
    assert snap.fit_view(EPC)[:2].tolist() == [63 * MI, 31 * MI]
    assert snap.fit_view(LEGACY)[:2].tolist() == [NO_FIT, NO_FIT]
    used, allocatable = snap.used_and_allocatable(EPC)
    assert allocatable[:2].tolist() == [64.0 * MI, 32.0 * MI]
    snap.upsert_node(NodeInfo("a", {LEGACY: 8 * MI}, cpu_milli=1000, memory=GI))
    epc, legacy = snap.epc[EPC], snap.epc[LEGACY]
    assert (epc.has[0], epc.allocatable[0], epc.headroom[0]) == (False, 0, 0)
    assert (legacy.has[0], legacy.allocatable[0], legacy.headroom[0]) == (True, 8 * MI, MI)
    assert snap.advertisers == {EPC: 1, LEGACY: 1}
    assert (snap.cpu_allocatable[0], snap.memory_allocatable[0]) == (1000, GI)
    # Nothing allocatable, requested, reserved or kept back under the old name.
    assert free_at(snap, "a") == [0]
    assert snap.fit_view(EPC)[:2].tolist() == [NO_FIT, 31 * MI]
    assert snap.fit_view(LEGACY)[:2].tolist() == [7 * MI, NO_FIT]
    used, allocatable = snap.used_and_allocatable(EPC)
    assert used[:2].tolist() == [0.0, 1.0 * MI]
    assert allocatable[:2].tolist() == [0.0, 32.0 * MI]
    # Back to the first name, with a new size: the legacy figures go.
    snap.upsert_node(epc_node("a", 16))
    assert snap.advertisers == {EPC: 2, LEGACY: 0}
    assert (legacy.has[0], legacy.allocatable[0], legacy.headroom[0]) == (False, 0, 0)
    assert snap.fit_view(EPC)[:2].tolist() == [15 * MI, 31 * MI]
    assert snap.fit_view(LEGACY)[:2].tolist() == [NO_FIT, NO_FIT]
    assert (snap.cpu_allocatable[0], snap.memory_allocatable[0]) == (0, 0)


def test_a_node_updated_with_the_same_name_counts_once() -> None:
    snap = cluster(epc_node("a", 64, cpu_milli=4000, memory=8 * GI))
    snap.fit_view(EPC)
    snap.upsert_node(epc_node("a", 32, cpu_milli=2000, memory=4 * GI))
    assert snap.advertisers == {EPC: 1, LEGACY: 0}
    assert snap.epc[EPC].allocatable[0] == 32 * MI
    assert snap.cpu_allocatable[0] == 2000
    assert snap.memory_allocatable[0] == 4 * GI
    assert view_at(snap, "a") == [32 * MI]
    assert snap.node("a") == epc_node("a", 32, cpu_milli=2000, memory=4 * GI)


def busy_pair() -> ClusterSnapshot:
    """a (slot 0) with a pod, a reservation, measured use and pressure; b (slot 1) with a
    reservation of its own."""
    snap = cluster(
        epc_node("a", 64, cpu_milli=4000, memory=8 * GI),
        epc_node("b", 32, cpu_milli=2000, memory=4 * GI),
        capacity=4,
        headroom=Headroom(bytes=MI),
        accounting="max",
    )
    snap.upsert_pod(bound("p", "a", 10, cpu_milli=500, memory=GI))
    snap.reserve("default/ra", "a", {EPC: 2 * MI}, expires_at=9.0)
    snap.reserve("default/rb", "b", {EPC: 3 * MI}, expires_at=9.0)
    snap.set_usage("a", 30 * MI)
    snap.set_pressure("a", "EPC paging")
    return snap


def test_a_removed_node_leaves_nothing_in_its_slot() -> None:
    snap = busy_pair()
    snap.fit_view(EPC)
    snap.remove_node("a")
    column = snap.epc[EPC]
    assert column.allocatable[:2].tolist() == [0, 32 * MI]
    assert column.has[:2].tolist() == [False, True]
    assert column.headroom[:2].tolist() == [0, MI]
    assert column.requested[:2].tolist() == [0, 0]
    assert column.reserved[:2].tolist() == [0, 3 * MI]
    assert snap.cpu_allocatable[:2].tolist() == [0, 2000]
    assert snap.memory_allocatable[:2].tolist() == [0, 4 * GI]
    assert snap.cpu_requested[:2].tolist() == [0, 0]
    assert snap.memory_requested[:2].tolist() == [0, 0]
    assert snap.pod_count[:2].tolist() == [0, 0]
    assert snap.usage[:2].tolist() == [-1, -1]
    assert snap.slot_names[:2] == [None, "b"]
    assert snap.infos[0] is None
    assert snap.node("a") is None
    assert snap.pressure == {}
    # Only a's reservation goes; b's still holds its 3 MiB: 32 - 3 - 1 headroom = 28 MiB.
    assert snap.reservations == {"default/rb": Reservation("b", {EPC: 3 * MI}, 9.0)}
    assert snap.fit_view(EPC)[:2].tolist() == [NO_FIT, 28 * MI]
    snap.remove_node("a")  # again: nothing happens
    snap.remove_node("ghost")
    assert snap.slots == {"b": 1}


def test_a_new_node_in_a_freed_slot_starts_empty_and_the_old_one_returns_with_its_pods() -> None:
    snap = busy_pair()
    snap.remove_node("a")
    snap.upsert_node(epc_node("c", 16))
    assert snap.slots["c"] == 0
    assert snap.pod_count[0] == 0
    assert snap.cpu_requested[0] == 0 and snap.memory_requested[0] == 0
    assert snap.epc[EPC].reserved[0] == 0
    assert snap.usage[0] == -1
    # 16 - 1 MiB headroom; nothing requested, reserved, measured.
    assert view_at(snap, "c") == [15 * MI]
    snap.upsert_node(epc_node("a", 64, cpu_milli=4000, memory=8 * GI))
    # Slots 3, 2 were never used; a takes 2. Its pod counts again; the pressure, the
    # reservation and the usage reading went with the node: 64 - 10 - 1 = 53 MiB.
    assert snap.slots["a"] == 2
    assert snap.pod_count[2] == 1
    assert (snap.cpu_requested[2], snap.memory_requested[2]) == (500, GI)
    assert snap.epc[EPC].requested[2] == 10 * MI
    assert snap.epc[EPC].reserved[2] == 0
    assert view_at(snap, "a") == [53 * MI]


def test_nodes_are_listed_in_slot_order_and_names_in_sorted_order() -> None:
    snap = cluster(epc_node("b", 1), epc_node("a", 1))
    assert [n.name for n in snap.nodes()] == ["b", "a"]
    assert snap.node_names() == ["a", "b"]
    snap.remove_node("b")
    snap.upsert_node(epc_node("c", 1))
    assert [n.name for n in snap.nodes()] == ["c", "a"]
    assert snap.node("c") == epc_node("c", 1)
    assert snap.node("b") is None
    assert len(snap) == 2


def test_sorted_slots_follow_every_added_and_removed_node() -> None:
    snap = cluster(epc_node("b", 1), epc_node("a", 1))
    names, slots = snap.sorted_slots()
    assert (names, slots.tolist()) == (["a", "b"], [1, 0])
    snap.upsert_node(epc_node("c", 1))
    names, slots = snap.sorted_slots()
    assert (names, slots.tolist()) == (["a", "b", "c"], [1, 0, 2])
    snap.remove_node("a")
    names, slots = snap.sorted_slots()
    assert (names, slots.tolist()) == (["b", "c"], [0, 2])
    snap.remove_node("b")
    names, slots = snap.sorted_slots()
    assert (names, slots.tolist()) == (["c"], [2])


def test_sorted_slots_are_cached_until_the_set_of_nodes_changes() -> None:
    snap = cluster(epc_node("b", 1), epc_node("a", 1))
    names, slots = snap.sorted_slots()
    snap.upsert_pod(bound("p", "a", 1))
    again, again_slots = snap.sorted_slots()
    assert again is names and again_slots is slots
    snap.upsert_node(epc_node("c", 1))
    assert snap.sorted_slots()[0] is not names


def test_a_name_that_is_no_node_maps_to_the_views_last_element() -> None:
    snap = cluster(epc_node("a", 8), epc_node("b", 4))
    slots = snap.slots_of(["b", "ghost", "a"])
    assert slots.tolist() == [1, -1, 0]
    assert snap.fit_view(EPC)[slots].tolist() == [4 * MI, NO_FIT, 8 * MI]
    assert snap.slots_of([]).tolist() == []


# ----- pods ------------------------------------------------------------------------------------


def test_pods_on_a_node_add_up_and_come_off_again() -> None:
    snap = cluster(epc_node("a", 64))
    snap.upsert_pod(bound("p", "a", 3, cpu_milli=100, memory=GI))
    snap.upsert_pod(bound("q", "a", 4, cpu_milli=250, memory=2 * GI))
    assert snap.epc[EPC].requested[0] == 7 * MI
    assert (snap.cpu_requested[0], snap.memory_requested[0], snap.pod_count[0]) == (350, 3 * GI, 2)
    snap.remove_pod("default/p")
    assert snap.epc[EPC].requested[0] == 4 * MI
    assert (snap.cpu_requested[0], snap.memory_requested[0], snap.pod_count[0]) == (250, 2 * GI, 1)
    # A pod replaced by a larger version of itself counts once, at its new size.
    snap.upsert_pod(bound("q", "a", 6, cpu_milli=300, memory=GI))
    assert snap.epc[EPC].requested[0] == 6 * MI
    assert (snap.cpu_requested[0], snap.memory_requested[0], snap.pod_count[0]) == (300, GI, 1)


def test_a_resource_name_the_snapshot_does_not_track_is_ignored() -> None:
    snap = cluster(epc_node("a", 64))
    pod = PodInfo("default", "p", node_name="a", phase="Running", epc={"other/epc": 5, EPC: MI})
    snap.upsert_pod(pod)
    assert snap.epc[EPC].requested[0] == MI
    assert set(snap.epc) == {EPC, LEGACY}


def test_removing_one_of_two_pods_keeps_the_other_listed_on_its_node() -> None:
    snap = cluster(epc_node("a", 64))
    snap.upsert_pod(bound("p", "a", 1))
    snap.upsert_pod(bound("q", "a", 2))
    assert snap.remove_pod("default/p") == bound("p", "a", 1)
    assert snap.pods_on("a") == [bound("q", "a", 2)]
    assert snap.node_pods == {"a": {"default/q"}}
    snap.remove_pod("default/q")
    assert snap.pods_on("a") == []
    assert snap.node_pods == {}
    assert snap.remove_pod("default/q") is None


def test_pods_bound_to_a_name_not_yet_a_node_count_when_it_arrives() -> None:
    snap = cluster(epc_node("a", 64))
    snap.upsert_pod(bound("p", "later", 5, cpu_milli=100))
    assert snap.pods_on("later") == [bound("p", "later", 5, cpu_milli=100)]
    snap.upsert_node(epc_node("later", 16))
    slot = snap.slots["later"]
    assert (snap.pod_count[slot], snap.cpu_requested[slot]) == (1, 100)
    assert view_at(snap, "later") == [11 * MI]


def test_pending_pods_are_the_ones_not_bound() -> None:
    snap = cluster(epc_node("a", 64))
    waiting = PodInfo("default", "w", epc={EPC: MI})
    snap.upsert_pod(waiting)
    snap.upsert_pod(bound("p", "a", 1))
    snap.upsert_pod(PodInfo("default", "x", phase="Pending"))
    assert snap.pending_pods() == [waiting, PodInfo("default", "x", phase="Pending")]
    # A terminal pod is dropped altogether.
    snap.upsert_pod(PodInfo("default", "w", phase="Succeeded"))
    assert snap.pending_pods() == [PodInfo("default", "x", phase="Pending")]
    assert "default/w" not in snap.pods


# ----- reservations ----------------------------------------------------------------------------


def test_reservations_add_up_on_a_node_and_release_one_by_one() -> None:
    snap = cluster(epc_node("a", 64), epc_node("b", 64))
    snap.fit_view(EPC)
    snap.reserve("default/x", "a", {EPC: 2 * MI}, expires_at=10.0)
    snap.reserve("default/y", "a", {EPC: 3 * MI}, expires_at=10.0)
    assert snap.epc[EPC].reserved[:2].tolist() == [5 * MI, 0]
    assert view_at(snap, "a", "b") == [59 * MI, 64 * MI]
    snap.release("default/x")
    assert snap.epc[EPC].reserved[:2].tolist() == [3 * MI, 0]
    assert view_at(snap, "a", "b") == [61 * MI, 64 * MI]
    snap.release("default/x")  # already released: nothing
    snap.release("default/nobody")
    assert snap.epc[EPC].reserved[:2].tolist() == [3 * MI, 0]
    assert snap.reservations == {"default/y": Reservation("a", {EPC: 3 * MI}, 10.0)}
    snap.release("default/y")
    assert snap.epc[EPC].reserved[:2].tolist() == [0, 0]
    assert view_at(snap, "a", "b") == [64 * MI, 64 * MI]
    assert snap.reservations == {}


def test_reserving_again_under_the_same_key_replaces_the_reservation() -> None:
    snap = cluster(epc_node("a", 64), epc_node("b", 64))
    snap.reserve("default/x", "a", {EPC: 2 * MI}, expires_at=10.0)
    snap.reserve("default/x", "a", {EPC: 3 * MI}, expires_at=11.0)
    assert snap.epc[EPC].reserved[:2].tolist() == [3 * MI, 0]
    snap.reserve("default/x", "b", {EPC: 4 * MI, LEGACY: MI}, expires_at=12.0)
    assert snap.epc[EPC].reserved[:2].tolist() == [0, 4 * MI]
    assert snap.epc[LEGACY].reserved[:2].tolist() == [0, MI]
    assert snap.reservations == {
        "default/x": Reservation("b", {EPC: 4 * MI, LEGACY: MI}, 12.0),
    }


def test_a_reservation_keeps_its_own_copy_of_the_request() -> None:
    snap = cluster(epc_node("a", 64))
    epc = {EPC: 2 * MI}
    snap.reserve("default/x", "a", epc, expires_at=10.0)
    epc[EPC] = 9 * MI
    snap.release("default/x")
    assert snap.epc[EPC].reserved[0] == 0


def test_a_reservation_on_a_name_that_is_no_node_is_refused() -> None:
    snap = cluster(epc_node("a", 64))
    snap.reserve("default/x", "a", {EPC: 2 * MI}, expires_at=10.0)
    with pytest.raises(KeyError, match="ghost"):
        snap.reserve("default/y", "ghost", {EPC: MI}, expires_at=10.0)
    assert list(snap.reservations) == ["default/x"]
    assert snap.epc[EPC].reserved[0] == 2 * MI


def test_reservations_expire_at_exactly_their_time() -> None:
    snap = cluster(epc_node("a", 64))
    snap.reserve("default/x", "a", {EPC: 2 * MI}, expires_at=10.0)
    snap.reserve("default/y", "a", {EPC: 3 * MI}, expires_at=10.5)
    snap.fit_view(EPC)
    assert snap.expire_reservations(9.999) == []
    assert snap.epc[EPC].reserved[0] == 5 * MI
    assert snap.expire_reservations(10.0) == ["default/x"]
    assert snap.epc[EPC].reserved[0] == 3 * MI
    assert view_at(snap, "a") == [61 * MI]
    assert snap.expire_reservations(11.0) == ["default/y"]
    assert snap.epc[EPC].reserved[0] == 0
    assert snap.reservations == {}
    assert snap.expire_reservations(12.0) == []


def test_removing_a_pod_releases_its_reservation_unless_asked_to_keep_it() -> None:
    snap = cluster(epc_node("a", 64))
    snap.upsert_pod(PodInfo("default", "w", epc={EPC: 2 * MI}))
    snap.reserve("default/w", "a", {EPC: 2 * MI}, expires_at=10.0)
    snap.remove_pod("default/w", keep_reservation=True)
    assert snap.epc[EPC].reserved[0] == 2 * MI
    snap.upsert_pod(PodInfo("default", "w", epc={EPC: 2 * MI}))
    snap.remove_pod("default/w")
    assert snap.epc[EPC].reserved[0] == 0
    assert snap.reservations == {}
    # With no pod at all under the key, the reservation still goes.
    snap.reserve("default/z", "a", {EPC: MI}, expires_at=10.0)
    assert snap.remove_pod("default/z") is None
    assert snap.reservations == {}


def test_a_pending_pod_seen_again_keeps_its_reservation() -> None:
    snap = cluster(epc_node("a", 64))
    pending = PodInfo("default", "w", epc={EPC: 2 * MI})
    snap.upsert_pod(pending)
    snap.reserve("default/w", "a", {EPC: 2 * MI}, expires_at=10.0)
    snap.upsert_pod(pending)  # an update that is not the binding yet
    assert snap.epc[EPC].reserved[0] == 2 * MI
    assert list(snap.reservations) == ["default/w"]


def test_a_pod_seen_bound_replaces_its_reservation_with_its_request() -> None:
    snap = cluster(epc_node("a", 64))
    snap.upsert_pod(PodInfo("default", "w", epc={EPC: 2 * MI}))
    snap.reserve("default/w", "a", {EPC: 2 * MI}, expires_at=10.0)
    snap.fit_view(EPC)
    snap.upsert_pod(bound("w", "a", 2))
    assert snap.reservations == {}
    assert snap.epc[EPC].reserved[0] == 0
    assert snap.epc[EPC].requested[0] == 2 * MI
    assert view_at(snap, "a") == [62 * MI]  # counted once, not twice


def test_a_pod_seen_finished_releases_its_reservation() -> None:
    snap = cluster(epc_node("a", 64))
    snap.upsert_pod(PodInfo("default", "w", epc={EPC: 2 * MI}))
    snap.reserve("default/w", "a", {EPC: 2 * MI}, expires_at=10.0)
    snap.upsert_pod(PodInfo("default", "w", phase="Failed", epc={EPC: 2 * MI}))
    assert snap.reservations == {}
    assert snap.epc[EPC].reserved[0] == 0
    assert view_at(snap, "a") == [64 * MI]


# ----- pressure --------------------------------------------------------------------------------


def test_pressure_closes_a_node_to_epc_pods_until_cleared() -> None:
    snap = cluster(epc_node("a", 64), epc_node("b", 32))
    snap.used_and_allocatable(EPC)
    snap.set_pressure("a", "EPC paging")
    assert view_at(snap, "a", "b") == [NO_FIT, 32 * MI]
    used, allocatable = snap.used_and_allocatable(EPC)
    assert (used[0], allocatable[0]) == (0.0, 64.0 * MI)
    snap.set_pressure("a", None)
    assert snap.pressure == {}
    assert view_at(snap, "a", "b") == [64 * MI, 32 * MI]
    # Pressure on a name before it is a node counts when the node arrives.
    snap.set_pressure("c", "EPC paging")
    snap.upsert_node(epc_node("c", 8))
    assert view_at(snap, "c") == [NO_FIT]


# ----- derived arrays --------------------------------------------------------------------------


def ten_nodes() -> ClusterSnapshot:
    return cluster(*(epc_node(f"n{i}", 16) for i in range(10)), capacity=16)


def test_many_changes_between_two_reads_update_the_arrays_in_place() -> None:
    snap = ten_nodes()
    view = snap.fit_view(EPC)
    used, allocatable = snap.used_and_allocatable(EPC)
    # Ten changed slots, more than the one-by-one path takes: n_i gets a pod of i + 1 MiB,
    # and n9 comes under pressure besides.
    for i in range(10):
        snap.upsert_pod(bound(f"p{i}", f"n{i}", i + 1))
    snap.set_pressure("n9", "EPC paging")
    after = snap.fit_view(EPC)
    used_after, allocatable_after = snap.used_and_allocatable(EPC)
    assert after is view
    assert used_after is used and allocatable_after is allocatable
    assert after.tolist() == [(15 - i) * MI for i in range(9)] + [NO_FIT] * 8
    assert used.tolist() == [float((i + 1) * MI) for i in range(9)] + [0.0] * 8
    assert allocatable.tolist() == [16.0 * MI] * 10 + [0.0] * 7


def test_exactly_eight_changes_between_two_reads() -> None:
    snap = ten_nodes()
    snap.used_and_allocatable(EPC)
    for i in range(8):
        snap.upsert_pod(bound(f"p{i}", f"n{i}", 2 * i))
    used, allocatable = snap.used_and_allocatable(EPC)
    assert snap.fit_view(EPC)[:10].tolist() == [(16 - 2 * i) * MI for i in range(8)] + [16 * MI] * 2
    assert used[:10].tolist() == [float(2 * i * MI) for i in range(8)] + [0.0, 0.0]
    assert allocatable[:10].tolist() == [16.0 * MI] * 10


def test_many_changes_to_the_allocatable_figures_between_two_reads() -> None:
    snap = ten_nodes()
    snap.used_and_allocatable(EPC)
    # Each node resized to i + 1 MiB, one pod of 1 MiB on n0: used 1 MiB of 1 MiB there.
    for i in range(10):
        snap.upsert_node(epc_node(f"n{i}", i + 1))
    snap.upsert_pod(bound("p", "n0", 1))
    used, allocatable = snap.used_and_allocatable(EPC)
    assert allocatable[:11].tolist() == [float((i + 1) * MI) for i in range(10)] + [0.0]
    assert used[:11].tolist() == [float(MI)] + [0.0] * 10
    assert snap.fit_view(EPC)[:10].tolist() == [0] + [(i + 1) * MI for i in range(1, 10)]


def test_used_and_allocatable_after_one_change_are_the_same_arrays_updated() -> None:
    snap = cluster(epc_node("a", 64), epc_node("b", 32), NodeInfo("c"))
    used, allocatable = snap.used_and_allocatable(EPC)
    assert used[:4].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert allocatable[:4].tolist() == [64.0 * MI, 32.0 * MI, 0.0, 0.0]
    snap.upsert_pod(bound("p", "b", 8))
    again, again_allocatable = snap.used_and_allocatable(EPC)
    assert again is used and again_allocatable is allocatable
    assert used[:4].tolist() == [0.0, 8.0 * MI, 0.0, 0.0]
    # Nothing changed since: the same figures again.
    assert snap.used_and_allocatable(EPC)[0] is used
    assert used[:4].tolist() == [0.0, 8.0 * MI, 0.0, 0.0]
    assert used.dtype == np.float64 and allocatable.dtype == np.float64
    # A node added moves the figures in bulk: arrays built afresh, with the same values.
    snap.upsert_node(epc_node("d", 4))
    rebuilt, rebuilt_allocatable = snap.used_and_allocatable(EPC)
    assert rebuilt[:5].tolist() == [0.0, 8.0 * MI, 0.0, 0.0, 0.0]
    assert rebuilt_allocatable[:5].tolist() == [64.0 * MI, 32.0 * MI, 0.0, 4.0 * MI, 0.0]


def test_overcommitted_node_counts_more_used_than_allocatable() -> None:
    snap = cluster(epc_node("a", 8))
    snap.used_and_allocatable(EPC)
    snap.upsert_pod(bound("p", "a", 10))
    used, allocatable = snap.used_and_allocatable(EPC)
    assert view_at(snap, "a") == [-2 * MI]
    assert (used[0], allocatable[0]) == (10.0 * MI, 8.0 * MI)


# ----- change log ------------------------------------------------------------------------------


def test_changed_since_lists_each_changed_slot_in_order() -> None:
    snap = cluster(epc_node("a", 8), epc_node("b", 8))
    mark = snap.mark()
    nothing = snap.changed_since(mark)
    assert nothing is not None
    assert nothing.tolist() == [] and nothing.dtype == np.int64
    assert snap.fit_view(EPC)[nothing].tolist() == []  # usable as an index
    snap.upsert_pod(bound("p", "b", 1))
    snap.set_usage("a", MI)
    snap.reserve("default/x", "b", {EPC: MI}, expires_at=1.0)
    changed = snap.changed_since(mark)
    assert changed is not None
    assert changed.tolist() == [1, 0, 1] and changed.dtype == np.int64
    later = snap.mark()
    snap.set_pressure("a", "paging")
    snap.upsert_node(epc_node("b", 16))  # an update of a known node is one slot
    changed = snap.changed_since(later)
    assert changed is not None and changed.tolist() == [0, 1]
    assert snap.changed_since(mark) is not None


@pytest.mark.parametrize(
    "bulk",
    [
        lambda s: s.upsert_node(epc_node("c", 8)),
        lambda s: s.remove_node("a"),
        lambda s: setattr(s, "accounting", "usage"),
        lambda s: s.clear_usage(),
    ],
    ids=["node added", "node removed", "accounting switched", "usage cleared"],
)
def test_changed_since_is_none_after_a_bulk_change(
    bulk: Callable[[ClusterSnapshot], object],
) -> None:
    snap = cluster(epc_node("a", 8), epc_node("b", 8))
    mark = snap.mark()
    snap.set_usage("a", MI)
    bulk(snap)
    assert snap.changed_since(mark) is None
    assert snap.changed_since(snap.mark()) is not None


def test_the_change_log_is_replaced_by_a_rebuild_past_1024_entries() -> None:
    snap = cluster(epc_node("a", 8))
    mark = snap.mark()
    for i in range(1024):
        snap.set_usage("a", i)
    changed = snap.changed_since(mark)
    assert changed is not None and changed.shape == (1024,)
    snap.set_usage("a", 0)  # the 1025th entry: over the bound
    assert snap.changed_since(mark) is None
    assert snap.mark()[1] == 0
    assert view_at(snap, "a") == [8 * MI]


def test_the_change_log_bound_is_twice_the_slots_when_that_is_more() -> None:
    snap = cluster(epc_node("a", 8), capacity=600)
    mark = snap.mark()
    for i in range(1200):  # 2 x 600 slots
        snap.set_usage("a", i)
    changed = snap.changed_since(mark)
    assert changed is not None and changed.shape == (1200,)
    snap.set_usage("a", 0)
    assert snap.changed_since(mark) is None


# ----- fork ------------------------------------------------------------------------------------


def test_a_fork_changes_nothing_in_the_original() -> None:
    snap = busy_pair()
    view = snap.fit_view(EPC).copy()
    fork = snap.fork()
    assert isinstance(fork, ClusterSnapshot)
    assert fork.fit_view(EPC).tolist() == view.tolist()
    fork.upsert_pod(bound("q", "b", 4, cpu_milli=100))
    fork.reserve("default/rc", "b", {EPC: MI}, expires_at=9.0)
    fork.set_usage("b", 20 * MI)
    fork.set_pressure("b", "paging")
    fork.remove_node("a")
    fork.upsert_node(epc_node("z", 4))
    assert snap.fit_view(EPC).tolist() == view.tolist()
    assert snap.slots == {"a": 0, "b": 1}
    assert snap.epc[EPC].requested[:2].tolist() == [10 * MI, 0]
    assert snap.epc[EPC].reserved[:2].tolist() == [2 * MI, 3 * MI]
    assert snap.cpu_requested[:2].tolist() == [500, 0]
    assert snap.usage[:2].tolist() == [30 * MI, -1]
    assert snap.pressure == {"a": "EPC paging"}
    assert set(snap.reservations) == {"default/ra", "default/rb"}
    assert set(snap.pods) == {"default/p"}
    assert snap.advertisers == {EPC: 2, LEGACY: 0}
