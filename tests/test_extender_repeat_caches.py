"""Prioritize's shortcuts after its filter never answer for a cluster or a pod that changed.

Protects issue 10's per-request shortcuts: prioritize repeats its filter's list, so the filter's
finding that every listed node fits is reused, but only for that very list and pod with nothing
changed in the snapshot since; and the score tables, updated node by node, give the same scores
as scoring from scratch. Expected replies are worked out by hand (binpack: the node fullest after
placement scores 10, the emptiest fitting node 0 and is left out).
"""

from __future__ import annotations

import json

import pytest

from epcsched.extender.service import ExtenderService
from epcsched.extender.wire import BadRequest
from tests.helpers import names_request as body
from tests.helpers import node, pod, snapshot_of
from tests.helpers import running_on as bound


def passing(reply: bytes) -> list[str]:
    return list(json.loads(reply)["NodeNames"])


def test_a_node_filled_after_the_filter_is_not_scored_as_fitting() -> None:
    # a: 1Gi, empty; b: 1Gi holding 512Mi. The 16Mi pod fits both.
    snap = snapshot_of(node("a", "1Gi"), node("b", "1Gi"), pod("x", "512Mi", node_name="b"))
    service = ExtenderService(lambda: snap, strategy="binpack")
    request = body("a", "b")
    assert passing(service.filter(request)) == ["a", "b"]
    # Between filter and prioritize, 1010Mi lands on a: 14Mi free, too little for 16Mi.
    snap.upsert_pod(bound("y", "1010Mi", "a"))  # type: ignore[arg-type]
    # Only b may be scored; alone, it is the best (10). Were a still taken to fit, a would be
    # fullest after placement (1026Mi of 1Gi) and win instead.
    assert json.loads(service.prioritize(request)) == [{"Host": "b", "Score": 10}]


def test_another_pod_on_the_same_list_is_checked_again() -> None:
    snap = snapshot_of(node("a", "1Gi"), node("b", "1Gi"), pod("x", "512Mi", node_name="b"))
    service = ExtenderService(lambda: snap, strategy="binpack")
    assert passing(service.filter(body("a", "b"))) == ["a", "b"]
    # A 600Mi pod over the same names: b has 512Mi free, so only a fits, and scores 10 alone.
    # (Were the small pod's finding reused, b would be fullest after placement and win.)
    bigger = body("a", "b", epc="600Mi", name="q")
    assert json.loads(service.prioritize(bigger)) == [{"Host": "a", "Score": 10}]
    # Its own filter says the same.
    assert passing(service.filter(bigger)) == ["a"]


def test_scores_follow_binds_node_by_node() -> None:
    """After each bind the listed scores equal a fresh service's over the same snapshot."""
    names = [f"n{i}" for i in range(6)]
    snap = snapshot_of(*(node(n, "1Gi") for n in names))
    service = ExtenderService(lambda: snap, strategy="binpack")
    sizes = ["100Mi", "300Mi", "50Mi", "200Mi", "100Mi", "250Mi", "64Mi"]
    for i, size in enumerate(sizes):
        request = body(*names, epc="64Mi", name=f"p{i}")
        assert passing(service.filter(request)) == names
        ours = json.loads(service.prioritize(request))
        fresh = json.loads(ExtenderService(lambda: snap, strategy="binpack").prioritize(request))
        assert sorted(ours, key=str) == sorted(fresh, key=str)
        snap.upsert_pod(bound(f"b{i}", size, names[(i * 5) % 6]))  # type: ignore[arg-type]
    # By hand, after the binds (i-th on n[5i mod 6]): n0 100+64Mi, n1 250, n2 100, n3 200,
    # n4 50, n5 300. With the 64Mi pod placed, of 1024Mi each: n0 228, n1 314, n2 164,
    # n3 264, n4 114 (lowest, left out), n5 364 (best, 10). Spread over 114..364:
    # n0 (228-114)/250*10 = 4.56 -> 5, n1 8.0 -> 8, n2 2.0 -> 2, n3 6.0 -> 6.
    request = body(*names, epc="64Mi", name="last")
    assert passing(service.filter(request)) == names
    assert sorted(json.loads(service.prioritize(request)), key=lambda e: e["Host"]) == [
        {"Host": "n0", "Score": 5},
        {"Host": "n1", "Score": 8},
        {"Host": "n2", "Score": 2},
        {"Host": "n3", "Score": 6},
        {"Host": "n5", "Score": 10},
    ]


def test_a_reply_listing_most_candidates_follows_the_cluster() -> None:
    """Most candidates above the lowest: every candidate is scored and the lowest left out;
    asked again, the kept reply is filled with the new scores, not the old ones."""
    snap = snapshot_of(
        node("a", "1Gi"),
        node("b", "1Gi"),
        node("c", "1Gi"),
        node("d", "1Gi"),
        pod("x", "100Mi", node_name="b"),
        pod("y", "200Mi", node_name="c"),
        pod("z", "300Mi", node_name="d"),
    )
    service = ExtenderService(lambda: snap, strategy="binpack")
    request = body("a", "b", "c", "d", epc="100Mi")

    def listed() -> list[tuple[str, int]]:
        return sorted((e["Host"], e["Score"]) for e in json.loads(service.prioritize(request)))

    # After placing 100Mi: a 100, b 200, c 300, d 400 (of 1024Mi). Spread over 100..400:
    # b 1/3 -> 3.83 -> 3, c 2/3 -> 7.17 -> 7, d 10; a lowest, left out.
    assert listed() == [("b", 3), ("c", 7), ("d", 10)]
    assert listed() == [("b", 3), ("c", 7), ("d", 10)]
    # 500Mi lands on a: a 600 after placement, now the best; b 200 the lowest.
    # c (300-200)/400 -> 3.0 -> 3, d 200/400 -> 5.5 -> 5.
    snap.upsert_pod(bound("w", "500Mi", "a"))  # type: ignore[arg-type]
    assert listed() == [("a", 10), ("c", 3), ("d", 5)]


def test_a_pod_whose_spec_was_seen_is_still_checked_outside_it() -> None:
    snap = snapshot_of(node("a", "1Gi"))
    service = ExtenderService(lambda: snap, strategy="binpack")
    assert passing(service.filter(body("a", name="p"))) == ["a"]
    # The same spec again, its requests known; but a name that is not a string is refused as
    # before, with the field named.
    bad = json.loads(body("a", name="q"))
    bad["Pod"]["metadata"]["name"] = 5
    with pytest.raises(BadRequest, match=r"^Pod: .*metadata\.name"):
        service.filter(json.dumps(bad).encode())
    # And a known spec under another, valid pod is answered from what it asks: 2Gi fits no
    # 1Gi node, whatever pod asked 16Mi with another spec before.
    assert passing(service.filter(body("a", epc="2Gi", name="r"))) == []
