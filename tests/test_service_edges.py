"""The extender service's verbs answer byte for byte as kube-scheduler's extender v1 expects.

Protects: filter and prioritize replies in names mode and full-nodes mode (passing nodes,
FailedNodes against FailedAndUnresolvableNodes with their exact reasons, names the cache does
not know, Node objects it has not seen yet, read from the request with the cluster's headroom
and advertisers, and a node it has seen read from the cache, not the request); the decision
log's failures object (which pod, which nodes, which kind, None when nothing failed); which
mode a body with both Nodes and NodeNames takes; decisive scores (all alike gives [], exact
rounding, plain pods kept off SGX nodes only when asked to); prioritize reusing its filter's
fit only for the very list and pod the filter passed whole; and the caches: the parsed body
(dropped when the node set changes), the per-raw and per-spec pod requests and their bound.
Every expected value is worked out by hand.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from epcsched.core.snapshot import ClusterSnapshot
from epcsched.extender import service as service_module
from epcsched.extender import wire
from epcsched.extender.service import ExtenderService, FilterFailures
from tests.helpers import LEGACY, node, pod, snapshot_of

GONE = "node is not in epcsched's cluster cache"
NO_FAILURES = b'"FailedNodes":{},"FailedAndUnresolvableNodes":{},"Error":""'


def compact(value: Any) -> bytes:
    """JSON as kube-scheduler's Go encoder writes it: no spaces."""
    return json.dumps(value, separators=(",", ":")).encode()


def names_body(the_pod: dict[str, Any], *names: str) -> bytes:
    return compact({"Pod": the_pod, "Nodes": None, "NodeNames": list(names)})


def nodes_body(the_pod: dict[str, Any], *nodes: dict[str, Any]) -> bytes:
    items = {"metadata": {}, "items": list(nodes)}
    return compact({"Pod": the_pod, "Nodes": items, "NodeNames": None})


def nodes_reply(passing: list[dict[str, Any]], failed: bytes, unresolvable: bytes) -> bytes:
    """A full-nodes filter reply: the passing Node objects exactly as the request held them."""
    return (
        b'{"Nodes":{"metadata":{},"items":['
        + b",".join(compact(n) for n in passing)
        + b']},"NodeNames":null,"FailedNodes":'
        + failed
        + b',"FailedAndUnresolvableNodes":'
        + unresolvable
        + b',"Error":""}'
    )


def serve(snap: ClusterSnapshot, *, prefer_non_sgx: bool = True) -> ExtenderService:
    return ExtenderService(lambda: snap, strategy="binpack", prefer_non_sgx=prefer_non_sgx)


POD = pod("p", "16Mi")
POD_RAW = compact(POD)
PLAIN = pod("plain", cpu="100m")


def mixed() -> ClusterSnapshot:
    """a: 1Gi free. b: 64Mi with 56Mi held, 8Mi free (eviction could help a 16Mi pod).
    c: 8Mi allocatable, less than 16Mi whatever is evicted."""
    snap: ClusterSnapshot = snapshot_of(
        node("a", "1Gi"), node("b", "64Mi"), node("c", "8Mi"), pod("x", "56Mi", node_name="b")
    )
    return snap


INSUFFICIENT_B = "insufficient sgx.intel.com/epc: requested 16Mi, free 8Mi of 64Mi"
SMALL_C = "sgx.intel.com/epc: requested 16Mi, but the node has only 8Mi allocatable"


# ----- names mode: filter ----------------------------------------------------------------------
def test_a_names_filter_where_all_fit_echoes_the_list_and_has_no_failures() -> None:
    snap = snapshot_of(node("a", "1Gi"), node("b", "1Gi"))
    reply, failures = serve(snap).filter_and_failures(names_body(POD, "a", "b"))
    assert reply == b'{"NodeNames":["a","b"],' + NO_FAILURES + b"}"
    assert failures is None


def test_a_names_filter_sorts_failures_into_the_two_maps_with_their_reasons() -> None:
    reply, failures = serve(mixed()).filter_and_failures(names_body(POD, "a", "b", "c", "ghost"))
    # b could fit after evictions and ghost is no node the cache knows: both FailedNodes (the
    # scheduler may retry); c is too small for good.
    assert json.loads(reply) == {
        "NodeNames": ["a"],
        "FailedNodes": {"b": INSUFFICIENT_B, "ghost": GONE},
        "FailedAndUnresolvableNodes": {"c": SMALL_C},
        "Error": "",
    }
    assert failures == FilterFailures(POD_RAW, {"b": INSUFFICIENT_B, "ghost": GONE}, {"c": SMALL_C})


