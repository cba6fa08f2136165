"""A list naming most nodes is answered from figures kept over it, with the same replies.

Protects issue 10's cover (`extender.cover`): when kube-scheduler's list is every node but those
its own filters left out, in a new order of its chunks each time, the resolver recognises it by
the runs it was read from and the service answers fit from the least free EPC kept over the
candidates, and prioritize from the lowest raw score and the candidates above it, each followed
node by node through the snapshot's change log. These tests change the cluster between requests
(binds, deletions, usage, pressure) and check each reply by hand, or against a fresh service
that reads the list in full. Bodies are compact JSON, as kube-scheduler writes them, so that the
resolver reads them by runs.
"""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from epcsched.core.snapshot import ClusterSnapshot
from epcsched.extender.cover import Cover
from epcsched.extender.names import NameResolver
from epcsched.extender.service import ExtenderService
from epcsched.quantity import MIB
from tests.helpers import EPC, node, pod, snapshot_of
from tests.helpers import running_on as bound

NAMES = [f"n{i}" for i in range(9)]
CHUNKS = [NAMES[0:3], NAMES[3:6], NAMES[6:9]]
STABLE = [[2, 1, 0], [1, 0, 2], [0, 2, 1]]
"""Orders of the chunks where none follows its predecessor: each list is read chunk by chunk,
so lists with the same nodes left out are read from the same runs and share a cover."""


def body(names: list[str], epc: str = "64Mi", name: str = "p") -> bytes:
    """A compact cache-mode body (kube-scheduler's encoding) for pod `name` over `names`."""
    return json.dumps(
        {"Pod": pod(name, epc), "Nodes": None, "NodeNames": names}, separators=(",", ":")
    ).encode()


def shuffled(order: list[int], left_out: tuple[str, ...] = ()) -> list[str]:
    """The nodes chunk by chunk in `order`, without `left_out` (kube-scheduler's own filters)."""
    return [n for k in order for n in CHUNKS[k] if n not in left_out]


def cluster(*pods: dict[str, object]) -> ClusterSnapshot:
    snap: ClusterSnapshot = snapshot_of(*(node(n, "1Gi") for n in NAMES), *pods)
    return snap


def taught(snap: ClusterSnapshot, strategy: str = "binpack") -> ExtenderService:
    """A service that has read the list once in full (its reference order) and once by runs."""
    service = ExtenderService(lambda: snap, strategy=strategy)
    service.filter(body(NAMES, name="first"))
    # In this order no chunk follows the one before it in the reference: the runs read are
    # the chunks themselves, as in the orders `STABLE` lists.
    service.filter(body(shuffled([2, 1, 0]), name="second"))
    return service


def reply(service: ExtenderService, request: bytes) -> tuple[list[str], dict[str, str]]:
    answer = json.loads(service.filter(request))
    return sorted(answer["NodeNames"]), {
        **answer["FailedNodes"],
        **answer["FailedAndUnresolvableNodes"],
    }


def scores(service: ExtenderService, request: bytes) -> dict[str, int]:
    return {e["Host"]: e["Score"] for e in json.loads(service.prioritize(request))}


def as_fresh(
    service: ExtenderService, snap: ClusterSnapshot, request: bytes, strategy: str = "binpack"
) -> dict[str, int]:
    """Check `service`'s filter and prioritize replies equal those of a fresh service over the
    same snapshot (which reads the list in full); the prioritize scores."""
    fresh = ExtenderService(lambda: snap, strategy=strategy)
    assert reply(service, request) == reply(fresh, request)
    ours = scores(service, request)
    assert ours == scores(fresh, request)
    return ours


