"""The metrics API's pure rules: selectors as Kubernetes parses them, values as quantities the
HPA reads back exactly, and the pod and pool figures worked out by hand.

Protects `epcsched/metricsapi/selectors.py` and `values.py`: the label-selector syntax the HPA
sends (and the errors a person gets for a bad one), thousandths written as Kubernetes writes
them and parsed back to the same number, integer rounding of EPC shares, and which pods and
pools get a value.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epcsched.metricsapi.selectors import EVERYTHING, SelectorError, parse_selector
from epcsched.metricsapi.values import (
    LIMIT_HITS,
    USAGE_BYTES,
    USAGE_RATIO,
    Measurements,
    NodeEntry,
    PodEntry,
    PoolEntry,
    milli_quantity,
    pod_value,
    pod_values,
    pool_utilization,
    ratio_milli,
    to_milli,
)
from epcsched.quantity import parse_quantity

MiB = 2**20


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("app=enclave", {"app": "enclave"}, True),
        ("app==enclave", {"app": "enclave"}, True),
        ("app!=enclave", {}, True),
        ("app!=enclave", {"app": "enclave"}, False),
        ("app in (a, enclave),tier notin (gold)", {"app": "enclave"}, True),
        ("app in (a,b)", {"app": "enclave"}, False),
        ("app", {"app": ""}, True),
        ("!app", {"app": ""}, False),
        ("replicas>2", {"replicas": "3"}, True),
        ("replicas<2", {"replicas": "x"}, False),
        ("example.com/team=a,app=enclave", {"example.com/team": "a", "app": "enclave"}, True),
        ("", {}, True),
    ],
)
def test_selectors_match_as_kubernetes_does(
    selector: str, labels: dict[str, str], matches: bool
) -> None:
    assert parse_selector(selector).matches(labels) is matches


@pytest.mark.parametrize(
    ("selector", "part"),
    [
        ("app in (a", "unclosed '('"),
        ("app in ()", "at least one value"),
        ("=x", "invalid label key"),
        ("app=a b", "unable to parse"),
        ("a,,b", "empty requirement"),
        ("Bad_Prefix.com/x=y", "invalid label key"),
        ("app=" + "v" * 64, "invalid label value"),
        ("n>x", "needs an integer"),
    ],
)
def test_bad_selectors_name_the_part(selector: str, part: str) -> None:
    with pytest.raises(SelectorError, match=part.replace("(", r"\(")):
        parse_selector(selector)


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_milli_quantities_parse_back_to_the_same_thousandths(milli: int) -> None:
    assert parse_quantity(milli_quantity(milli)) * 1000 == milli


@given(st.integers(min_value=0, max_value=2**40), st.integers(min_value=1, max_value=2**40))
def test_ratio_is_the_exact_share_rounded_half_up(part: int, whole: int) -> None:
    exact = Fraction(part * 1000, whole)
    assert ratio_milli(part, whole) == int(exact + Fraction(1, 2))


def test_to_milli_rounds_half_away_from_zero() -> None:
    assert [to_milli(v) for v in (0.1334, 0.0005, 1500.0, -0.0015, 0.0)] == [133, 1, 1500000, -2, 0]


def test_pod_values_by_hand() -> None:
    pod = PodEntry("ns", "p", "u1", {"app": "x"}, epc_limit=64 * MiB, node="n")
    seen = Measurements(0, pod_usage={"u1": 48 * MiB + 0.4}, pod_limit_hits={"u1": 0.25})
    assert pod_value(USAGE_BYTES, pod, seen) == str(48 * MiB)
    assert pod_value(USAGE_RATIO, pod, seen) == "750m"
    assert pod_value(LIMIT_HITS, pod, seen) == "250m"
    unlimited = PodEntry("ns", "q", "u1")
    assert pod_value(USAGE_RATIO, unlimited, seen) is None
    assert pod_value(USAGE_BYTES, PodEntry("ns", "r", "u2"), seen) is None


def test_pod_values_keep_selected_pods_with_a_value_in_name_order() -> None:
    pods = [
        PodEntry("ns", "b", "ub", {"app": "x"}, MiB),
        PodEntry("ns", "a", "ua", {"app": "x"}, MiB),
        PodEntry("ns", "c", "uc", {"app": "y"}, MiB),
        PodEntry("ns", "d", "ud", {"app": "x"}, MiB),
    ]
    seen = Measurements(0, pod_usage={"ua": MiB, "ub": MiB / 2, "uc": MiB})
    picked = pod_values(USAGE_RATIO, pods, parse_selector("app=x"), seen)
    assert [(p.name, v) for p, v in picked] == [("a", "1"), ("b", "500m")]
    assert len(pod_values(USAGE_RATIO, pods, EVERYTHING, seen)) == 3


def test_pool_utilization_by_hand() -> None:
    """n1: requested 30Mi, measured 50Mi -> 50Mi; n2: requested 40Mi, measured 10Mi -> 40Mi;
    n3 is not in the pool: (50 + 40) / (100 + 100) = 0.45."""
    pool = PoolEntry("p", {"agentpool": "sgx"})
    nodes = [
        NodeEntry("n1", {"agentpool": "sgx"}, 100 * MiB),
        NodeEntry("n2", {"agentpool": "sgx"}, 100 * MiB),
        NodeEntry("n3", {"agentpool": "other"}, 100 * MiB),
    ]
    seen = Measurements(0, node_used={"n1": 50 * MiB, "n2": 10 * MiB, "n3": 99 * MiB})
    requested = {"n1": 30 * MiB, "n2": 40 * MiB, "n3": 0}
    assert pool_utilization(pool, nodes, requested, seen) == "450m"
    assert pool_utilization(PoolEntry("none", {}), nodes, requested, seen) is None