def test_names_filter_failures_with_only_failed_nodes_are_reported() -> None:
    # Only b fails, and only for want of free EPC: a failures object all the same.
    reply, failures = serve(mixed()).filter_and_failures(names_body(POD, "b", "a"))
    assert reply == (
        b'{"NodeNames":["a"],"FailedNodes":{"b":"' + INSUFFICIENT_B.encode() + b'"},'
        b'"FailedAndUnresolvableNodes":{},"Error":""}'
    )
    assert failures == FilterFailures(POD_RAW, {"b": INSUFFICIENT_B}, {})


def test_names_filter_failures_with_only_unresolvable_nodes_are_reported() -> None:
    reply, failures = serve(mixed()).filter_and_failures(names_body(POD, "a", "c"))
    assert reply == (
        b'{"NodeNames":["a"],"FailedNodes":{},'
        b'"FailedAndUnresolvableNodes":{"c":"' + SMALL_C.encode() + b'"},"Error":""}'
    )
    assert failures == FilterFailures(POD_RAW, {}, {"c": SMALL_C})


def test_a_names_filter_where_none_fit_passes_an_empty_list() -> None:
    reply, failures = serve(mixed()).filter_and_failures(names_body(POD, "c", "ghost"))
    assert reply == (
        b'{"NodeNames":[],"FailedNodes":{"ghost":"' + GONE.encode() + b'"},'
        b'"FailedAndUnresolvableNodes":{"c":"' + SMALL_C.encode() + b'"},"Error":""}'
    )
    assert failures == FilterFailures(POD_RAW, {"ghost": GONE}, {"c": SMALL_C})


def test_a_pod_wanting_an_epc_name_nobody_advertises_is_unresolvable_everywhere() -> None:
    # Every node advertises sgx.intel.com/epc only; the pod asks for the legacy name.
    legacy = pod("old", "16", resource=LEGACY)
    reply, failures = serve(mixed()).filter_and_failures(names_body(legacy, "a", "c"))
    why = (
        f"no node in the cluster advertises {LEGACY} (EPC resources advertised: sgx.intel.com/epc)"
    )
    assert json.loads(reply) == {
        "NodeNames": [],
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {"a": why, "c": why},
        "Error": "",
    }
    assert failures == FilterFailures(compact(legacy), {}, {"a": why, "c": why})


# ----- full-nodes mode: filter -------------------------------------------------------------------
def test_a_full_nodes_filter_where_all_fit_returns_the_node_objects_and_no_failures() -> None:
    snap = snapshot_of(node("a", "1Gi"), node("b", "1Gi"))
    reply, failures = serve(snap).filter_and_failures(
        nodes_body(POD, node("a", "1Gi"), node("b", "1Gi"))
    )
    assert reply == nodes_reply([node("a", "1Gi"), node("b", "1Gi")], b"{}", b"{}")
    assert failures is None


def test_a_full_nodes_filter_reads_known_nodes_from_the_cache_and_a_new_one_from_the_request() -> (
    None
):
    # a, b, c as in `mixed`; "new" (1Gi, empty) is not in the cache: the request's own object
    # decides, and 16Mi fits it.
    objects = [node("a", "1Gi"), node("b", "64Mi"), node("c", "8Mi"), node("new", "1Gi")]
    reply, failures = serve(mixed()).filter_and_failures(nodes_body(POD, *objects))
    failed = {"b": INSUFFICIENT_B}
    unresolvable = {"c": SMALL_C}
    assert reply == nodes_reply([objects[0], objects[3]], compact(failed), compact(unresolvable))
    assert failures == FilterFailures(POD_RAW, failed, unresolvable)


def test_full_nodes_failures_with_only_a_new_node_too_small() -> None:
    # The one new node has 8Mi: unresolvable from its own object; a passes.
    objects = [node("a", "1Gi"), node("tiny", "8Mi")]
    why = "sgx.intel.com/epc: requested 16Mi, but the node has only 8Mi allocatable"
    reply, failures = serve(mixed()).filter_and_failures(nodes_body(POD, *objects))
    assert reply == nodes_reply([objects[0]], b"{}", compact({"tiny": why}))
    assert failures == FilterFailures(POD_RAW, {}, {"tiny": why})