def test_the_resolver_finds_the_cover_of_every_node_but_a_few() -> None:
    snap = cluster()
    resolver = NameResolver()
    # Read in full first: that list becomes the reference, and makes no cover yet.
    first = resolver.resolve(json.dumps(NAMES, separators=(",", ":")).encode(), snap)
    assert resolver.cover(first, snap) is None
    slots = resolver.resolve(
        json.dumps(shuffled([1, 2, 0], ("n4",)), separators=(",", ":")).encode(), snap
    )
    cover = resolver.cover(slots, snap)
    assert cover is not None
    assert cover.excluded == {snap.slots["n4"]}
    assert sorted(cover.members.tolist()) == sorted(slots.tolist())
    # Another array, even with the same slots, is not the one the cover was found for.
    assert resolver.cover(slots.copy(), snap) is None
    # A node added makes a new generation: the cover no longer says which nodes are listed.
    snap.upsert_node(_node_info("n9"))
    assert resolver.cover(slots, snap) is None


def test_any_order_answers_a_known_cover_with_its_own_slots() -> None:
    snap = cluster()
    resolver = NameResolver()
    resolver.resolve(json.dumps(NAMES, separators=(",", ":")).encode(), snap)
    # Chunks in orders where none follows the one before it in the reference: each list is
    # read as the same runs (n6, n8, n3..n5, n0..n2; n7 is left out).
    order = shuffled([2, 1, 0], ("n7",))
    raw = json.dumps(order, separators=(",", ":")).encode()
    in_order = snap.slots_of(order).tolist()
    # The first read finds the cover, and answers in the list's order either way.
    assert resolver.resolve(raw, snap, any_order=True).tolist() == in_order
    other = json.dumps(shuffled([1, 0, 2], ("n7",)), separators=(",", ":")).encode()
    # The cover known, another order of the same runs: its slots in their own (ascending)
    # order with any_order, and the list's own order without.
    unordered = resolver.resolve(other, snap, any_order=True)
    assert unordered.tolist() == sorted(in_order)
    assert resolver.cover(unordered, snap) is not None
    assert resolver.resolve(other, snap).tolist() == snap.slots_of(json.loads(other)).tolist()


def _node_info(name: str) -> object:
    import msgspec

    from epcsched.objects import Node, node_info
    from epcsched.quantity import DEFAULT_EPC_RESOURCES

    return node_info(msgspec.convert(node(name, "1Gi"), Node), DEFAULT_EPC_RESOURCES)


def test_a_list_with_a_name_twice_makes_no_cover() -> None:
    snap = cluster()
    # Nine names, one of them twice and n8 missing: as long as every node's list, not a cover.
    twice = [*NAMES[:8], "n0"]
    assert Cover.of(snap.slots_of(twice), snap) is None
    # A name the snapshot does not know (-1) makes none either.
    assert Cover.of(snap.slots_of([*NAMES[:8], "ghost"]), snap) is None


def test_a_list_of_fewer_than_half_the_nodes_makes_no_cover() -> None:
    names = [f"m{i}" for i in range(10)]
    snap: ClusterSnapshot = snapshot_of(*(node(n, "1Gi") for n in names))
    # Five of ten nodes, exactly half: a cover; four: none.
    assert Cover.of(snap.slots_of(names[5:]), snap) is not None
    assert Cover.of(snap.slots_of(names[6:]), snap) is None
    # With eleven nodes, five is fewer than half.
    snap.upsert_node(_node_info("m10"))  # type: ignore[arg-type]
    assert Cover.of(snap.slots_of(names[5:]), snap) is None


def test_nodes_without_epc_left_out_still_make_a_cover() -> None:
    # Nine SGX nodes and six without EPC: kube-scheduler's own fit leaves the six out for an
    # EPC pod, and nine of fifteen is more than half: a cover, answered as a fresh service does.
    plain = [f"p{i}" for i in range(6)]
    snap: ClusterSnapshot = snapshot_of(
        *(node(n, "1Gi") for n in NAMES),
        *(node(n) for n in plain),
        pod("x", "900Mi", node_name="n4"),
    )
    service = ExtenderService(lambda: snap, strategy="binpack")
    service.filter(body([*NAMES, *plain], name="first"))
    service.filter(body(shuffled([2, 1, 0]), name="second"))
    for i, (order, mib) in enumerate([([1, 0, 2], "100Mi"), ([0, 2, 1], "200Mi")]):
        request = body(shuffled(order), mib, name=f"q{i}")
        as_fresh(service, snap, request)
        cover = known_cover(service, snap)
        assert cover.excluded == {snap.slots[n] for n in plain}
    # n4 has 124Mi free: 100Mi fits everywhere, 200Mi fails n4 alone.
    assert reply(service, body(shuffled([2, 0, 1]), "200Mi", name="r"))[1].keys() == {"n4"}


