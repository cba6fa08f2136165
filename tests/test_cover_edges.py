"""A cover's figures follow one changed node at a time, and are found again only when they must.

Protects issue 10's point 3 in `extender.cover`: after a bind or a deletion changes one node,
the least free EPC over the candidates and the lowest raw score with the candidates above it
are updated for that node, not gathered again from every candidate (the same state object is
kept); they are found again after a change in bulk, more changes than a few, or when the node
holding the least gains. Every figure is worked out by hand: nodes of 1Gi (1024Mi) unless
said, binpack's raw score is the node's share of EPC used once the 64Mi pod is placed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from epcsched.core.fit import PodRequest
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.extender.cover import Cover, Spread
from epcsched.extender.scores import ScoreTables
from epcsched.quantity import MIB
from tests.helpers import EPC, node, pod, snapshot_of
from tests.helpers import running_on as bound

NAMES = [f"n{i}" for i in range(9)]
POD = PodRequest(epc={EPC: 64 * MIB})


def cover_of(snap: ClusterSnapshot, *left_out: str) -> Cover:
    cover = Cover.of(snap.slots_of([n for n in NAMES if n not in left_out]), snap)
    assert cover is not None
    return cover


def state(cover: Cover) -> Any:
    return cover._floors[EPC]


def test_the_floor_follows_binds_on_one_node_at_a_time() -> None:
    # n0 holds 900Mi: 124Mi free, the least.
    snap: ClusterSnapshot = snapshot_of(
        *(node(n, "1Gi") for n in NAMES), pod("x", "900Mi", node_name="n0")
    )
    cover = cover_of(snap)
    assert cover.floor(snap, EPC) == 124 * MIB
    first = state(cover)
    assert first.holder == snap.slots["n0"]
    # 30Mi more on n0: 94Mi, followed (the same state), n0 still holding it.
    snap.upsert_pod(bound("y", "30Mi", "n0"))  # type: ignore[arg-type]
    assert cover.floor(snap, EPC) == 94 * MIB
    assert state(cover) is first
    # 950Mi on n5: 74Mi, below; n5 holds the least now, still followed.
    snap.upsert_pod(bound("z", "950Mi", "n5"))  # type: ignore[arg-type]
    assert cover.floor(snap, EPC) == 74 * MIB
    assert (state(cover) is first, first.holder) == (True, snap.slots["n5"])
    # 74Mi on n3: 950Mi free, above the floor; nothing moves.
    snap.upsert_pod(bound("w", "74Mi", "n3"))  # type: ignore[arg-type]
    assert cover.floor(snap, EPC) == 74 * MIB
    assert (state(cover) is first, first.holder) == (True, snap.slots["n5"])
    # 950Mi on n6 too: the same 74Mi, a tie; n5 keeps holding it.
    snap.upsert_pod(bound("v", "950Mi", "n6"))  # type: ignore[arg-type]
    assert cover.floor(snap, EPC) == 74 * MIB
    assert (state(cover) is first, first.holder) == (True, snap.slots["n5"])
    # n5 touched without its free EPC moving (measured use, which requests accounting does
    # not count): still followed.
    snap.set_usage("n5", 10 * MIB)
    assert cover.floor(snap, EPC) == 74 * MIB
    assert (state(cover) is first, first.holder) == (True, snap.slots["n5"])
    # n5's pod goes: the holder gains, so the least is found again: n6's 74Mi.
    snap.remove_pod("default/z")
    assert cover.floor(snap, EPC) == 74 * MIB
    assert state(cover) is not first
    assert state(cover).holder == snap.slots["n6"]
    # n6's pod goes: found again, n0's 94Mi.
    snap.remove_pod("default/v")
    assert cover.floor(snap, EPC) == 94 * MIB
    assert state(cover).holder == snap.slots["n0"]


def test_a_node_left_out_does_not_move_the_floor_and_the_next_change_still_counts() -> None:
    snap: ClusterSnapshot = snapshot_of(
        *(node(n, "1Gi") for n in NAMES), pod("x", "900Mi", node_name="n0")
    )
    cover = cover_of(snap, "n8")
    assert cover.floor(snap, EPC) == 124 * MIB
    first = state(cover)
    # In one interval: 1000Mi on n8 (left out: 24Mi free, not a candidate), then 1000Mi on
    # n2 (a candidate: 24Mi free, the least now).
    snap.upsert_pod(bound("y", "1000Mi", "n8"))  # type: ignore[arg-type]
    snap.upsert_pod(bound("z", "1000Mi", "n2"))  # type: ignore[arg-type]
    assert cover.floor(snap, EPC) == 24 * MIB
    assert (state(cover) is first, first.holder) == (True, snap.slots["n2"])


def test_the_floor_is_found_again_after_many_changes_or_a_change_in_bulk() -> None:
    snap: ClusterSnapshot = snapshot_of(*(node(n, "1Gi") for n in NAMES))
    snap.accounting = "max"
    cover = cover_of(snap)
    assert cover.floor(snap, EPC) == 1024 * MIB
    first = state(cover)
    # Nine nodes' measured use at once (a telemetry poll): more than a few, found again.
    # n_i uses 100 + 10*i Mi: the least free is n8, 1024 - 180 = 844Mi.
    for i, name in enumerate(NAMES):
        snap.set_usage(name, (100 + 10 * i) * MIB)
    assert cover.floor(snap, EPC) == 844 * MIB
    second = state(cover)
    assert second is not first
    assert second.holder == snap.slots["n8"]
    # Eight changes are still followed: n0..n7 use 200Mi, n8 stays at 180Mi; 824Mi is the
    # least, held by each of the eight (the first of them changed, n0, takes it).
    for name in NAMES[:8]:
        snap.set_usage(name, 200 * MIB)
    assert cover.floor(snap, EPC) == 824 * MIB
    assert state(cover) is second
    # All usage cleared (in bulk): found again, every node empty.
    snap.clear_usage()
    assert cover.floor(snap, EPC) == 1024 * MIB
    assert state(cover) is not second


def test_a_cover_is_none_for_a_single_missing_node_too_many_or_a_read_only_list() -> None:
    snap: ClusterSnapshot = snapshot_of(node("a", "1Gi"))
    # One node, listed: a cover of one candidate.
    one = Cover.of(snap.slots_of(["a"]), snap)
    assert one is not None and one.members.tolist() == [snap.slots["a"]]
    # Its slots are handed out as a list's: read-only.
    assert not one.members.flags.writeable
    # Nothing listed: no cover.
    assert Cover.of(np.zeros(0, dtype=np.int64), snap) is None


def spread(snap: ClusterSnapshot, tables: ScoreTables, cover: Cover) -> Spread:
    """The spread over the cover for POD's kind, after scoring (which brings the table up)."""
    tables.above_lowest_over(snap, POD, cover)
    return kept(cover)