def test_full_nodes_failures_with_only_failed_nodes() -> None:
    objects = [node("b", "64Mi"), node("a", "1Gi")]
    reply, failures = serve(mixed()).filter_and_failures(nodes_body(POD, *objects))
    assert reply == nodes_reply([objects[1]], compact({"b": INSUFFICIENT_B}), b"{}")
    assert failures == FilterFailures(POD_RAW, {"b": INSUFFICIENT_B}, {})


def test_the_first_cached_node_is_read_from_the_cache_not_from_the_request() -> None:
    # a is the first node the cache took (slot 0) and has 8Mi there; the request's object
    # claims 1Gi. The cache is the truth: a is unresolvable for a 16Mi pod.
    snap = snapshot_of(node("a", "8Mi"), node("b", "1Gi"))
    assert snap.slots["a"] == 0
    objects = [node("a", "1Gi"), node("b", "1Gi")]
    reply, failures = serve(snap).filter_and_failures(nodes_body(POD, *objects))
    assert reply == nodes_reply([objects[1]], b"{}", compact({"a": SMALL_C}))
    assert failures == FilterFailures(POD_RAW, {}, {"a": SMALL_C})


def test_a_new_node_keeps_the_clusters_headroom() -> None:
    # 16Mi headroom per node: the new 24Mi node leaves 8Mi usable, less than the pod's 16Mi.
    snap = snapshot_of(node("a", "1Gi"), headroom="16Mi")
    objects = [node("a", "1Gi"), node("new", "24Mi")]
    why = (
        "sgx.intel.com/epc: requested 16Mi, but the node has only 8Mi allocatable"
        " after 16Mi headroom"
    )
    reply, failures = serve(snap).filter_and_failures(nodes_body(POD, *objects))
    assert reply == nodes_reply([objects[0]], b"{}", compact({"new": why}))
    assert failures == FilterFailures(POD_RAW, {}, {"new": why})


def test_a_new_node_counts_as_an_advertiser_when_the_cache_has_none() -> None:
    # The cache's only node has no EPC; the new 8Mi node advertises sgx.intel.com/epc, so the
    # reason is its size, not "no node in the cluster advertises".
    snap = snapshot_of(node("plain"))
    reply, failures = serve(snap).filter_and_failures(nodes_body(POD, node("tiny", "8Mi")))
    why = "sgx.intel.com/epc: requested 16Mi, but the node has only 8Mi allocatable"
    assert reply == nodes_reply([], b"{}", compact({"tiny": why}))
    assert failures == FilterFailures(POD_RAW, {}, {"tiny": why})


def test_a_new_node_adds_to_the_advertisers_the_cache_counts() -> None:
    # One cached node and one new node advertise the name: two in all, and the reason is the
    # new node's size (a count of zero would blame the whole cluster instead).
    snap = snapshot_of(node("a", "1Gi"))
    reply, _ = serve(snap).filter_and_failures(nodes_body(POD, node("a", "1Gi"), node("t", "8Mi")))
    assert reply == nodes_reply([node("a", "1Gi")], b"{}", compact({"t": SMALL_C}))


def test_a_new_node_without_the_name_lists_the_names_the_cluster_advertises() -> None:
    # The pod asks for the legacy name: neither the cache's node nor the new one has it, and
    # the reason lists what the cluster does advertise (a's sgx.intel.com/epc).
    legacy = pod("old", "16", resource=LEGACY)
    snap = snapshot_of(node("a", "1Gi"))
    reply, failures = serve(snap).filter_and_failures(nodes_body(legacy, node("new", "1Gi")))
    why = (
        f"no node in the cluster advertises {LEGACY} (EPC resources advertised: sgx.intel.com/epc)"
    )
    assert reply == nodes_reply([], b"{}", compact({"new": why}))
    assert failures == FilterFailures(compact(legacy), {}, {"new": why})


# ----- which mode a body takes -----------------------------------------------------------------
def test_a_body_with_both_lists_is_read_in_full_nodes_mode() -> None:
    # NodeNames first, so the list is not the body's tail; Nodes is set, so Nodes decides:
    # the reply carries Node objects, and b (in NodeNames only) is not considered.
    snap = snapshot_of(node("a", "1Gi"), node("b", "1Gi"))
    body = compact(
        {
            "Pod": POD,
            "NodeNames": ["a", "b"],
            "Nodes": {"metadata": {}, "items": [node("a", "1Gi")]},
        }
    )
    reply, failures = serve(snap).filter_and_failures(body)
    assert reply == nodes_reply([node("a", "1Gi")], b"{}", b"{}")
    assert failures is None


