"""Scores at the edges a mutation audit found untested, every expected value worked out by hand.

Protects: rounding half up when a score lands exactly between two levels (truncation, or
numpy's round-half-even, would give another answer); the balanced strategy reading CPU and memory
requests, of the pod as well as of the node; a pod that asks for two EPC names scored on both; a
node whose whole allocatable is the pod's request scoring as full; nodes with no CPU or memory
allocatable; `prefer_non_sgx` passed through to plain pods.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from epcsched.core.fit import PodRequest
from epcsched.core.score import raw_and_eligible, raw_scores, score
from epcsched.quantity import MIB
from tests.helpers import EPC, LEGACY, node, pod, snapshot_of

GIB = 2**30


def scores(snap: Any, request: PodRequest, names: list[str], strategy: str) -> list[int]:
    return [int(s) for s in score(snap, request, snap.slots_of(names), strategy)]


def with_requests(item: dict[str, Any], **requests: str) -> dict[str, Any]:
    item["spec"]["containers"][0]["resources"]["requests"].update(requests)
    return item


def test_a_score_exactly_between_two_levels_rounds_half_up() -> None:
    # 8Mi nodes holding 0, 1 and 4 Mi; a 1Mi pod. Binpack fractions after placement: 1/8, 2/8,
    # 5/8. The middle node is (2/8 - 1/8) / (5/8 - 1/8) = 1/4 of the way: 2.5 levels, which
    # rounds half up to 3 (truncation and round-half-even both say 2). All exact in binary.
    snap = snapshot_of(
        node("a", "8Mi"),
        node("b", "8Mi"),
        node("c", "8Mi"),
        pod("x", "1Mi", node_name="b"),
        pod("y", "4Mi", node_name="c"),
    )
    request = PodRequest(epc={EPC: MIB})
    assert scores(snap, request, ["a", "b", "c"], "binpack") == [0, 3, 10]
    # Spread: 7/8, 6/8, 3/8; the middle node is (6/8 - 3/8) / (4/8) = 3/4: 7.5 rounds to 8.
    assert scores(snap, request, ["a", "b", "c"], "spread") == [10, 8, 0]


def test_a_score_two_thirds_of_the_way_rounds_up_not_down() -> None:
    # 10Mi nodes holding 0, 2 and 3 Mi; a 1Mi pod: fractions 0.1, 0.3, 0.4. The middle node is
    # 2/3 of the way: 6.67 levels, rounded to 7 (truncation says 6).
    snap = snapshot_of(
        node("a", "10Mi"),
        node("b", "10Mi"),
        node("c", "10Mi"),
        pod("x", "2Mi", node_name="b"),
        pod("y", "3Mi", node_name="c"),
    )
    assert scores(snap, PodRequest(epc={EPC: MIB}), ["a", "b", "c"], "binpack") == [0, 7, 10]


def test_balanced_reads_the_pods_cpu_request() -> None:
    # 8Mi EPC nodes, 8 CPUs each, CPU in use 0, 4 and 2 cores; the pod asks 2Mi (a quarter of
    # EPC) and 2 cores. CPU fractions after placement: 2/8, 6/8, 4/8; memory stays 0, so the
    # CPU-and-memory mean is 1/8, 3/8, 2/8, and balanced = 1 - |1/4 - mean| = 7/8, 7/8, 1.
    snap = snapshot_of(
        node("a", "8Mi"),
        node("b", "8Mi"),
        node("c", "8Mi"),
        pod("x", cpu="4", node_name="b"),
        pod("y", cpu="2", node_name="c"),
    )
    request = PodRequest(epc={EPC: 2 * MIB}, cpu_milli=2000)
    assert scores(snap, request, ["a", "b", "c"], "balanced") == [0, 0, 10]
    # Without the pod's own CPU: fractions 0, 4/8, 2/8, means 0, 2/8, 1/8, balanced 3/4, 1, 7/8.
    assert scores(snap, PodRequest(epc={EPC: 2 * MIB}), ["a", "b", "c"], "balanced") == [0, 10, 5]


def test_balanced_reads_memory_too() -> None:
    # The same figures in memory: 32Gi nodes with 0, 16Gi and 8Gi in use, the pod asks 8Gi.
    snap = snapshot_of(
        node("a", "8Mi"),
        node("b", "8Mi"),
        node("c", "8Mi"),
        with_requests(pod("x", node_name="b"), memory="16Gi"),
        with_requests(pod("y", node_name="c"), memory="8Gi"),
    )
    request = PodRequest(epc={EPC: 2 * MIB}, memory=8 * GIB)
    assert scores(snap, request, ["a", "b", "c"], "balanced") == [0, 0, 10]


def test_balanced_tells_apart_nodes_that_differ_only_in_memory() -> None:
    # Same EPC and CPU; "a" has half its memory in use. EPC after placement is 1/2 on both;
    # mean of CPU and memory is 1/4 on "a" and 0 on "b": balanced 3/4 against 1/2.
    snap = snapshot_of(
        node("a", "8Mi"), node("b", "8Mi"), with_requests(pod("x", node_name="a"), memory="16Gi")
    )
    assert scores(snap, PodRequest(epc={EPC: 4 * MIB}), ["a", "b"], "balanced") == [10, 0]


def test_a_node_without_memory_or_cpu_allocatable_counts_them_as_unused() -> None:
    # "a" advertises no memory and no CPU: its fractions are 0, as on the idle node "b", so
    # both score alike (a division by zero would make every score meaningless).
    snap = snapshot_of(node("a", "8Mi", cpu="0", memory="0"), node("b", "8Mi"))
    assert scores(snap, PodRequest(epc={EPC: 4 * MIB}), ["a", "b"], "balanced") == [10, 10]


def test_a_one_millicore_node_is_full_after_a_one_millicore_pod() -> None:
    # CPU fractions after placement: 1m of 1m = 1 on "a", 1m of 2m = 1/2 on "b"; EPC 1/2 on both.
    # Balanced: 1 - |1/2 - 1/2| = 1 on "a", 1 - |1/2 - 1/4| = 3/4 on "b".
    snap = snapshot_of(node("a", "8Mi", cpu="1m"), node("b", "8Mi", cpu="2m"))
    request = PodRequest(epc={EPC: 4 * MIB}, cpu_milli=1)
    assert scores(snap, request, ["a", "b"], "balanced") == [10, 0]


def test_a_node_with_exactly_the_pods_epc_scores_as_full() -> None:
    # One byte of EPC asked; "a" has one byte (full after placement), "b" two (half full).
    snap = snapshot_of(node("a", "1"), node("b", "2"))
    assert scores(snap, PodRequest(epc={EPC: 1}), ["a", "b"], "binpack") == [10, 0]


def test_a_pod_asking_two_epc_names_is_scored_on_both() -> None:
    # Each node advertises 8Mi under both names. In use (first name, second name): a (0, 4Mi),
    # b (4Mi, 0), c (2Mi, 2Mi). The pod asks 2Mi of each: the mean fraction after placement is
    # (2/8 + 6/8) / 2 = 1/2 on every node, so all score alike. Reading only one of the names
    # would rank them (a 10, b 0, c 5 or the reverse).
    def two_names(name: str) -> dict[str, Any]:
        item = node(name, "8Mi")
        item["status"]["allocatable"][LEGACY] = "8"
        return item

    def using(name: str, on: str, epc: str, legacy: str) -> dict[str, Any]:
        return with_requests(pod(name, node_name=on), **{EPC: epc, LEGACY: legacy})

    snap = snapshot_of(
        two_names("a"),
        two_names("b"),
        two_names("c"),
        using("x", "a", "0", "4"),
        using("y", "b", "4Mi", "0"),
        using("z", "c", "2Mi", "2"),
    )
    request = PodRequest(epc={EPC: 2 * MIB, LEGACY: 2 * MIB})
    for strategy in ("binpack", "spread"):
        assert scores(snap, request, ["a", "b", "c"], strategy) == [10, 10, 10], strategy


def test_plain_pods_prefer_plain_nodes_only_when_asked() -> None:
    snap = snapshot_of(node("sgx", "8Mi"), node("plain"))
    slots = snap.slots_of(["sgx", "plain"])
    assert score(snap, PodRequest(), slots, "binpack").tolist() == [0, 10]
    assert score(snap, PodRequest(), slots, "binpack", prefer_non_sgx=False).tolist() == [10, 10]
    assert np.array_equal(score(snap, PodRequest(), slots, "spread"), [0, 10])


def test_balanced_averages_two_epc_names_before_comparing_with_cpu() -> None:
    # 8Mi under both names; in use a (0, 0), b (2Mi, 2Mi), c (1Mi, 1Mi); the pod asks 2Mi of
    # each and 6 of 8 cores (CPU fraction 3/4, mean with memory 3/8). Mean EPC fraction after
    # placement: a 1/4, b 1/2, c 3/8; balanced = 1 - |EPC - 3/8| = 7/8, 7/8, 1.
    def two_names(name: str) -> dict[str, Any]:
        item = node(name, "8Mi")
        item["status"]["allocatable"][LEGACY] = "8"
        return item

    snap = snapshot_of(
        two_names("a"),
        two_names("b"),
        two_names("c"),
        with_requests(pod("y", node_name="b"), **{EPC: "2Mi", LEGACY: "2"}),
        with_requests(pod("z", node_name="c"), **{EPC: "1Mi", LEGACY: "1"}),
    )
    request = PodRequest(epc={EPC: 2 * MIB, LEGACY: 2 * MIB}, cpu_milli=6000)
    assert scores(snap, request, ["a", "b", "c"], "balanced") == [0, 0, 10]


def test_plain_pods_treat_a_node_advertising_zero_epc_as_plain() -> None:
    # "zero" advertises the name with nothing allocatable: no enclave can use it, so a plain pod
    # may; "tiny" has one byte, which is EPC all the same.
    snap = snapshot_of(node("zero", "0"), node("tiny", "1"), node("plain"))
    assert scores(snap, PodRequest(), ["zero", "tiny", "plain"], "binpack") == [10, 0, 10]


def test_raw_scores_prefer_plain_nodes_by_default() -> None:
    snap = snapshot_of(node("sgx", "8Mi"), node("plain"))
    raw, eligible = raw_and_eligible(snap, PodRequest(), snap.slots_of(["sgx", "plain"]), "spread")
    assert raw.tolist() == [0.0, 1.0] and eligible.tolist() == [True, True]


def test_an_unknown_strategy_is_named() -> None:
    snap = snapshot_of(node("a", "8Mi"))
    with pytest.raises(ValueError, match=r"unknown strategy 'best'; expected one of \('binpack'"):
        raw_scores(snap, PodRequest(epc={EPC: MIB}), snap.slots_of(["a"]), "best")