def kept(cover: Cover) -> Spread:
    """The one spread `cover` keeps (these tests score one kind of pod)."""
    [only] = cover._spreads.values()
    return only


def filled(nodes: int, count: int) -> tuple[ClusterSnapshot, list[str], Cover]:
    """`nodes` 1Gi nodes, the first `count` holding 1..count Mi, and the cover of them all."""
    names = [f"b{i:03d}" for i in range(nodes)]
    snap: ClusterSnapshot = snapshot_of(
        *(node(n, "1Gi") for n in names),
        *(pod(f"x{i}", f"{i + 1}Mi", node_name=names[i]) for i in range(count)),
    )
    cover = Cover.of(snap.slots_of(names), snap)
    assert cover is not None
    return snap, names, cover


def above(snap: ClusterSnapshot, found: Spread) -> dict[str, float]:
    names = snap.slot_names
    assert found.above is not None
    return {str(names[s]): v for s, v in found.above.items()}


def test_the_lowest_score_and_those_above_it_follow_binds() -> None:
    snap: ClusterSnapshot = snapshot_of(
        *(node(n, "1Gi") for n in NAMES),
        pod("x", "256Mi", node_name="n2"),
        pod("y", "512Mi", node_name="n7"),
    )
    tables = ScoreTables("binpack", prefer_non_sgx=True)
    cover = cover_of(snap)
    first = spread(snap, tables, cover)
    # Once 64Mi placed: n2 320/1024, n7 576/1024, the seven others 64/1024 (the lowest).
    assert (first.low, first.at_low) == (64 / 1024, 7)
    assert above(snap, first) == {"n2": 320 / 1024, "n7": 576 / 1024}
    # 128Mi on n4: 192/1024, above; followed, six at the lowest.
    snap.upsert_pod(bound("z", "128Mi", "n4"))  # type: ignore[arg-type]
    assert spread(snap, tables, cover) is first
    assert first.at_low == 6
    assert above(snap, first) == {"n2": 320 / 1024, "n7": 576 / 1024, "n4": 192 / 1024}
    # 64Mi more on n2: 384/1024, still above.
    snap.upsert_pod(bound("w", "64Mi", "n2"))  # type: ignore[arg-type]
    assert spread(snap, tables, cover) is first
    assert (first.at_low, above(snap, first)["n2"]) == (6, 384 / 1024)
    # n7's pod goes: n7 back at the lowest, seven there again.
    snap.remove_pod("default/y")
    assert spread(snap, tables, cover) is first
    assert first.at_low == 7
    assert above(snap, first) == {"n2": 384 / 1024, "n4": 192 / 1024}