def test_a_tail_that_is_not_the_names_value_is_reread_and_then_nodes_decide() -> None:
    # The body ends in `]}` after a later key, so the slice after "NodeNames": runs on past
    # the array; the full reading finds Nodes set as well, and Nodes decides.
    snap = snapshot_of(node("a", "1Gi"), node("b", "1Gi"))
    body = (
        b'{"Pod":'
        + POD_RAW
        + b',"NodeNames":["a","b"],"Nodes":{"metadata":{},"items":['
        + compact(node("a", "1Gi"))
        + b']},"x":["y"]}'
    )
    service = serve(snap)
    assert service.filter(body) == nodes_reply([node("a", "1Gi")], b"{}", b"{}")
    # Prioritize reads it the same way: one identical node, nothing decisive.
    assert service.prioritize(body) == b"[]"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"Pod":null,"NodeNames":["a"]}',
            "missing Pod: the request must carry the pod being scheduled",
        ),
        (b'{"Pod":' + POD_RAW + b"}", "the request has neither NodeNames nor Nodes"),
        (
            b'{"Pod":' + POD_RAW + b',"NodeNames":null,"Nodes":null}',
            "the request has neither NodeNames nor Nodes",
        ),
        (
            b'{"Pod":' + POD_RAW + b',"NodeNames":[1]}',
            "NodeNames: Expected `str`, got `int` - at `$[0]`",
        ),
        (
            b'{"Pod":' + POD_RAW + b',"Nodes":{"items":[{"metadata":{}}]}}',
            "Nodes: items[0] has no metadata.name",
        ),
    ],
)
def test_a_bad_body_is_a_bad_request_with_one_line(body: bytes, message: str) -> None:
    service = serve(mixed())
    with pytest.raises(wire.BadRequest) as caught:
        service.filter(body)
    assert str(caught.value) == message
    with pytest.raises(wire.BadRequest) as caught:
        service.prioritize(body)
    assert str(caught.value) == message


def test_a_pod_with_a_bad_quantity_names_the_pod() -> None:
    bad = pod("q", "16Mi")
    bad["spec"]["containers"][0]["resources"]["requests"]["sgx.intel.com/epc"] = "lots"
    with pytest.raises(wire.BadRequest) as caught:
        serve(mixed()).filter(names_body(bad, "a"))
    # The pod's own path to the bad value, after "Pod: ".
    assert str(caught.value) == (
        "Pod: spec.containers[0].resources.requests[sgx.intel.com/epc]: invalid quantity 'lots'"
    )


# ----- full-nodes mode: prioritize ---------------------------------------------------------------
def test_full_nodes_prioritize_of_alike_nodes_is_empty() -> None:
    # Two empty 1Gi nodes: the same raw score, so both 10, and a score all share decides nothing.
    snap = snapshot_of(node("a", "1Gi"), node("b", "1Gi"))
    reply = serve(snap).prioritize(nodes_body(POD, node("a", "1Gi"), node("b", "1Gi")))
    assert reply == b"[]"


def test_full_nodes_prioritize_spreads_and_rounds_half_up() -> None:
    # Binpack, 16Mi pod on 1Gi nodes, share in use after placement: a 16/1024, c 144/1024
    # (128Mi held), b 528/1024 (512Mi held). Spread over 0..10: a 0, b 10,
    # c (144-16)/(528-16) = 0.25 -> 2.5, rounded half up to 3. a scores 0 and is left out.
    snap = snapshot_of(
        node("a", "1Gi"),
        node("b", "1Gi"),
        node("c", "1Gi"),
        pod("x", "512Mi", node_name="b"),
        pod("y", "128Mi", node_name="c"),
    )
    objects = [node("a", "1Gi"), node("b", "1Gi"), node("c", "1Gi")]
    assert serve(snap).prioritize(nodes_body(POD, *objects)) == (
        b'[{"Host":"b","Score":10},{"Host":"c","Score":3}]'
    )


def test_full_nodes_prioritize_keeps_a_plain_pod_off_cached_sgx_nodes_only_when_asked() -> None:
    # a has EPC, p has none; a plain pod fits both. Preferring non-SGX: p 10, a 0. Not
    # preferring: both alike, so nothing decisive.
    snap = snapshot_of(node("a", "1Gi"), node("p"))
    body = nodes_body(PLAIN, node("a", "1Gi"), node("p"))
    assert serve(snap).prioritize(body) == b'[{"Host":"p","Score":10}]'
    assert serve(snap, prefer_non_sgx=False).prioritize(body) == b"[]"


