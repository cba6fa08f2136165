"""kube-scheduler's node rules at their edges, worked out from the Kubernetes API's own rules.

Protects: `Gt`/`Lt` values read as Go's 64-bit integers (the exact limits accepted, one past
them refused); a label whose value is empty still matches `In [""]`; pod slots full at exactly
`pods`; a pod's rules kept whichever of selector, affinity or tolerations it has alone.
"""

from __future__ import annotations

from epcsched.core.rules import (
    NO_CONSTRAINTS,
    REASON_TOO_MANY_PODS,
    Constraints,
    parse_int64,
    pod_count,
    requirement_matches,
)
from epcsched.model import NodeInfo, NodeSelectorRequirement, PodInfo, Toleration


def test_int64_limits_as_go_reads_them() -> None:
    assert parse_int64("9223372036854775807") == 2**63 - 1
    assert parse_int64("+9223372036854775807") == 2**63 - 1
    assert parse_int64("9223372036854775808") is None
    assert parse_int64("-9223372036854775808") == -(2**63)
    assert parse_int64("-9223372036854775809") is None
    assert parse_int64("18446744073709551615") is None


def test_gt_and_lt_at_the_int64_limits() -> None:
    big = NodeSelectorRequirement("n", "Gt", ("9223372036854775806",))
    assert requirement_matches(big, {"n": "9223372036854775807"}, "x")
    # A label one past the limit is not a number to Go: no match, even though it is bigger.
    assert not requirement_matches(big, {"n": "9223372036854775808"}, "x")
    low = NodeSelectorRequirement("n", "Lt", ("-9223372036854775807",))
    assert requirement_matches(low, {"n": "-9223372036854775808"}, "x")
    assert not requirement_matches(low, {"n": "-9223372036854775809"}, "x")


def test_an_empty_label_value_is_present() -> None:
    empty = NodeSelectorRequirement("gpu", "In", ("",))
    assert requirement_matches(empty, {"gpu": ""}, "x")
    assert not requirement_matches(empty, {}, "x")
    other = NodeSelectorRequirement("gpu", "NotIn", ("",))
    assert not requirement_matches(other, {"gpu": ""}, "x")
    assert requirement_matches(NodeSelectorRequirement("gpu", "Exists"), {"gpu": ""}, "x")


def test_pod_slots_are_full_at_exactly_pods() -> None:
    node = NodeInfo("n", pods=2)
    assert pod_count(0, node) is None
    assert pod_count(1, node) is None
    assert pod_count(2, node) == REASON_TOO_MANY_PODS
    assert pod_count(0, NodeInfo("n", pods=0)) == REASON_TOO_MANY_PODS


def test_each_kind_of_rule_is_kept_on_its_own() -> None:
    term = (NodeSelectorRequirement("zone", "In", ("a",)),)
    toleration = Toleration("dedicated", "Equal", "sgx", "NoSchedule")
    assert Constraints.of(PodInfo("d", "p")) is NO_CONSTRAINTS
    assert Constraints.of(PodInfo("d", "p", node_selector={"b": "2", "a": "1"})) == Constraints(
        (("a", "1"), ("b", "2"))
    )
    assert Constraints.of(PodInfo("d", "p", node_affinity=(term,))) == Constraints((), (term,))
    assert Constraints.of(PodInfo("d", "p", tolerations=(toleration,))) == Constraints(
        (), (), (toleration,)
    )
    both = Constraints.of(
        PodInfo(
            "d", "p", node_selector={"a": "1"}, node_affinity=(term,), tolerations=(toleration,)
        )
    )
    assert both == Constraints((("a", "1"),), (term,), (toleration,))