def test_the_lowest_is_found_again_when_a_candidate_falls_below_it_or_none_is_left_there() -> None:
    # n8 has 2Gi and holds 128Mi: (128+64)/2048 = 0.09375, above the empty 1Gi nodes' 0.0625.
    snap: ClusterSnapshot = snapshot_of(
        *(node(n, "2Gi" if n == "n8" else "1Gi") for n in NAMES),
        pod("x", "128Mi", node_name="n8"),
        *(pod(f"f{n}", "100Mi", node_name=n) for n in NAMES[1:8]),
    )
    tables = ScoreTables("binpack", prefer_non_sgx=True)
    cover = cover_of(snap)
    first = spread(snap, tables, cover)
    # n1..n7 hold 100Mi: 164/1024; n0 is empty: 64/1024, the only one at the lowest.
    assert (first.low, first.at_low) == (64 / 1024, 1)
    # n8's pod goes: 64/2048, below the lowest there was; found again.
    snap.remove_pod("default/x")
    second = spread(snap, tables, cover)
    assert second is not first
    assert (second.low, second.at_low) == (64 / 2048, 1)
    assert above(snap, second) == {"n0": 64 / 1024, **{n: 164 / 1024 for n in NAMES[1:8]}}
    # 128Mi back on n8, the only one at the lowest: none is left there, found again; n0 alone
    # at the lowest (64/1024), n8 at 192/2048 above it.
    snap.upsert_pod(bound("v", "128Mi", "n8"))  # type: ignore[arg-type]
    third = spread(snap, tables, cover)
    assert third is not second
    assert (third.low, third.at_low) == (64 / 1024, 1)
    assert above(snap, third)["n8"] == 192 / 2048


def test_eight_changes_at_once_are_still_followed() -> None:
    snap: ClusterSnapshot = snapshot_of(*(node(n, "1Gi") for n in NAMES))
    tables = ScoreTables("binpack", prefer_non_sgx=True)
    cover = cover_of(snap)
    first = spread(snap, tables, cover)
    assert (first.at_low, first.above) == (9, {})
    # 10Mi on each of n1..n8 between two requests: eight changes, followed one by one.
    for name in NAMES[1:]:
        snap.upsert_pod(bound(f"y{name}", "10Mi", name))  # type: ignore[arg-type]
    assert spread(snap, tables, cover) is first
    # n0 alone at the lowest (64/1024); the eight at 74/1024 above it.
    assert (first.at_low, above(snap, first)) == (1, {n: 74 / 1024 for n in NAMES[1:]})