def test_full_nodes_prioritize_keeps_a_plain_pod_off_new_sgx_nodes_only_when_asked() -> None:
    # As above, with both nodes new to the cache (read from the request's objects).
    snap = snapshot_of(node("other", "1Gi"))
    body = nodes_body(PLAIN, node("a", "1Gi"), node("p"))
    assert serve(snap).prioritize(body) == b'[{"Host":"p","Score":10}]'
    assert serve(snap, prefer_non_sgx=False).prioritize(body) == b"[]"


def test_full_nodes_prioritize_scores_a_new_node_from_its_own_object() -> None:
    # Cached a: 1Gi with 512Mi held (binpack raw 528/1024). New n: 1Gi empty (16/1024).
    # a 10, n 0.
    snap = snapshot_of(node("a", "1Gi"), pod("x", "512Mi", node_name="a"))
    body = nodes_body(POD, node("n", "1Gi"), node("a", "1Gi"))
    assert serve(snap).prioritize(body) == b'[{"Host":"a","Score":10}]'


# ----- names mode: prioritize ------------------------------------------------------------------
def test_names_prioritize_of_alike_nodes_is_empty() -> None:
    snap = snapshot_of(node("a", "1Gi"), node("b", "1Gi"), node("c", "1Gi"))
    service = serve(snap)
    body = names_body(POD, "a", "b", "c")
    assert service.filter(body) == b'{"NodeNames":["a","b","c"],' + NO_FAILURES + b"}"
    assert service.prioritize(body) == b"[]"


def test_names_prioritize_spreads_and_rounds_half_up() -> None:
    # As in the full-nodes case: a 0, b 10, c 3 (2.5 rounded up).
    snap = snapshot_of(
        node("a", "1Gi"),
        node("b", "1Gi"),
        node("c", "1Gi"),
        pod("x", "512Mi", node_name="b"),
        pod("y", "128Mi", node_name="c"),
    )
    service = serve(snap)
    body = names_body(POD, "a", "b", "c")
    service.filter(body)
    assert json.loads(service.prioritize(body)) == [
        {"Score": 10, "Host": "b"},
        {"Score": 3, "Host": "c"},
    ]


def test_names_prioritize_with_an_unknown_name_keeps_plain_pods_off_sgx_only_when_asked() -> None:
    # ghost is no node, so the general scoring runs: ghost is not eligible (0); a has EPC (0
    # when preferring non-SGX), p none (10). Not preferring: a and p alike at 10, ghost 0.
    snap = snapshot_of(node("a", "1Gi"), node("p"))
    body = names_body(PLAIN, "a", "p", "ghost")
    assert serve(snap).prioritize(body) == b'[{"Score":10,"Host":"p"}]'
    assert serve(snap, prefer_non_sgx=False).prioritize(body) == (
        b'[{"Score":10,"Host":"a"},{"Score":10,"Host":"p"}]'
    )


def spread_three() -> ClusterSnapshot:
    """a: 1Gi empty. b: 1Gi, 512Mi held. c: 64Mi empty."""
    snap: ClusterSnapshot = snapshot_of(
        node("a", "1Gi"), node("b", "1Gi"), node("c", "64Mi"), pod("x", "512Mi", node_name="b")
    )
    return snap


def test_prioritize_does_not_take_its_filters_fit_for_another_list() -> None:
    # The filter passes a and b whole. Prioritize then asks about a, b and t (8Mi, too small),
    # with nothing changed: t must not score. Binpack over a (16/1024) and b (528/1024): b 10.
    snap = snapshot_of(
        node("a", "1Gi"), node("b", "1Gi"), node("t", "8Mi"), pod("x", "512Mi", node_name="b")
    )
    service = serve(snap)
    assert service.filter(names_body(POD, "a", "b")) == (
        b'{"NodeNames":["a","b"],' + NO_FAILURES + b"}"
    )
    assert service.prioritize(names_body(POD, "a", "b", "t")) == b'[{"Score":10,"Host":"b"}]'


def test_prioritize_does_not_take_its_filters_fit_for_another_pod() -> None:
    # The filter passes a, b and c whole for a 16Mi pod. Prioritize then asks about the same
    # list for a 600Mi pod, which fits only a (b has 512Mi free, c 64Mi): a alone is eligible,
    # and the only eligible candidate scores 10.
    snap = spread_three()
    service = serve(snap)
    service.filter(names_body(POD, "a", "b", "c"))
    big = pod("big", "600Mi")
    assert service.prioritize(names_body(big, "a", "b", "c")) == b'[{"Score":10,"Host":"a"}]'


