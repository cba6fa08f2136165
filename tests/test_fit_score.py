"""EPC fit is per resource name, failures split by whether eviction helps, scores span 0..10."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epcsched.core.fit import PodRequest, fit_masks, fits_everywhere, reasons
from epcsched.core.placement import choose_node
from epcsched.core.score import score
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.model import NodeInfo, PodInfo
from epcsched.quantity import DEFAULT_EPC_RESOURCES, MIB
from tests.helpers import EPC, LEGACY, node, pod, request_of, snapshot_of

GIB = 2**30


def evaluate(snap: ClusterSnapshot, req: PodRequest, names: list[str]) -> dict[str, str]:
    slots = snap.slots_of(names)
    masks = fit_masks(snap, req, slots)
    texts = reasons(snap, req, slots)
    out = {}
    for i, name in enumerate(names):
        if masks.ok[i]:
            out[name] = "ok"
        elif masks.unresolvable[i]:
            out[name] = "unresolvable: " + texts[i]
        else:
            out[name] = "failed: " + texts[i]
    return out


def test_fit_is_per_resource_name_never_by_bytes() -> None:
    snap = snapshot_of(
        node("modern", "16Gi"), node("legacy", "16384", resource=LEGACY), node("plain")
    )
    result = evaluate(snap, request_of(pod("p", "64Mi")), ["modern", "legacy", "plain"])
    assert result["modern"] == "ok"
    assert result["legacy"].startswith("unresolvable: node does not advertise sgx.intel.com/epc")
    assert LEGACY in result["legacy"]
    assert (
        result["plain"] == "unresolvable: node does not advertise sgx.intel.com/epc (it has no EPC)"
    )


def test_insufficient_free_epc_is_failed_with_figures() -> None:
    snap = snapshot_of(node("a", "94Mi"), pod("x", "72Mi", node_name="a"))
    result = evaluate(snap, request_of(pod("p", "64Mi")), ["a"])
    assert (
        result["a"] == "failed: insufficient sgx.intel.com/epc: requested 64Mi, free 22Mi of 94Mi"
    )


def test_allocatable_smaller_than_request_is_unresolvable() -> None:
    snap = snapshot_of(node("small", "93.5Mi"))
    result = evaluate(snap, request_of(pod("p", "128Mi")), ["small"])
    assert result["small"].startswith("unresolvable: sgx.intel.com/epc: requested 128Mi")


def test_name_no_node_advertises_names_it_and_the_cluster_names() -> None:
    snap = snapshot_of(node("a", "16Gi"), node("b", "168", resource=LEGACY))
    req = request_of(pod("p", "10", resource="sgx.intel.com/sgx_epc_mem_in_MiB"))
    text = evaluate(snap, req, ["a"])["a"]
    assert text.startswith(
        "unresolvable: no node in the cluster advertises sgx.intel.com/sgx_epc_mem_in_MiB"
    )
    assert EPC in text and LEGACY in text


def test_terminal_pods_hold_nothing() -> None:
    snap = snapshot_of(
        node("a", "100Mi"),
        pod("done", "90Mi", node_name="a", phase="Succeeded"),
        pod("dead", "90Mi", node_name="a", phase="Failed"),
    )
    assert evaluate(snap, request_of(pod("p", "100Mi")), ["a"])["a"] == "ok"


def test_pods_without_epc_pass_every_node_including_unknown_kinds() -> None:
    snap = snapshot_of(node("a", "1Mi"), node("plain"), pod("x", "1Mi", node_name="a"))
    assert evaluate(snap, request_of(pod("p", cpu="1")), ["a", "plain"]) == {
        "a": "ok",
        "plain": "ok",
    }


def test_unknown_node_is_failed_not_unresolvable() -> None:
    snap = snapshot_of(node("a", "1Gi"))
    result = evaluate(snap, request_of(pod("p", "1Mi")), ["ghost"])
    assert result["ghost"].startswith("failed: node is not in epcsched's cluster cache")


def test_headroom_is_kept_free() -> None:
    snap = snapshot_of(node("a", "100Mi"), headroom="20%")
    assert evaluate(snap, request_of(pod("p", "80Mi")), ["a"])["a"] == "ok"
    assert evaluate(snap, request_of(pod("p", "81Mi")), ["a"])["a"].startswith("unresolvable")


def test_pressure_fails_epc_pods_only() -> None:
    snap = snapshot_of(node("a", "1Gi"))
    snap.set_pressure("a", "EPC pressure: paging 1200 pages/s above 1000")
    result = evaluate(snap, request_of(pod("p", "1Mi")), ["a"])
    assert result["a"] == "failed: EPC pressure: paging 1200 pages/s above 1000"
    assert evaluate(snap, request_of(pod("q", cpu="1")), ["a"])["a"] == "ok"


def test_measured_usage_limits_free_under_max_accounting() -> None:
    snap = snapshot_of(node("a", "100Mi"))
    snap.accounting = "max"
    snap.set_usage("a", 90 * MIB)
    text = evaluate(snap, request_of(pod("p", "20Mi")), ["a"])["a"]
    assert text == (
        "failed: insufficient sgx.intel.com/epc: requested 20Mi, free 10Mi of 100Mi "
        "(measured in use 90Mi)"
    )
    snap.accounting = "requests"
    assert evaluate(snap, request_of(pod("p", "20Mi")), ["a"])["a"] == "ok"


def scores(
    snap: ClusterSnapshot, req: PodRequest, names: list[str], strategy: str
) -> dict[str, int]:
    out = score(snap, req, snap.slots_of(names), strategy)
    return dict(zip(names, out.tolist(), strict=True))


def test_binpack_spreads_scores_over_candidates_small_pod_big_nodes() -> None:
    snap = snapshot_of(
        node("used", "64Gi"), node("empty", "64Gi"), pod("x", "256Mi", node_name="used")
    )
    req = request_of(pod("p", "64Mi"))
    assert scores(snap, req, ["used", "empty"], "binpack") == {"used": 10, "empty": 0}
    assert scores(snap, req, ["used", "empty"], "spread") == {"used": 0, "empty": 10}


def test_scores_are_integers_in_range_and_proportional() -> None:
    snap = snapshot_of(
        node("a", "16Gi"),
        node("b", "16Gi"),
        node("c", "16Gi"),
        pod("x", "8Gi", node_name="b"),
        pod("y", "16Gi", node_name="c"),
    )
    req = PodRequest(epc={EPC: 0}, cpu_milli=1000)
    got = scores(snap, req, ["a", "b", "c"], "binpack")
    assert got == {"a": 0, "b": 5, "c": 10}


def test_equal_candidates_get_equal_scores() -> None:
    snap = snapshot_of(node("a", "16Gi"), node("b", "16Gi"))
    req = request_of(pod("p", "1Gi"))
    for strategy in ("binpack", "spread", "balanced"):
        got = scores(snap, req, ["a", "b"], strategy)
        assert got["a"] == got["b"]


def test_infeasible_candidates_score_zero_and_do_not_stretch_the_range() -> None:
    snap = snapshot_of(
        node("a", "16Gi"), node("b", "16Gi"), node("full", "1Gi"), pod("x", "4Gi", node_name="a")
    )
    got = scores(snap, request_of(pod("p", "2Gi")), ["a", "b", "full"], "binpack")
    assert got == {"a": 10, "b": 0, "full": 0}


def test_balanced_prefers_epc_share_close_to_cpu_memory_share() -> None:
    snap = snapshot_of(
        node("cpu-heavy", "16Gi", cpu="4"),
        node("idle", "16Gi", cpu="4"),
        pod("x", "1Gi", node_name="cpu-heavy", cpu="3"),
    )
    got = scores(snap, request_of(pod("p", "8Gi", cpu="0")), ["cpu-heavy", "idle"], "balanced")
    assert got["cpu-heavy"] > got["idle"]


def test_plain_pods_prefer_nodes_without_epc() -> None:
    snap = snapshot_of(node("sgx", "16Gi"), node("plain"))
    got = scores(snap, request_of(pod("p", cpu="1")), ["sgx", "plain"], "binpack")
    assert got == {"sgx": 0, "plain": 10}


def test_snapshot_sums_are_incremental_and_exact() -> None:
    snap = snapshot_of(node("a", "1Gi"))
    for i in range(5):
        snap.upsert_pod(PodInfo("ns", f"p{i}", node_name="a", epc={EPC: 10 * MIB}))
    snap.remove_pod("ns/p0")
    snap.upsert_pod(PodInfo("ns", "p1", node_name="a", epc={EPC: 20 * MIB}))
    snap.upsert_pod(PodInfo("ns", "p2", node_name="a", phase="Succeeded", epc={EPC: 10 * MIB}))
    assert int(snap.epc[EPC].requested[snap.slots["a"]]) == 40 * MIB
    # A pod bound to a node seen later counts once the node appears.
    snap.upsert_pod(PodInfo("ns", "early", node_name="b", epc={EPC: 5 * MIB}))
    snap.upsert_node(NodeInfo("b", epc_allocatable={EPC: GIB}))
    assert int(snap.epc[EPC].requested[snap.slots["b"]]) == 5 * MIB
    snap.remove_node("b")
    snap.upsert_node(NodeInfo("b", epc_allocatable={EPC: GIB}))
    assert int(snap.epc[EPC].requested[snap.slots["b"]]) == 5 * MIB


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=4096), min_size=1, max_size=6),
    st.lists(st.integers(min_value=1, max_value=2048), max_size=40),
    st.sampled_from(["binpack", "spread", "balanced"]),
)
def test_placements_never_overcommit_epc(
    nodes_mib: list[int], pods_mib: list[int], strategy: str
) -> None:
    snap = ClusterSnapshot(DEFAULT_EPC_RESOURCES)
    for i, size in enumerate(nodes_mib):
        snap.upsert_node(
            NodeInfo(
                f"n{i}", epc_allocatable={EPC: size * MIB}, cpu_milli=10**6, memory=2**50, pods=1000
            )
        )
    for j, need in enumerate(pods_mib):
        req = PodRequest(epc={EPC: need * MIB})
        chosen = choose_node(snap, req, strategy)
        names = snap.node_names()
        fits = fit_masks(snap, req, snap.slots_of(names)).ok
        assert (chosen is None) == (not fits.any())
        if chosen is not None:
            snap.upsert_pod(PodInfo("ns", f"p{j}", node_name=chosen, epc={EPC: need * MIB}))
    free = snap.free(EPC, snap.slots_of(snap.node_names()))
    assert (free >= 0).all()


@pytest.mark.parametrize("strategy", ["binpack", "spread", "balanced"])
def test_scores_always_within_range(strategy: str) -> None:
    rng = np.random.default_rng(3)
    items = [node(f"n{i}", f"{int(rng.integers(1, 64))}Gi") for i in range(50)]
    items += [
        pod(f"p{i}", f"{int(rng.integers(1, 900))}Mi", node_name=f"n{i % 50}") for i in range(200)
    ]
    snap = snapshot_of(*items)
    got = score(snap, request_of(pod("q", "512Mi")), snap.slots_of(snap.node_names()), strategy)
    assert got.dtype.kind == "i" and got.min() >= 0 and got.max() == 10


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=64), min_size=1, max_size=6),
    st.lists(st.integers(min_value=-1, max_value=7), max_size=8),
    st.integers(min_value=0, max_value=80),
)
def test_fits_everywhere_agrees_with_the_masks(
    nodes_mib: list[int], picks: list[int], need_mib: int
) -> None:
    snap = ClusterSnapshot(DEFAULT_EPC_RESOURCES)
    for i, size in enumerate(nodes_mib):
        snap.upsert_node(NodeInfo(f"n{i}", epc_allocatable={EPC: size * MIB}))
    names = [f"n{p}" if p >= 0 else "ghost" for p in picks]
    slots = snap.slots_of(names)
    for req in (PodRequest(epc={EPC: need_mib * MIB}) if need_mib else PodRequest(), PodRequest()):
        assert fits_everywhere(snap, req, slots) == bool(fit_masks(snap, req, slots).ok.all())