def test_up_to_64_above_the_lowest_are_kept_and_followed() -> None:
    # 63 of 140 nodes hold 1..63 Mi.
    snap, names, cover = filled(140, 63)
    tables = ScoreTables("binpack", prefer_non_sgx=True)
    assert tables.above_lowest_over(snap, POD, cover) is not None
    first = kept(cover)
    assert first.above is not None and (len(first.above), first.at_low) == (63, 77)
    # One more node filled: 64 above, the most kept, still followed.
    snap.upsert_pod(bound("y", "100Mi", names[100]))  # type: ignore[arg-type]
    assert tables.above_lowest_over(snap, POD, cover) is not None
    assert kept(cover) is first
    assert (len(first.above), first.at_low) == (64, 76)
    # Two more: 66 above, too many to keep: found again, none kept, the general way asked.
    snap.upsert_pod(bound("z", "100Mi", names[101]))  # type: ignore[arg-type]
    snap.upsert_pod(bound("w", "100Mi", names[102]))  # type: ignore[arg-type]
    assert tables.above_lowest_over(snap, POD, cover) is None
    second = kept(cover)
    assert (second is first, second.above, second.at_low) == (False, None, 74)
    # Two of them leave again: with none kept, any change means looking again; 64 kept.
    snap.remove_pod("default/z")
    snap.remove_pod("default/w")
    assert tables.above_lowest_over(snap, POD, cover) is not None
    third = kept(cover)
    assert third is not second
    assert third.above is not None and (len(third.above), third.at_low) == (64, 76)


def test_a_left_out_node_changes_nothing_and_the_next_change_still_counts() -> None:
    snap: ClusterSnapshot = snapshot_of(
        *(node(n, "1Gi") for n in NAMES), pod("x", "256Mi", node_name="n2")
    )
    tables = ScoreTables("binpack", prefer_non_sgx=True)
    cover = cover_of(snap, "n8")
    first = spread(snap, tables, cover)
    assert (first.at_low, above(snap, first)) == (7, {"n2": 320 / 1024})
    # In one interval: 512Mi on n8 (left out), then 128Mi on n5 (192/1024, above).
    snap.upsert_pod(bound("y", "512Mi", "n8"))  # type: ignore[arg-type]
    snap.upsert_pod(bound("z", "128Mi", "n5"))  # type: ignore[arg-type]
    assert spread(snap, tables, cover) is first
    assert (first.at_low, above(snap, first)) == (6, {"n2": 320 / 1024, "n5": 192 / 1024})


def test_too_many_above_the_lowest_keeps_none_and_looks_again_after_a_change() -> None:
    # 66 of 70 nodes hold 1..66 Mi: more than the 64 kept above the lowest.
    snap, _, cover = filled(70, 66)
    tables = ScoreTables("binpack", prefer_non_sgx=True)
    assert tables.above_lowest_over(snap, POD, cover) is None
    first = kept(cover)
    assert (first.above, first.at_low) == (None, 4)
    # Nothing changed: the same state, still none kept.
    assert tables.above_lowest_over(snap, POD, cover) is None
    assert kept(cover) is first
    # Pods leave nodes b00..b39 (back at the lowest): 26 above now, kept again, and fewer
    # than half the 70 candidates, so answered from them.
    for i in range(40):
        snap.remove_pod(f"default/x{i}")
    assert tables.above_lowest_over(snap, POD, cover) is not None
    second = kept(cover)
    assert second is not first
    assert second.above is not None and (len(second.above), second.at_low) == (26, 44)


def test_a_change_in_bulk_finds_the_lowest_again() -> None:
    snap: ClusterSnapshot = snapshot_of(
        *(node(n, "1Gi") for n in NAMES), pod("x", "256Mi", node_name="n2")
    )
    tables = ScoreTables("binpack", prefer_non_sgx=True)
    cover = cover_of(snap)
    first = spread(snap, tables, cover)
    # Usage on n2 with accounting switched (in bulk): the table is rebuilt, a new array.
    snap.set_usage("n2", 512 * MIB)
    snap.accounting = "max"
    second = spread(snap, tables, cover)
    assert second is not first
    assert above(snap, second) == {"n2": (512 + 64) / 1024}