def test_fit_follows_the_least_free_candidate() -> None:
    # n0 holds 900Mi of its 1Gi: 124Mi free, the least; the rest are empty.
    snap = cluster(pod("x", "900Mi", node_name="n0"))
    service = taught(snap)
    # 100Mi fits n0 (124Mi free) and every other node.
    assert reply(service, body(shuffled([1, 0, 2]), "100Mi")) == (NAMES, {})
    # 30Mi more on n0: 94Mi free, below 100Mi; the floor falls with it.
    snap.upsert_pod(bound("y", "30Mi", "n0"))  # type: ignore[arg-type]
    service.refresh()
    passed, failed = reply(service, body(shuffled([0, 2, 1]), "100Mi"))
    assert passed == NAMES[1:]
    assert list(failed) == ["n0"]
    # Left out by kube-scheduler (full for it), n0 no longer counts: the rest fit.
    assert reply(service, body(shuffled([2, 1, 0], ("n0",)), "100Mi")) == (NAMES[1:], {})
    # What lands on n0 while it is left out changes nothing for the candidates.
    snap.upsert_pod(bound("v", "90Mi", "n0"))  # type: ignore[arg-type]
    assert reply(service, body(shuffled([1, 0, 2], ("n0",)), "100Mi")) == (NAMES[1:], {})
    # 950Mi lands on n5: 74Mi free, now the least among the candidates without n0.
    snap.upsert_pod(bound("z", "950Mi", "n5"))  # type: ignore[arg-type]
    passed, failed = reply(service, body(shuffled([1, 2, 0], ("n0",)), "100Mi"))
    assert list(failed) == ["n5"]
    # n5's pod goes: it held the least, which must be found again (n1..n8 empty: 1Gi).
    snap.remove_pod("default/z")
    assert reply(service, body(shuffled([0, 1, 2], ("n0",)), "1Gi")) == (NAMES[1:], {})
    # One byte more than an empty node has fits none of them.
    passed, failed = reply(service, body(shuffled([2, 0, 1], ("n0",)), "1025Mi"))
    assert passed == []
    assert sorted(failed) == NAMES[1:]


def test_binpack_scores_follow_the_partly_filled_candidates() -> None:
    snap = cluster(pod("x", "256Mi", node_name="n2"), pod("y", "512Mi", node_name="n7"))
    service = taught(snap)
    request = body(shuffled([1, 2, 0]), "64Mi", name="q")
    reply(service, request)
    # After placing 64Mi, of 1024Mi: n2 320, n7 576, the other seven 64 (the lowest, left
    # out). n7 scores 10; n2 (320-64)/(576-64) = 0.5 -> floor(5 + 0.5) = 5.
    assert scores(service, request) == {"n2": 5, "n7": 10}
    # 128Mi lands on n4: 192 once placed, (192-64)/512 = 0.25 -> floor(2.5 + 0.5) = 3.
    snap.upsert_pod(bound("z", "128Mi", "n4"))  # type: ignore[arg-type]
    service.refresh()
    request = body(shuffled([0, 2, 1]), "64Mi", name="r")
    reply(service, request)
    assert scores(service, request) == {"n2": 5, "n4": 3, "n7": 10}
    # n7's pod goes: n7 back with the lowest; spread over 64..320: n2 10, n4 128/256 -> 5.
    snap.remove_pod("default/y")
    request = body(shuffled([2, 1, 0]), "64Mi", name="s")
    reply(service, request)
    assert scores(service, request) == {"n2": 10, "n4": 5}
    # With n2 left out by kube-scheduler, n4 is the only one above the lowest: 10.
    request = body(shuffled([1, 0, 2], ("n2",)), "64Mi", name="t")
    reply(service, request)
    assert scores(service, request) == {"n4": 10}


