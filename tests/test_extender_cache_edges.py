"""The extender's caches never answer for a node that is gone, even when its slot is reused.

Protects: the name resolver's remembered runs and last list, the service's parsed-request cache
and the per-kind score tables all hold snapshot slots. When a node is deleted and another node
takes its slot, a request naming the deleted node must fail it as unknown, not pass (or score)
the newcomer in its place; filter before the change and prioritize after it, with the same bytes,
must not reuse the old reading. Expected replies are worked out by hand.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from epcsched.extender.service import ExtenderService
from epcsched.objects import Node, node_info
from epcsched.quantity import DEFAULT_EPC_RESOURCES
from tests.helpers import names_request as body
from tests.helpers import node, pod, snapshot_of

GONE = "node is not in epcsched's cluster cache"


def add(snap: Any, item: dict[str, Any]) -> None:
    snap.upsert_node(node_info(msgspec.convert(item, Node), DEFAULT_EPC_RESOURCES))


def test_a_deleted_node_whose_slot_is_reused_is_failed_not_replaced() -> None:
    # a and b: 1Gi each, b holding 512Mi; c: 8Mi, too small for the 16Mi pod.
    snap = snapshot_of(
        node("a", "1Gi"), node("b", "1Gi"), node("c", "8Mi"), pod("x", "512Mi", node_name="b")
    )
    service = ExtenderService(lambda: snap, strategy="binpack")
    request = body("a", "b", "c")
    unresolvable = {"c": "sgx.intel.com/epc: requested 16Mi, but the node has only 8Mi allocatable"}
    assert json.loads(service.filter(request)) == {
        "NodeNames": ["a", "b"],
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": unresolvable,
        "Error": "",
    }
    # Binpack: b is fuller (528Mi of 1Gi after placement against 16Mi), so b 10, a 0 (left out).
    assert json.loads(service.prioritize(request)) == [{"Host": "b", "Score": 10}]
    # b is deleted and d, empty, takes its slot.
    slot = snap.slots["b"]
    snap.remove_node("b")
    add(snap, node("d", "1Gi"))
    assert snap.slots["d"] == slot
    # The same bytes again: b is unknown now, and d was not asked about.
    assert json.loads(service.prioritize(request)) == [{"Host": "a", "Score": 10}]
    assert json.loads(service.filter(request)) == {
        "NodeNames": ["a"],
        "FailedNodes": {"b": GONE},
        "FailedAndUnresolvableNodes": unresolvable,
        "Error": "",
    }
    # A list that names d reads d's own figures: empty, like a, so both score alike.
    assert json.loads(service.filter(body("a", "d"))) == {
        "NodeNames": ["a", "d"],
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {},
        "Error": "",
    }
    assert json.loads(service.prioritize(body("a", "d"))) == []


def test_a_node_that_comes_back_is_read_afresh() -> None:
    snap = snapshot_of(node("a", "1Gi"), node("b", "1Gi"))
    service = ExtenderService(lambda: snap, strategy="binpack")
    request = body("a", "b", epc="64Mi")
    assert json.loads(service.filter(request))["NodeNames"] == ["a", "b"]
    snap.remove_node("b")
    assert json.loads(service.filter(request))["FailedNodes"] == {"b": GONE}
    # b returns smaller than the pod: unresolvable, from its new allocatable.
    add(snap, node("b", "32Mi"))
    assert json.loads(service.filter(request)) == {
        "NodeNames": ["a"],
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {
            "b": "sgx.intel.com/epc: requested 64Mi, but the node has only 32Mi allocatable"
        },
        "Error": "",
    }


def test_runs_learned_before_a_deletion_are_not_reused_after_it() -> None:
    # Ten nodes read once in order (the resolver learns the run), then the fifth is deleted and
    # a newcomer takes its slot; the same list must fail n4 and pass the other nine.
    names = [f"n{i}" for i in range(10)]
    snap = snapshot_of(*(node(n, "1Gi") for n in names))
    service = ExtenderService(lambda: snap, strategy="binpack")
    request = body(*names)
    assert json.loads(service.filter(request))["NodeNames"] == names
    snap.remove_node("n4")
    add(snap, node("new", "1Gi"))
    reply = json.loads(service.filter(request))
    assert reply["NodeNames"] == [n for n in names if n != "n4"]
    assert reply["FailedNodes"] == {"n4": GONE}
    # A list in another order, cut into runs of the old reference, reads the same way.
    shuffled = names[5:] + names[:5]
    reply = json.loads(service.filter(body(*shuffled)))
    assert reply["NodeNames"] == [n for n in shuffled if n != "n4"]
    assert reply["FailedNodes"] == {"n4": GONE}
