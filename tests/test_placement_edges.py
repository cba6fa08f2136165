"""Placement at the edges a mutation run of `core/placement.py` found untested, every expected
value worked out by hand.

Protects: kube-scheduler's NodeResourcesFit boundaries on CPU and memory (a request that fills a
node exactly fits, one unit more does not; requests add to what is in use); slots whose node was
deleted and names that are no node (slot -1) are refused by every rule, including a
`matchFields` pin that reads the node's name; `choose_node` keeps a plain pod off SGX nodes by
default, and only then; the rules run once per group of alike nodes, a pod's verdict is kept and
the verdict cache is emptied at its bound.
"""

from __future__ import annotations

import numpy as np

from epcsched.core import placement
from epcsched.core.fit import PodRequest
from epcsched.core.placement import choose_node, resources_fit, rules_fit
from epcsched.core.rules import NO_CONSTRAINTS, Constraints
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.model import NodeInfo, NodeSelectorRequirement, PodInfo
from epcsched.quantity import DEFAULT_EPC_RESOURCES

EPC = "sgx.intel.com/epc"
GIB = 2**30


def cluster(*nodes: NodeInfo) -> ClusterSnapshot:
    snap = ClusterSnapshot(DEFAULT_EPC_RESOURCES)
    for info in nodes:
        snap.upsert_node(info)
    return snap


def using(snap: ClusterSnapshot, name: str, on: str, cpu_milli: int = 0, memory: int = 0) -> None:
    snap.upsert_pod(
        PodInfo("default", name, node_name=on, phase="Running", cpu_milli=cpu_milli, memory=memory)
    )


def test_cpu_fits_up_to_exactly_what_is_left() -> None:
    # 4000m allocatable, 1500m in use: 2500m left.
    snap = cluster(NodeInfo("a", {EPC: 8 * GIB}, cpu_milli=4000, memory=16 * GIB))
    using(snap, "busy", "a", cpu_milli=1500)
    slots = snap.slots_of(["a"])
    assert resources_fit(snap, PodRequest(cpu_milli=2500), slots).tolist() == [True]
    assert resources_fit(snap, PodRequest(cpu_milli=2501), slots).tolist() == [False]


def test_memory_fits_up_to_exactly_what_is_left() -> None:
    # 16Gi allocatable, 10Gi in use: 6Gi left, and 6Gi plus one byte does not fit.
    snap = cluster(NodeInfo("a", {EPC: 8 * GIB}, cpu_milli=4000, memory=16 * GIB))
    using(snap, "busy", "a", memory=10 * GIB)
    slots = snap.slots_of(["a"])
    assert resources_fit(snap, PodRequest(memory=6 * GIB), slots).tolist() == [True]
    assert resources_fit(snap, PodRequest(memory=6 * GIB + 1), slots).tolist() == [False]
    # 7Gi alone is below allocatable; only added to the 10Gi in use does it overflow.
    assert resources_fit(snap, PodRequest(memory=7 * GIB), slots).tolist() == [False]


def _with_a_deleted_node() -> tuple[ClusterSnapshot, np.ndarray]:
    # Two label groups (pool a, pool b) and a third node deleted: its slot holds no node.
    snap = cluster(
        NodeInfo("a", {EPC: 8 * GIB}, 4000, 16 * GIB, labels={"pool": "a"}),
        NodeInfo("b", {EPC: 8 * GIB}, 4000, 16 * GIB, labels={"pool": "b"}),
        NodeInfo("c", {EPC: 8 * GIB}, 4000, 16 * GIB, labels={"pool": "b"}),
    )
    slots = snap.slots_of(["a", "b", "c"])
    snap.remove_node("c")
    return snap, np.append(slots, -1)


def test_a_deleted_slot_and_an_unknown_name_are_refused_by_every_rule() -> None:
    snap, slots = _with_a_deleted_node()
    assert rules_fit(snap, NO_CONSTRAINTS, slots).tolist() == [True, True, False, False]
    in_b = Constraints(node_selector=(("pool", "b"),))
    assert rules_fit(snap, in_b, slots).tolist() == [False, True, False, False]


def test_a_pin_by_name_refuses_deleted_and_unknown_slots() -> None:
    snap, slots = _with_a_deleted_node()
    # matchFields metadata.name NotIn [a]: every other node, but no deleted or unknown one.
    not_a = Constraints(
        node_affinity=((NodeSelectorRequirement("metadata.name", "NotIn", ("a",), field=True),),)
    )
    assert rules_fit(snap, not_a, slots).tolist() == [False, True, False, False]
    # The same verdict through kube-scheduler's filters, which also count pod slots.
    request = PodRequest(constraints=not_a)
    assert resources_fit(snap, request, slots).tolist() == [False, True, False, False]
    pinned = Constraints(
        node_affinity=((NodeSelectorRequirement("metadata.name", "In", ("b",), field=True),),)
    )
    assert rules_fit(snap, pinned, slots).tolist() == [False, True, False, False]


def test_a_plain_pod_avoids_sgx_nodes_by_default_and_only_then() -> None:
    # "a-sgx" comes first by name, so without the preference the tie goes to it.
    snap = cluster(
        NodeInfo("a-sgx", {EPC: 8 * GIB}, 4000, 16 * GIB),
        NodeInfo("b-plain", {}, 4000, 16 * GIB),
    )
    plain = PodRequest(cpu_milli=100)
    assert choose_node(snap, plain, "binpack") == "b-plain"
    assert choose_node(snap, plain, "binpack", prefer_non_sgx=True) == "b-plain"
    assert choose_node(snap, plain, "binpack", prefer_non_sgx=False) == "a-sgx"


def test_rules_run_once_per_group_of_alike_nodes_and_verdicts_are_kept() -> None:
    # Three nodes, two label sets: two groups, so a pod's rules are checked twice, not thrice.
    snap, _ = _with_a_deleted_node()
    snap.upsert_node(NodeInfo("c", {EPC: 8 * GIB}, 4000, 16 * GIB, labels={"pool": "b"}))
    table = placement._table(snap)
    assert len(table.groups) == 2
    # The same snapshot keeps its table, and a pod's verdict is computed once.
    assert placement._table(snap) is table
    in_b = Constraints(node_selector=(("pool", "b"),))
    assert table.admitted(in_b) is table.admitted(in_b)


def test_the_verdict_cache_is_emptied_when_it_reaches_its_bound() -> None:
    snap = cluster(NodeInfo("a", {EPC: 8 * GIB}, 4000, 16 * GIB))
    table = placement._table(snap)
    for i in range(placement._MAX_VERDICTS):
        table.admitted(Constraints(node_selector=(("i", str(i)),)))
    assert len(table.verdicts) == placement._MAX_VERDICTS
    table.admitted(Constraints(node_selector=(("i", "one more"),)))
    assert len(table.verdicts) == 1