def test_every_candidate_alike_scores_nothing() -> None:
    # Nine empty nodes: every raw score is the same, so nothing is listed.
    snap = cluster()
    service = taught(snap)
    request = body(shuffled([2, 1, 0]), name="q")
    reply(service, request)
    assert scores(service, request) == {}
    # The only partly filled node left out: the rest are alike again.
    snap.upsert_pod(bound("z", "128Mi", "n3"))  # type: ignore[arg-type]
    request = body(shuffled([0, 2, 1], ("n3",)), name="r")
    reply(service, request)
    assert scores(service, request) == {}


def test_every_candidate_filled_alike_but_one_scores_only_that_one() -> None:
    # Eight nodes hold 100Mi, n6 holds none: n6 is the lowest, the eight tie above it at 10.
    snap = cluster(*(pod(f"x{n}", "100Mi", node_name=n) for n in NAMES if n != "n6"))
    service = taught(snap)
    request = body(shuffled([1, 0, 2]), name="q")
    reply(service, request)
    # Eight of nine above the lowest: the general path answers, listing the eight at 10.
    assert scores(service, request) == {n: 10 for n in NAMES if n != "n6"}
    # Without n0 and n1, six of seven are above: still the general path, the same answer.
    request = body(shuffled([2, 1, 0], ("n0", "n1")), name="r")
    reply(service, request)
    assert scores(service, request) == {n: 10 for n in NAMES[2:] if n != "n6"}


def test_the_lowest_candidate_rising_is_looked_for_again() -> None:
    # n3 and n5 hold 100Mi, the rest none: the seven empty ones are the lowest.
    snap = cluster(pod("x", "100Mi", node_name="n3"), pod("y", "100Mi", node_name="n5"))
    service = taught(snap)
    left_out = ("n0", "n1", "n2", "n4", "n6", "n7")
    request = body(shuffled([0, 1, 2], left_out), name="q")
    reply(service, request)
    # Candidates n3, n5, n8: n8 alone the lowest; n3 and n5 tie above it at 10.
    assert scores(service, request) == {"n3": 10, "n5": 10}
    # 50Mi on n8, the only candidate with the lowest: n8 now 114 after placing 64Mi, still
    # the lowest, but found again; n3 and n5 (164) stay at 10.
    snap.upsert_pod(bound("z", "50Mi", "n8"))  # type: ignore[arg-type]
    request = body(shuffled([2, 0, 1], left_out), name="r")
    reply(service, request)
    assert scores(service, request) == {"n3": 10, "n5": 10}
    # 100Mi more on n8: 214, the highest; n3 and n5 now the lowest (164).
    snap.upsert_pod(bound("w", "100Mi", "n8"))  # type: ignore[arg-type]
    request = body(shuffled([1, 2, 0], left_out), name="s")
    reply(service, request)
    assert scores(service, request) == {"n8": 10}
    # What lands on a node left out changes nothing for the candidates.
    snap.upsert_pod(bound("v", "300Mi", "n0"))  # type: ignore[arg-type]
    request = body(shuffled([0, 2, 1], left_out), name="t")
    reply(service, request)
    assert scores(service, request) == {"n8": 10}
    # n3's pod goes: n3 at 64, below the lowest there was. Spread over 64..214: n5
    # (164-64)/150 = 0.67 -> floor(6.67 + 0.5) = 7, n8 10.
    snap.remove_pod("default/x")
    request = body(shuffled([2, 1, 0], left_out), name="u")
    reply(service, request)
    assert scores(service, request) == {"n5": 7, "n8": 10}


def big_cluster(nodes: int, filled: int, seed: int) -> tuple[ClusterSnapshot, list[str]]:
    """`nodes` 1Gi nodes, the first `filled` holding 10..10*filled Mi (all different)."""
    names = [f"b{i:03d}" for i in range(nodes)]
    rng = random.Random(seed)
    amounts = rng.sample(range(1, filled + 1), filled)
    pods = [pod(f"x{i}", f"{10 * a}Mi", node_name=names[i]) for i, a in enumerate(amounts)]
    snap: ClusterSnapshot = snapshot_of(*(node(n, "1Gi") for n in names), *pods)
    return snap, names


