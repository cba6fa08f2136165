"""Fit at the edges a mutation audit found untested, every expected value worked out by hand.

Protects: a pod that asks for two EPC names fits only where both fit (whichever name comes
first); the four masks of `fit_masks` partition the candidates; exact boundaries (free equal to
the request fits, allocatable equal to the request is not unresolvable); the reasons' wording for
headroom, measured use, names nobody advertises, nodes that advertise other names, several
failures on one node and pressure; `fits_after_evicting` counting only the victims' EPC of the
requested name, and refusing nodes under EPC pressure (preemption cannot cure paging).
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from epcsched.core.fit import PodRequest, fit_masks, fits_after_evicting, fits_everywhere, reasons
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.objects import Pod, pod_info
from epcsched.quantity import DEFAULT_EPC_RESOURCES, MIB
from tests.helpers import EPC, LEGACY, node, pod, snapshot_of

ALIBABA = "alibabacloud.com/sgx_epc_MiB"
FAQ = "sgx.intel.com/sgx_epc_mem_in_MiB"


def two_names(name: str, epc: str, legacy: str) -> dict[str, Any]:
    item = node(name, epc)
    item["status"]["allocatable"][LEGACY] = legacy
    return item


def using(name: str, on: str, **requests: str) -> dict[str, Any]:
    item = pod(name, node_name=on)
    item["spec"]["containers"][0]["resources"]["requests"].update(requests)
    return item


def outcome(snap: ClusterSnapshot, request: PodRequest, names: list[str]) -> list[str]:
    masks = fit_masks(snap, request, snap.slots_of(names))
    out = []
    for i in range(len(names)):
        kinds = [
            kind
            for kind, mask in (
                ("ok", masks.ok),
                ("failed", masks.failed),
                ("unresolvable", masks.unresolvable),
                ("unknown", masks.unknown),
            )
            if bool(mask[i])
        ]
        assert len(kinds) == 1, (names[i], kinds)
        out.append(kinds[0])
    return out


def cluster_of_two_names() -> ClusterSnapshot:
    # Allocatable (EPC, legacy) in MiB and what is in use:
    #   both (8, 8) nothing; busy (8, 8) legacy 7 in use; small (8, 1); epc-only (8, -);
    #   legacy-only (-, 8); plain (-, -).
    return snapshot_of(
        two_names("both", "8Mi", "8"),
        two_names("busy", "8Mi", "8"),
        two_names("small", "8Mi", "1"),
        node("epc-only", "8Mi"),
        node("legacy-only", "8", resource=LEGACY),
        node("plain"),
        using("x", "busy", **{LEGACY: "7"}),
    )


NAMES = ["both", "busy", "small", "epc-only", "legacy-only", "plain", "ghost"]


def test_two_epc_names_fit_only_where_both_fit_whichever_comes_first() -> None:
    snap = cluster_of_two_names()
    for request in (
        PodRequest(epc={EPC: 2 * MIB, LEGACY: 2 * MIB}),
        PodRequest(epc={LEGACY: 2 * MIB, EPC: 2 * MIB}),
    ):
        assert outcome(snap, request, NAMES) == [
            "ok",
            "failed",  # evicting the legacy pod frees enough
            "unresolvable",  # 1Mi legacy allocatable can never hold 2Mi
            "unresolvable",
            "unresolvable",
            "unresolvable",
            "unknown",
        ]
        slots = snap.slots_of(["both"])
        assert fits_everywhere(snap, request, slots)
        for other in NAMES[1:6]:
            assert not fits_everywhere(snap, request, snap.slots_of(["both", other])), other


def test_reasons_name_each_failing_name_of_a_two_name_pod() -> None:
    snap = cluster_of_two_names()
    request = PodRequest(epc={EPC: 2 * MIB, LEGACY: 2 * MIB})
    assert reasons(snap, request, snap.slots_of(NAMES)) == [
        "fits",
        f"insufficient {LEGACY}: requested 2Mi, free 1Mi of 8Mi",
        f"{LEGACY}: requested 2Mi, but the node has only 1Mi allocatable",
        f"node does not advertise {LEGACY} (it advertises {EPC})",
        f"node does not advertise {EPC} (it advertises {LEGACY})",
        f"node does not advertise {LEGACY} (it has no EPC); "
        f"node does not advertise {EPC} (it has no EPC)",
        "node is not in epcsched's cluster cache",
    ]


def test_a_name_no_node_advertises_fails_every_node_and_lists_what_is_advertised() -> None:
    snap = snapshot_of(node("a", "8Mi"), node("b", "8", resource=LEGACY))
    request = PodRequest(epc={FAQ: MIB})
    assert outcome(snap, request, ["a", "b"]) == ["unresolvable", "unresolvable"]
    assert not fits_everywhere(snap, request, snap.slots_of(["a"]))
    # With no candidates at all there is nothing that fails.
    assert fits_everywhere(snap, request, snap.slots_of([]))
    # The advertised names are listed in the order the cluster first showed them.
    text = f"no node in the cluster advertises {FAQ} (EPC resources advertised: {EPC}, {LEGACY})"
    assert reasons(snap, request, snap.slots_of(["a", "b"])) == [text, text]
    # Sorted by name: the unadvertised alibaba name first, then the EPC name's own shortfall.
    both = PodRequest(epc={EPC: 16 * MIB, ALIBABA: MIB})
    assert reasons(snap, both, snap.slots_of(["a"])) == [
        f"no node in the cluster advertises {ALIBABA} (EPC resources advertised: {EPC}, "
        f"{LEGACY}); {EPC}: requested 16Mi, but the node has only 8Mi allocatable"
    ]
    plain = snapshot_of(node("p"))
    assert reasons(plain, PodRequest(epc={EPC: MIB}), plain.slots_of(["p"])) == [
        f"no node in the cluster advertises {EPC} (EPC resources advertised: none)"
    ]


def test_a_name_whose_last_node_was_deleted_is_advertised_by_no_node() -> None:
    snap = snapshot_of(node("a", "8Mi"), node("old", "8", resource=LEGACY))
    snap.remove_node("old")
    request = PodRequest(epc={LEGACY: MIB})
    assert reasons(snap, request, snap.slots_of(["a"])) == [
        f"no node in the cluster advertises {LEGACY} (EPC resources advertised: {EPC})"
    ]
    assert outcome(snap, request, ["a"]) == ["unresolvable"]


def test_a_slot_whose_node_is_gone_reports_no_epc() -> None:
    # A caller holding a slot from before the node was removed gets a reason, not a crash.
    snap = snapshot_of(node("a", "8Mi"), node("c", "8", resource=LEGACY))
    stale = snap.slots_of(["c"])
    snap.remove_node("c")
    assert reasons(snap, PodRequest(epc={EPC: MIB}), stale) == [
        f"node does not advertise {EPC} (it has no EPC)"
    ]


def test_exact_boundaries() -> None:
    # "full": 8Mi with 1Mi in use; "edge": 8Mi with 7Mi in use (free 1Mi exactly).
    snap = snapshot_of(
        node("full", "8Mi"),
        node("edge", "8Mi"),
        pod("x", "1Mi", node_name="full"),
        pod("y", "7Mi", node_name="edge"),
    )
    # An 8Mi pod: allocatable equals the request, so evicting helps: failed, not unresolvable.
    assert outcome(snap, PodRequest(epc={EPC: 8 * MIB}), ["full"]) == ["failed"]
    # A 1Mi pod on 1Mi free fits, by every function.
    one = PodRequest(epc={EPC: MIB})
    assert outcome(snap, one, ["edge"]) == ["ok"]
    assert fits_everywhere(snap, one, snap.slots_of(["edge", "full"]))
    assert reasons(snap, one, snap.slots_of(["edge"])) == ["fits"]
    # One byte more does not fit, and the reason does not read "requested 1.0Mi, free 1Mi".
    more = PodRequest(epc={EPC: MIB + 1})
    assert not fits_everywhere(snap, more, snap.slots_of(["edge"]))
    assert outcome(snap, more, ["edge", "full"]) == ["failed", "ok"]
    assert reasons(snap, more, snap.slots_of(["edge"])) == [
        f"insufficient {EPC}: requested 1048577, free 1Mi of 8Mi"
    ]
    # 8Mi and one byte against 8Mi allocatable: exact, not "8.0Mi" against "8Mi".
    assert reasons(snap, PodRequest(epc={EPC: 8 * MIB + 1}), snap.slots_of(["full"])) == [
        f"{EPC}: requested 8388609, but the node has only 8Mi allocatable"
    ]
    # 93.52Mi asked where 93.48Mi is free: one decimal prints both as 93.5Mi, so exact counts.
    near = snapshot_of(node("near", "98023793"))
    assert reasons(near, PodRequest(epc={EPC: 98065735}), near.slots_of(["near"])) == [
        f"{EPC}: requested 98065735, but the node has only 98023793 allocatable"
    ]


def test_headroom_is_named_in_the_reason() -> None:
    snap = snapshot_of(node("a", "8Mi"), node("b", "8Mi"), headroom="1Mi")
    # 8Mi asked, 7Mi usable: unresolvable, and the reason says the headroom took the rest.
    assert reasons(snap, PodRequest(epc={EPC: 8 * MIB}), snap.slots_of(["a"])) == [
        f"{EPC}: requested 8Mi, but the node has only 7Mi allocatable after 1Mi headroom"
    ]
    assert outcome(snap, PodRequest(epc={EPC: 8 * MIB}), ["a"]) == ["unresolvable"]
    # 7Mi fits exactly.
    assert outcome(snap, PodRequest(epc={EPC: 7 * MIB}), ["a", "b"]) == ["ok", "ok"]
    bare = snapshot_of(node("a", "8Mi"))
    assert reasons(bare, PodRequest(epc={EPC: 9 * MIB}), bare.slots_of(["a"])) == [
        f"{EPC}: requested 9Mi, but the node has only 8Mi allocatable"
    ]


def test_measured_use_is_quoted_only_when_accounting_reads_it() -> None:
    snap = snapshot_of(node("a", "8Mi"), node("b", "8Mi"), pod("x", "2Mi", node_name="b"))
    snap.set_usage("a", 8 * MIB)  # measured full
    snap.set_usage("b", 0)  # measured idle, but 2Mi requested
    request = PodRequest(epc={EPC: 7 * MIB})
    slots = snap.slots_of(["a", "b"])
    assert reasons(snap, request, slots) == [
        "fits",
        f"insufficient {EPC}: requested 7Mi, free 6Mi of 8Mi",
    ]
    snap.accounting = "max"
    assert reasons(snap, request, slots) == [
        f"insufficient {EPC}: requested 7Mi, free 0 of 8Mi (measured in use 8Mi)",
        f"insufficient {EPC}: requested 7Mi, free 6Mi of 8Mi (measured in use 0)",
    ]


def test_negative_free_is_shown_as_zero() -> None:
    # Overcommitted by requests: 8Mi allocatable, 9Mi requested.
    snap = snapshot_of(
        node("a", "8Mi"), pod("x", "5Mi", node_name="a"), pod("y", "4Mi", node_name="a")
    )
    assert reasons(snap, PodRequest(epc={EPC: MIB}), snap.slots_of(["a"])) == [
        f"insufficient {EPC}: requested 1Mi, free 0 of 8Mi"
    ]


def test_pressure_joins_the_other_reasons() -> None:
    snap = snapshot_of(node("a", "8Mi"), pod("x", "8Mi", node_name="a"), node("b", "8Mi"))
    snap.set_pressure("a", "EPC paging 500 pages/s above 100")
    snap.set_pressure("b", "EPC paging 200 pages/s above 100")
    request = PodRequest(epc={EPC: MIB})
    assert reasons(snap, request, snap.slots_of(["a", "b"])) == [
        f"insufficient {EPC}: requested 1Mi, free 0 of 8Mi; EPC paging 500 pages/s above 100",
        "EPC paging 200 pages/s above 100",
    ]
    assert outcome(snap, request, ["b"]) == ["failed"]
    # A pod without EPC is not kept off a node by EPC pressure.
    assert reasons(snap, PodRequest(), snap.slots_of(["b"])) == ["fits"]
    assert outcome(snap, PodRequest(), ["b", "ghost"]) == ["ok", "unknown"]


def test_unknown_candidates_do_not_stop_the_reasons_of_the_rest() -> None:
    snap = snapshot_of(node("a", "8Mi"), node("b", "8Mi"), pod("x", "8Mi", node_name="b"))
    request = PodRequest(epc={EPC: MIB})
    assert reasons(snap, request, snap.slots_of(["ghost", "a", "b", "ghost2"])) == [
        "node is not in epcsched's cluster cache",
        "fits",
        f"insufficient {EPC}: requested 1Mi, free 0 of 8Mi",
        "node is not in epcsched's cluster cache",
    ]
    assert outcome(snap, request, ["ghost", "a", "b"]) == ["unknown", "ok", "failed"]


def info(item: dict[str, Any]) -> Any:
    return pod_info(msgspec.convert(item, Pod), DEFAULT_EPC_RESOURCES)


def test_evicting_counts_only_the_victims_epc_of_the_requested_name() -> None:
    # 8Mi node full: victim "v" holds 4Mi, "w" 4Mi stays; "plain" holds no EPC, "legacy" holds
    # the other name. Evicting v, plain and legacy frees exactly 4Mi of sgx.intel.com/epc.
    snap = snapshot_of(
        two_names("n", "8Mi", "8"),
        pod("v", "4Mi", node_name="n"),
        pod("w", "4Mi", node_name="n"),
        pod("plain", node_name="n"),
        using("legacy", "n", **{LEGACY: "8"}),
    )
    victims = [snap.pods[f"default/{name}"] for name in ("v", "plain", "legacy")]
    assert fits_after_evicting(snap, PodRequest(epc={EPC: 4 * MIB}), "n", victims)
    assert not fits_after_evicting(snap, PodRequest(epc={EPC: 4 * MIB + 1}), "n", victims)
    # Both names: the legacy victim frees all 8Mi of legacy, v frees 4Mi of EPC.
    both = PodRequest(epc={EPC: 4 * MIB, LEGACY: 8 * MIB})
    assert fits_after_evicting(snap, both, "n", victims)
    assert not fits_after_evicting(snap, both, "n", victims[:2])
    assert not fits_after_evicting(
        snap, PodRequest(epc={LEGACY: 8 * MIB, EPC: 5 * MIB}), "n", victims
    )


def test_evicting_never_helps_a_node_under_pressure_or_without_the_name() -> None:
    snap = snapshot_of(
        node("hot", "8Mi"),
        node("legacy", "8", resource=LEGACY),
        pod("v", "8Mi", node_name="hot"),
        using("u", "legacy", **{LEGACY: "8"}),
    )
    request = PodRequest(epc={EPC: MIB})
    victims = [snap.pods["default/v"]]
    assert fits_after_evicting(snap, request, "hot", victims)
    snap.set_pressure("hot", "EPC paging 500 pages/s above 100")
    assert not fits_after_evicting(snap, request, "hot", victims)
    # A pod without EPC is not an enclave: pressure does not concern it.
    assert fits_after_evicting(snap, PodRequest(), "hot", [])
    assert not fits_after_evicting(snap, request, "legacy", [snap.pods["default/u"]])
    assert not fits_after_evicting(snap, request, "ghost", [])


def test_a_pod_request_keeps_cpu_memory_and_rules() -> None:
    item = pod("p", "1Mi", cpu="250m")
    item["spec"]["containers"][0]["resources"]["requests"]["memory"] = "64Mi"
    item["spec"]["nodeSelector"] = {"zone": "a"}
    request = PodRequest.of(info(item))
    assert (request.epc, request.cpu_milli, request.memory) == ({EPC: MIB}, 250, 64 * MIB)
    assert request.constraints.node_selector == (("zone", "a"),)


SIZES = st.sampled_from([0, 1, 4, 7, 8])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), SIZES, st.booleans(), SIZES, SIZES), min_size=1, max_size=6),
    st.lists(st.integers(-1, 5), min_size=1, max_size=6),
    SIZES,
    st.one_of(st.none(), SIZES),
)
def test_the_masks_partition_the_candidates_as_a_node_by_node_reading_says(
    nodes: list[tuple[bool, int, bool, int, int]],
    picks: list[int],
    need: int,
    need_legacy: int | None,
) -> None:
    """Each node: (has EPC, EPC allocatable MiB, has legacy, legacy allocatable, EPC in use)."""
    items: list[dict[str, Any]] = []
    for i, (has, size, has_legacy, legacy, used) in enumerate(nodes):
        item = node(f"n{i}", f"{size}Mi" if has else None)
        if has_legacy:
            item["status"]["allocatable"][LEGACY] = str(legacy)
        items.append(item)
        if has and used:
            items.append(pod(f"u{i}", f"{used}Mi", node_name=f"n{i}"))
    snap = snapshot_of(*items)
    epc = {EPC: need * MIB} if need else {}
    if need_legacy:
        epc[LEGACY] = need_legacy * MIB
    request = PodRequest(epc=epc)
    names = [f"n{p}" if 0 <= p < len(nodes) else "ghost" for p in picks]
    got = outcome(snap, request, names)
    for name, kind in zip(names, got, strict=True):
        if name == "ghost":
            assert kind == "unknown"
            continue
        has, size, has_legacy, legacy, used = nodes[int(name[1:])]
        free = {EPC: (size - (used if has else 0)) if has else None}
        alloc = {EPC: size if has else None}
        free[LEGACY] = legacy if has_legacy else None
        alloc[LEGACY] = legacy if has_legacy else None
        wanted = {n: v // MIB for n, v in epc.items()}
        if all(alloc[n] is not None and free[n] >= v for n, v in wanted.items()):  # type: ignore[operator]
            expected = "ok"
        elif any(alloc[n] is None or alloc[n] < v for n, v in wanted.items()):  # type: ignore[operator]
            expected = "unresolvable"
        else:
            expected = "failed"
        assert kind == expected, (name, nodes[int(name[1:])], wanted)
    assert fits_everywhere(snap, request, snap.slots_of(names)) == all(k == "ok" for k in got)
    assert np.array_equal(
        np.array([k == "ok" for k in got]), fit_masks(snap, request, snap.slots_of(names)).ok
    )


def test_a_name_outside_the_resource_table_fits_nowhere() -> None:
    # A PodRequest built by hand may name a resource the snapshot has no column for.
    snap = snapshot_of(node("a", "8Mi"))
    request = PodRequest(epc={"example.com/epc": 1})
    assert fits_everywhere(snap, request, snap.slots_of([]))
    assert not fits_everywhere(snap, request, snap.slots_of(["a"]))
    assert outcome(snap, request, ["a"]) == ["unresolvable"]
    assert not fits_after_evicting(snap, request, "a", [])


def test_reasons_list_every_other_name_a_node_advertises() -> None:
    item = node("other", "8", resource=LEGACY)
    item["status"]["allocatable"][ALIBABA] = "8"
    snap = snapshot_of(item, node("a", "8Mi"))
    assert reasons(snap, PodRequest(epc={EPC: MIB}), snap.slots_of(["other"])) == [
        f"node does not advertise {EPC} (it advertises {ALIBABA}, {LEGACY})"
    ]


def test_a_node_whose_allocatable_equals_the_request_reports_what_is_free() -> None:
    # 8Mi node with 1Mi in use, an 8Mi pod: eviction would help, so the reason is the free
    # figure, not "allocatable too small".
    snap = snapshot_of(node("a", "8Mi"), pod("x", "1Mi", node_name="a"))
    assert reasons(snap, PodRequest(epc={EPC: 8 * MIB}), snap.slots_of(["a"])) == [
        f"insufficient {EPC}: requested 8Mi, free 7Mi of 8Mi"
    ]
