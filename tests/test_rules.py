"""kube-scheduler's pod-and-node rules (core/rules.py) and how pods carry them (objects.py).

Protects: each node-affinity operator (`In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`),
terms ORed and expressions ANDed (a term with no expressions matches nothing), nodeSelector,
taints against tolerations (`Equal`/`Exists`, empty key, empty effect, PreferNoSchedule ignored),
cordoned nodes, the pod count, kube-scheduler's wording for each refusal, the vectorised mask in
`core.placement` agreeing with the rules node by node (also after a node's labels change), and
the parsing of tolerations, affinity, the Unschedulable condition and the drain annotations, with
one-line errors naming the field."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epcsched.core.fit import PodRequest
from epcsched.core.placement import choose_node, resources_fit, rules_fit
from epcsched.core.rules import (
    NO_CONSTRAINTS,
    Constraints,
    node_affinity,
    refusal,
    requirement_matches,
    taint_toleration,
)
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.model import NodeInfo, NodeSelectorRequirement, PodInfo, Taint, Toleration
from epcsched.objects import ObjectError, Pod, pod_info
from epcsched.quantity import DEFAULT_EPC_RESOURCES

EPC = "sgx.intel.com/epc"
GIB = 2**30
AFFINITY = "node(s) didn't match Pod's node affinity/selector"
TERMS = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"


def req(key: str, op: str, *values: str) -> NodeSelectorRequirement:
    return NodeSelectorRequirement(key, op, values)


def node(name: str = "n", **kw: Any) -> NodeInfo:
    return NodeInfo(name, {EPC: 8 * GIB}, 4000, 16 * GIB, **kw)


# ----- NodeAffinity operators -------------------------------------------------------------
@pytest.mark.parametrize(
    ("requirement", "labels", "expected"),
    [
        (req("zone", "In", "a", "b"), {"zone": "b"}, True),
        (req("zone", "In", "a", "b"), {"zone": "c"}, False),
        (req("zone", "In", "a"), {}, False),
        (req("zone", "NotIn", "a"), {"zone": "b"}, True),
        (req("zone", "NotIn", "a"), {"zone": "a"}, False),
        # An absent label is "not in" any set.
        (req("zone", "NotIn", "a"), {}, True),
        (req("sgx", "Exists"), {"sgx": ""}, True),
        (req("sgx", "Exists"), {}, False),
        (req("sgx", "DoesNotExist"), {}, True),
        (req("sgx", "DoesNotExist"), {"sgx": "true"}, False),
        # Gt/Lt compare integers: 10 > 9 although "10" < "9" as text.
        (req("epc-gib", "Gt", "9"), {"epc-gib": "10"}, True),
        (req("epc-gib", "Gt", "10"), {"epc-gib": "10"}, False),
        (req("epc-gib", "Lt", "10"), {"epc-gib": "9"}, True),
        (req("epc-gib", "Lt", "0"), {"epc-gib": "-1"}, True),
        (req("epc-gib", "Lt", "9"), {"epc-gib": "9"}, False),
        # A label that is not an integer, or no label, does not match either way.
        (req("epc-gib", "Gt", "1"), {"epc-gib": "16Gi"}, False),
        (req("epc-gib", "Lt", "100"), {"epc-gib": "16Gi"}, False),
        (req("epc-gib", "Lt", "100"), {"epc-gib": " 5"}, False),
        (req("epc-gib", "Gt", "1"), {}, False),
    ],
)
def test_each_operator(
    requirement: NodeSelectorRequirement, labels: dict[str, str], expected: bool
) -> None:
    assert requirement_matches(requirement, labels, "n") is expected


def test_terms_are_ored_and_expressions_anded() -> None:
    sgx_east = (req("sgx", "Exists"), req("zone", "In", "east"))
    big = (req("epc-gib", "Gt", "32"),)
    c = Constraints(node_affinity=(sgx_east, big))
    assert node_affinity(c, node(labels={"sgx": "1", "zone": "east"})) is None
    # The first term fails on zone, and the node is not big: no term matches.
    assert node_affinity(c, node(labels={"sgx": "1", "zone": "west"})) == AFFINITY
    assert node_affinity(c, node(labels={"zone": "west", "epc-gib": "64"})) is None


def test_a_term_with_no_expressions_matches_nothing() -> None:
    assert node_affinity(Constraints(node_affinity=((),)), node()) == AFFINITY
    # ... but another term can still match; and no terms at all is no constraint.
    either = Constraints(node_affinity=((), (req("a", "Exists"),)))
    assert node_affinity(either, node(labels={"a": "x"})) is None
    assert node_affinity(NO_CONSTRAINTS, node()) is None


def test_node_selector_needs_every_label_equal() -> None:
    c = Constraints(node_selector=(("agentpool", "dcsv3"), ("sgx", "true")))
    assert node_affinity(c, node(labels={"agentpool": "dcsv3", "sgx": "true", "x": "y"})) is None
    assert node_affinity(c, node(labels={"agentpool": "dcsv3"})) == AFFINITY
    assert node_affinity(c, node(labels={"agentpool": "dcsv2", "sgx": "true"})) == AFFINITY
    # An empty value still needs the label to be there.
    empty = Constraints(node_selector=(("sgx", ""),))
    assert node_affinity(empty, node()) == AFFINITY
    assert node_affinity(empty, node(labels={"sgx": ""})) is None


def test_selector_and_affinity_must_both_hold() -> None:
    c = Constraints(node_selector=(("a", "1"),), node_affinity=((req("b", "Exists"),),))
    assert node_affinity(c, node(labels={"a": "1"})) == AFFINITY
    assert node_affinity(c, node(labels={"b": "1"})) == AFFINITY
    assert node_affinity(c, node(labels={"a": "1", "b": ""})) is None


def test_match_fields_reads_the_node_name() -> None:
    pinned = Constraints(
        node_affinity=((NodeSelectorRequirement("metadata.name", "In", ("n2",), field=True),),)
    )
    assert node_affinity(pinned, node("n2")) is None
    assert node_affinity(pinned, node("n1")) == AFFINITY
    snap = ClusterSnapshot(DEFAULT_EPC_RESOURCES)
    for name in ("n1", "n2", "n3"):
        snap.upsert_node(node(name))
    # Nodes alike in labels and taints still differ for this pod.
    slots = snap.slots_of(["n1", "n2", "n3"])
    assert rules_fit(snap, pinned, slots).tolist() == [False, True, False]


# ----- TaintToleration ----------------------------------------------------------------------
SGX = Taint("sgx.intel.com/epc", "true", "NoSchedule")


@pytest.mark.parametrize(
    ("tolerations", "taint", "expected"),
    [
        # Untolerated NoSchedule and NoExecute taints refuse, with kube-scheduler's words.
        ((), SGX, "node(s) had untolerated taint {sgx.intel.com/epc: true}"),
        ((), Taint("gpu", "", "NoExecute"), "node(s) had untolerated taint {gpu: }"),
        # PreferNoSchedule only lowers a score; it never filters.
        ((), Taint("gpu", "", "PreferNoSchedule"), None),
        # Equal (the default) needs key and value equal.
        ((Toleration("sgx.intel.com/epc", "Equal", "true"),), SGX, None),
        (
            (Toleration("sgx.intel.com/epc", "Equal", "false"),),
            SGX,
            "node(s) had untolerated taint {sgx.intel.com/epc: true}",
        ),
        (
            (Toleration("other", "Equal", "true"),),
            SGX,
            "node(s) had untolerated taint {sgx.intel.com/epc: true}",
        ),
        # Exists matches any value of the key.
        ((Toleration("sgx.intel.com/epc", "Exists"),), SGX, None),
        # An empty key with Exists tolerates everything.
        ((Toleration("", "Exists"),), Taint("anything", "x", "NoExecute"), None),
        # An empty effect matches every effect; a set one only its own.
        ((Toleration("sgx.intel.com/epc", "Exists", effect=""),), SGX, None),
        (
            (Toleration("sgx.intel.com/epc", "Exists", effect="NoExecute"),),
            SGX,
            "node(s) had untolerated taint {sgx.intel.com/epc: true}",
        ),
        ((Toleration("sgx.intel.com/epc", "Exists", effect="NoSchedule"),), SGX, None),
    ],
)
def test_taints_against_tolerations(
    tolerations: tuple[Toleration, ...], taint: Taint, expected: str | None
) -> None:
    c = Constraints(tolerations=tolerations)
    assert taint_toleration(c, node(taints=(taint,))) == expected


def test_every_filtered_taint_must_be_tolerated() -> None:
    taints = (SGX, Taint("dedicated", "enclaves", "NoExecute"))
    one = Constraints(tolerations=(Toleration("sgx.intel.com/epc", "Exists"),))
    assert taint_toleration(one, node(taints=taints)) == (
        "node(s) had untolerated taint {dedicated: enclaves}"
    )
    both = Constraints(
        tolerations=(
            Toleration("sgx.intel.com/epc", "Exists"),
            Toleration("dedicated", "Equal", "enclaves", "NoExecute"),
        )
    )
    assert taint_toleration(both, node(taints=taints)) is None


# ----- NodeUnschedulable, readiness, order --------------------------------------------------
def test_a_cordoned_node_refuses_unless_the_pod_tolerates_it() -> None:
    cordoned = node(unschedulable=True)
    assert refusal(NO_CONSTRAINTS, cordoned) == "node(s) were unschedulable"
    for toleration in (
        Toleration("node.kubernetes.io/unschedulable", "Exists", effect="NoSchedule"),
        Toleration("node.kubernetes.io/unschedulable", "Exists"),
        Toleration("", "Exists"),
    ):
        assert refusal(Constraints(tolerations=(toleration,)), cordoned) is None
    wrong_effect = Toleration("node.kubernetes.io/unschedulable", "Exists", effect="NoExecute")
    assert refusal(Constraints(tolerations=(wrong_effect,)), cordoned) is not None


def test_refusals_come_in_kube_scheduler_order() -> None:
    bad = node(unschedulable=True, taints=(SGX,), labels={})
    picky = Constraints(node_selector=(("a", "b"),))
    assert refusal(picky, bad) == "node(s) were unschedulable"
    assert refusal(picky, dataclasses.replace(bad, unschedulable=False)) == (
        "node(s) had untolerated taint {sgx.intel.com/epc: true}"
    )
    assert refusal(picky, node()) == AFFINITY
    assert refusal(picky, node(ready=False)) == "node(s) were not ready"


# ----- the vectorised mask in core.placement ------------------------------------------------
def _cluster() -> ClusterSnapshot:
    snap = ClusterSnapshot(DEFAULT_EPC_RESOURCES)
    snap.upsert_node(node("a-plain", labels={"pool": "a"}))
    snap.upsert_node(node("b-tainted", labels={"pool": "b"}, taints=(SGX,)))
    snap.upsert_node(node("c-cordoned", labels={"pool": "a"}, unschedulable=True))
    snap.upsert_node(node("d-two-slots", labels={"pool": "a"}, pods=2))
    return snap


def test_resources_fit_applies_the_rules_and_the_pod_count() -> None:
    snap = _cluster()
    names = snap.node_names()
    slots = snap.slots_of(names)
    plain = PodRequest(epc={EPC: GIB})
    assert resources_fit(snap, plain, slots).tolist() == [True, False, False, True]
    tolerant = PodRequest(
        epc={EPC: GIB}, constraints=Constraints(tolerations=(Toleration("", "Exists"),))
    )
    assert resources_fit(snap, tolerant, slots).tolist() == [True, True, True, True]
    in_b = PodRequest(
        constraints=Constraints(
            node_selector=(("pool", "b"),), tolerations=(Toleration("sgx.intel.com/epc", "Exists"),)
        )
    )
    assert resources_fit(snap, in_b, slots).tolist() == [False, True, False, False]
    # Two pods fill d's two slots: kube-scheduler's "Too many pods".
    for i in range(2):
        snap.upsert_pod(PodInfo("default", f"p{i}", node_name="d-two-slots", phase="Running"))
    assert resources_fit(snap, plain, slots).tolist() == [True, False, False, False]
    assert choose_node(snap, in_b, "binpack") == "b-tainted"


def test_the_mask_follows_a_node_whose_labels_or_taints_change() -> None:
    snap = _cluster()
    slots = snap.slots_of(snap.node_names())
    in_b = PodRequest(constraints=Constraints(node_selector=(("pool", "b"),)))
    assert resources_fit(snap, in_b, slots).tolist() == [False, False, False, False]
    snap.upsert_node(node("a-plain", labels={"pool": "b"}))
    assert resources_fit(snap, in_b, slots).tolist() == [True, False, False, False]
    snap.upsert_node(node("a-plain", labels={"pool": "b"}, taints=(SGX,)))
    assert resources_fit(snap, in_b, slots).tolist() == [False, False, False, False]
    snap.remove_node("a-plain")
    assert rules_fit(snap, NO_CONSTRAINTS, np.array([-1], dtype=np.int64)).tolist() == [False]


LABELS = st.dictionaries(
    st.sampled_from(["pool", "zone", "size"]), st.sampled_from(["1", "2", "x"])
)
TAINTS = st.lists(
    st.builds(
        Taint,
        st.sampled_from(["sgx", "gpu"]),
        st.sampled_from(["", "1"]),
        st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule"]),
    ),
    max_size=2,
).map(tuple)
REQUIREMENTS = st.builds(
    NodeSelectorRequirement,
    st.sampled_from(["pool", "zone", "size"]),
    st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]),
    st.lists(st.sampled_from(["1", "2", "x"]), min_size=1, max_size=2).map(tuple),
)
CONSTRAINTS = st.builds(
    Constraints,
    st.dictionaries(st.sampled_from(["pool", "zone"]), st.sampled_from(["1", "2"])).map(
        lambda d: tuple(sorted(d.items()))
    ),
    st.lists(st.lists(REQUIREMENTS, max_size=2).map(tuple), max_size=2).map(tuple),
    st.lists(
        st.builds(
            Toleration,
            st.sampled_from(["", "sgx", "gpu", "node.kubernetes.io/unschedulable"]),
            st.sampled_from(["Equal", "Exists"]),
            st.sampled_from(["", "1"]),
            st.sampled_from(["", "NoSchedule", "NoExecute"]),
        ),
        max_size=2,
    ).map(tuple),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(LABELS, TAINTS, st.booleans(), st.booleans()), min_size=1, max_size=8),
    st.lists(CONSTRAINTS, min_size=1, max_size=3),
)
def test_the_grouped_mask_equals_the_rules_node_by_node(
    nodes: list[tuple[dict[str, str], tuple[Taint, ...], bool, bool]],
    constraints: list[Constraints],
) -> None:
    snap = ClusterSnapshot(DEFAULT_EPC_RESOURCES, capacity=2)
    infos = [
        node(f"n{i}", labels=labels, taints=taints, unschedulable=cordoned, ready=ready)
        for i, (labels, taints, cordoned, ready) in enumerate(nodes)
    ]
    for info in infos:
        snap.upsert_node(info)
    slots = snap.slots_of([i.name for i in infos])
    for c in constraints:
        expected = [refusal(c, info) is None for info in infos]
        assert rules_fit(snap, c, slots).tolist() == expected


# ----- parsing ------------------------------------------------------------------------------
def parse(spec: dict[str, Any], **meta: Any) -> PodInfo:
    body = {"metadata": {"name": "p", **meta}, "spec": spec}
    return pod_info(msgspec.convert(body, Pod), DEFAULT_EPC_RESOURCES)


def affinity(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
            }
        }
    }


def test_pods_carry_tolerations_affinity_and_drain_facts() -> None:
    body = {
        "metadata": {
            "name": "p",
            "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}],
        },
        "spec": {
            "tolerations": [
                {"key": "sgx", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "dedicated", "value": "enclaves"},
                {"operator": "Exists"},
            ],
            **affinity(
                {
                    "matchExpressions": [
                        {"key": "epc-gib", "operator": "Gt", "values": ["15"]},
                        {"key": "zone", "operator": "In", "values": ["a", "b"]},
                    ]
                },
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
            ),
        },
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        },
    }
    info = pod_info(msgspec.convert(body, Pod), DEFAULT_EPC_RESOURCES)
    assert info.tolerations == (
        Toleration("sgx", "Exists", "", "NoSchedule"),
        Toleration("dedicated", "Equal", "enclaves", ""),
        Toleration("", "Exists", "", ""),
    )
    assert info.node_affinity == (
        (req("epc-gib", "Gt", "15"), req("zone", "In", "a", "b")),
        (NodeSelectorRequirement("metadata.name", "In", ("n1",), field=True),),
    )
    assert info.marked_unschedulable
    assert info.safe_to_evict is False and info.owner_kind == "ReplicaSet"
    assert info.blocks_drain and not info.mirror


def test_drain_facts_from_owners_and_annotations() -> None:
    bare = parse({})
    assert bare.owner_kind is None and bare.safe_to_evict is None and bare.blocks_drain
    assert not parse(
        {}, annotations={"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}
    ).blocks_drain
    # Anything but "true"/"false" is no opinion, as cluster-autoscaler reads it.
    assert (
        parse(
            {}, annotations={"cluster-autoscaler.kubernetes.io/safe-to-evict": "yes"}
        ).safe_to_evict
        is None
    )
    mirror = parse({}, annotations={"kubernetes.io/config.mirror": "abc"})
    assert mirror.mirror and mirror.node_bound and not mirror.blocks_drain
    daemon = parse({}, ownerReferences=[{"kind": "DaemonSet", "name": "d", "controller": True}])
    assert daemon.node_bound and not daemon.blocks_drain
    # A pod scheduled but not yet bound, or failing for another reason, is not marked.
    other = msgspec.convert(
        {
            "metadata": {"name": "p"},
            "status": {
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}
                ]
            },
        },
        Pod,
    )
    assert not pod_info(other, DEFAULT_EPC_RESOURCES).marked_unschedulable


def expression(op: str, values: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"key": "k", "operator": op}
    if values is not None:
        out["values"] = values
    return out


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            affinity({"matchExpressions": [expression("In", ["a"]), expression("Foo", ["a"])]}),
            f'{TERMS}.nodeSelectorTerms[0].matchExpressions[1].operator: unknown operator "Foo"',
        ),
        (
            affinity({"matchExpressions": [expression("Gt", ["1", "2"])]}),
            f"{TERMS}.nodeSelectorTerms[0].matchExpressions[0].values: "
            "Gt needs exactly one integer value",
        ),
        (
            affinity({}, {"matchExpressions": [expression("Lt", ["1.5"])]}),
            f"{TERMS}.nodeSelectorTerms[1].matchExpressions[0].values: "
            "Lt needs exactly one integer value",
        ),
        (
            affinity({"matchExpressions": [expression("In", [])]}),
            f"{TERMS}.nodeSelectorTerms[0].matchExpressions[0].values: must be non-empty for In",
        ),
        (
            affinity({"matchExpressions": [expression("Exists", ["a"])]}),
            f"{TERMS}.nodeSelectorTerms[0].matchExpressions[0].values: must be empty for Exists",
        ),
        (
            affinity({"matchFields": [{"key": "spec.x", "operator": "In", "values": ["a"]}]}),
            f'{TERMS}.nodeSelectorTerms[0].matchFields[0].key: unknown field "spec.x" '
            "(only metadata.name)",
        ),
        (affinity(), f"{TERMS}.nodeSelectorTerms: must have at least one term"),
        (
            {"tolerations": [{"key": "a", "operator": "Within"}]},
            'spec.tolerations[0].operator: unknown operator "Within"',
        ),
        (
            {"tolerations": [{"key": "a", "operator": "Exists", "value": "x"}]},
            "spec.tolerations[0].value: must be empty when operator is Exists",
        ),
        (
            {"tolerations": [{"operator": "Exists"}, {"value": "x"}]},
            "spec.tolerations[1].operator: must be Exists when key is empty",
        ),
        (
            {"tolerations": [{"key": "a", "effect": "NoWay"}]},
            'spec.tolerations[0].effect: unknown effect "NoWay"',
        ),
    ],
)
def test_bad_rules_are_one_line_naming_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ObjectError) as caught:
        parse(spec)
    assert str(caught.value) == message