def chunked(names: list[str], size: int, rng: random.Random, left_out: int = 0) -> list[str]:
    chunks = [names[i : i + size] for i in range(0, len(names), size)]
    rng.shuffle(chunks)
    kept = [n for chunk in chunks for n in chunk]
    for gone in rng.sample(kept, left_out):
        kept.remove(gone)
    return kept


def test_many_candidates_above_the_lowest_are_spread_as_by_a_fresh_service() -> None:
    # 60 nodes, 20 of them partly filled (more than 16: spread with numpy, not one by one).
    snap, names = big_cluster(60, 20, seed=1)
    service = ExtenderService(lambda: snap, strategy="binpack")
    service.filter(body(names, name="first"))
    rng = random.Random(7)
    for i in range(6):
        request = body(chunked(names, 8, rng, left_out=i % 3), name=f"q{i}")
        ours = as_fresh(service, snap, request)
        # The fullest node after placement scores 10, and 20 nodes at most are listed.
        assert max(ours.values()) == 10
        assert len(ours) <= 20 + i  # the partly filled nodes: 20, and one per bind at most
        snap.upsert_pod(bound(f"y{i}", "30Mi", names[i * 7]))  # type: ignore[arg-type]


def test_more_than_a_cover_keeps_above_the_lowest_falls_back_to_the_general_way() -> None:
    # 140 nodes, 66 partly filled: too many above the lowest to keep, yet fewer than half.
    snap, names = big_cluster(140, 66, seed=2)
    service = ExtenderService(lambda: snap, strategy="binpack")
    service.filter(body(names, name="first"))
    rng = random.Random(3)
    for i in range(4):
        request = body(chunked(names, 12, rng), name=f"q{i}")
        as_fresh(service, snap, request)
        # A bind between requests: the figures over the cover are found again.
        snap.upsert_pod(bound(f"y{i}", "20Mi", names[100 + i]))  # type: ignore[arg-type]