def test_a_filter_that_passes_all_leaves_its_fit_for_prioritize() -> None:
    snap = spread_three()
    service = serve(snap)
    body = names_body(POD, "a", "b", "c")
    service.filter(body)
    _, slots, request = service._parse(body, snap)
    fits = service._fits
    assert fits is not None
    assert fits[0] == snap.version and fits[1] is slots and fits[2] is request
    # Prioritize reads the per-kind score table (one kind of pod: one table). Binpack shares
    # after placement: a 16/1024, b 528/1024, c 16/64 = 0.25. Spread: a 0, b 10,
    # c (0.25 - 0.015625) / 0.5 * 10 = 4.6875, rounded to 5.
    assert json.loads(service.prioritize(body)) == [
        {"Score": 10, "Host": "b"},
        {"Score": 5, "Host": "c"},
    ]
    assert len(service._scores._tables) == 1


def test_a_node_added_between_filter_and_prioritize_is_read_afresh() -> None:
    # At filter time n is no node; then it joins (1Gi with 512Mi held) and the same bytes come
    # to prioritize: n now scores 10 against a's 0.
    snap = snapshot_of(node("a", "1Gi"))
    service = serve(snap)
    body = names_body(POD, "a", "n")
    assert json.loads(service.filter(body))["FailedNodes"] == {"n": GONE}
    grown = snapshot_of(node("n", "1Gi"), pod("x", "512Mi", node_name="n"))
    snap.upsert_node(grown.infos[0])
    snap.upsert_pod(grown.pods["default/x"])
    assert service.prioritize(body) == b'[{"Score":10,"Host":"n"}]'


# ----- caches ----------------------------------------------------------------------------------
def test_a_repeated_body_is_parsed_once_until_the_node_set_changes() -> None:
    snap = snapshot_of(node("a", "1Gi"))
    service = serve(snap)
    body = names_body(POD, "a")
    first = service._parse(body, snap)
    assert service._parse(body, snap) is first
    # The same length, other bytes: parsed on their own.
    other = names_body(POD, "b")
    assert service._parse(other, snap) is not first
    assert service._parse(other, snap) is service._parse(other, snap)
    # A node joins: the generation changes and the body is read again.
    snap.upsert_node(snapshot_of(node("b", "1Gi")).infos[0])
    again = service._parse(body, snap)
    assert again is not first
    assert again[1] is not None and again[1].tolist() == [snap.slots["a"]]


def test_the_same_pod_bytes_give_the_same_request() -> None:
    snap = mixed()
    service = serve(snap)
    first = service.pod_request(POD_RAW, snap)
    assert service.pod_request(POD_RAW, snap) is first
    assert list(service._pods) == [POD_RAW]


def test_pods_differing_only_outside_spec_share_one_request() -> None:
    # Two replicas: other names and uids, one spec. A third pod asks for more EPC.
    snap = mixed()
    service = serve(snap)
    one, two, other = pod("r-1", "16Mi"), pod("r-2", "16Mi"), pod("r-3", "32Mi")
    first = service.pod_request(compact(one), snap)
    assert service.pod_request(compact(two), snap) is first
    third = service.pod_request(compact(other), snap)
    assert third is not first
    assert third.epc == {"sgx.intel.com/epc": 32 * 2**20}
    assert list(service._pods) == [compact(one), compact(two), compact(other)]
    assert len(service._specs) == 2


def test_the_pod_caches_hold_exactly_their_bound_and_drop_the_least_recent() -> None:
    snap = mixed()
    service = serve(snap)
    size = service_module._POD_CACHE_SIZE
    # Distinct specs (1Mi, 2Mi, ...): one entry in each cache per pod.
    raws = [compact(pod(f"p{i}", f"{i + 1}Mi")) for i in range(size + 1)]
    requests = [service.pod_request(raw, snap) for raw in raws[:size]]
    assert len(service._pods) == size
    assert len(service._specs) == size
    # Asking for the first again makes it the most recent, so the second is dropped next.
    assert service.pod_request(raws[0], snap) is requests[0]
    service.pod_request(raws[size], snap)
    assert len(service._pods) == size
    assert len(service._specs) == size
    assert raws[1] not in service._pods
    assert raws[0] in service._pods
    assert raws[size] in service._pods
    assert service.pod_request(raws[0], snap) is requests[0]