events = st.lists(
    st.tuples(
        st.sampled_from(["bind", "delete", "usage", "poll", "pressure", "ask", "refresh"]),
        st.integers(min_value=0, max_value=8),
        st.sampled_from([16, 64, 128, 300, 700]),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(
    steps=events,
    seed=st.integers(min_value=0, max_value=2**16),
    strategy=st.sampled_from(["binpack", "spread", "balanced"]),
)
def test_replies_over_a_cover_equal_a_fresh_services(
    steps: list[tuple[str, int, int]], seed: int, strategy: str
) -> None:
    """Whatever happens between requests, the replies of a service that follows the cover equal
    those of a fresh service over the same snapshot, which reads the list in full."""
    rng = random.Random(seed)
    snap = cluster(pod("x", "600Mi", node_name="n1"))
    # Measured use counts (polls and usage events change what fits).
    snap.accounting = "max"
    service = taught(snap, strategy)
    bound_pods: list[str] = []
    for i, (kind, index, mib) in enumerate(steps):
        target = NAMES[index]
        if kind == "bind":
            snap.upsert_pod(bound(f"b{i}", f"{mib}Mi", target))  # type: ignore[arg-type]
            bound_pods.append(f"b{i}")
        elif kind == "delete" and bound_pods:
            snap.remove_pod("default/" + bound_pods.pop(index % len(bound_pods)))
        elif kind == "usage":
            snap.set_usage(target, mib * 2**20 if mib != 700 else None)
        elif kind == "poll":
            # A telemetry poll: every node's measured use at once (more than a few changed).
            for k, name in enumerate(NAMES):
                snap.set_usage(name, (mib + 40 * k) * 2**20)
        elif kind == "pressure":
            snap.set_pressure(target, "paging" if mib == 16 else None)
        elif kind == "refresh":
            service.refresh()
        else:
            order = rng.choice(STABLE)
            # A few sets of nodes left out, so that covers are asked about again.
            left_out = rng.choice([(), (), ("n0",), ("n4", "n8")])
            request = body(shuffled(order, left_out), f"{mib}Mi", name=f"q{i}")
            as_fresh(service, snap, request, strategy)


# ----- the work is kept off the request ------------------------------------------------------
# These look inside the service: the replies would be the same the slow way, and what they
# protect is that the way taken is the one that does not grow with the node count (point 3).


def known_cover(service: ExtenderService, snap: ClusterSnapshot) -> Cover:
    cover = service._resolver.current_cover(snap)
    assert cover is not None
    return cover


def test_a_filter_over_a_cover_reads_its_least_free_epc() -> None:
    snap = cluster(pod("x", "900Mi", node_name="n0"))
    service = taught(snap)
    # The runs of [2, 1, 0] are known: the list is answered from the cover's floor (124Mi).
    assert reply(service, body(shuffled([1, 0, 2]), "124Mi", name="q")) == (NAMES, {})
    cover = known_cover(service, snap)
    assert cover._floors[EPC].low == 124 * MIB
    # The list was read where it lies in the body, and its slots are the cover's own.
    last = service._last
    assert last is not None
    assert last[2][1] is cover.members


def test_a_pod_exactly_filling_the_least_free_candidate_is_answered_ahead() -> None:
    # n0 holds 960Mi: 64Mi free, exactly what the pod asks. It fits every candidate, so the
    # filter passes the whole list and its prioritize is answered ahead of its request.
    snap = cluster(pod("x", "960Mi", node_name="n0"))
    service = taught(snap)
    first = body(shuffled([1, 0, 2]), "64Mi", name="q")
    assert reply(service, first) == (NAMES, {})
    service.prioritize(first)
    second = body(shuffled([0, 2, 1]), "64Mi", name="r")
    assert reply(service, second) == (NAMES, {})
    service.prioritize_ahead()
    assert service._ahead is not None
    ready = service._ahead[2]
    assert service.prioritize(second) is ready


def test_the_list_is_read_in_place_in_the_body() -> None:
    snap = cluster()
    service = taught(snap)
    request = body(shuffled([0, 2, 1]), name="q")
    service.filter(request)
    held = [view.obj for view, _, _ in service._resolver._recent.values()]
    assert any(obj is request for obj in held)


def test_prioritize_after_a_change_answers_from_the_cover() -> None:
    snap = cluster(pod("x", "256Mi", node_name="n2"))
    service = taught(snap)
    request = body(shuffled([2, 1, 0]), "64Mi", name="q")
    reply(service, request)
    # A bind between filter and prioritize: the filter's finding is not reused, the cover's
    # floor says the pod still fits every candidate, and the scores come from the cover.
    snap.upsert_pod(bound("y", "512Mi", "n7"))  # type: ignore[arg-type]
    cover = known_cover(service, snap)
    assert cover._spreads == {}
    # n2 (256+64)/1024, n7 (512+64)/1024, the rest 64/1024: n7 10, n2 256/512 -> 5.
    assert scores(service, request) == {"n2": 5, "n7": 10}
    [spread] = cover._spreads.values()
    assert spread.above is not None and len(spread.above) == 2


def test_a_refresh_brings_the_covers_figures_up_to_date() -> None:
    snap = cluster(pod("x", "256Mi", node_name="n2"))
    service = taught(snap)
    request = body(shuffled([1, 0, 2]), "64Mi", name="q")
    reply(service, request)
    scores(service, request)
    cover = known_cover(service, snap)
    snap.upsert_pod(bound("y", "128Mi", "n4"))  # type: ignore[arg-type]
    service.refresh()
    # Both figures have followed the bind already: the next request finds them current.
    [spread] = cover._spreads.values()
    assert cover._floors[EPC].mark == snap.mark() == spread.mark
    assert spread.above is not None and sorted(spread.above) == sorted(
        [snap.slots["n2"], snap.slots["n4"]]
    )
