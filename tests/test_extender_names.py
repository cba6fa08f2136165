"""Reading a `NodeNames` list run by run gives exactly the slots a full decode gives.

kube-scheduler sends the same nodes in a new order of chunks on most requests, and the extender
reads such a list as slices of a reference list it learned. Whatever the list holds (chunks in
any order, nodes dropped, names the cache does not know, whitespace, escapes, duplicates, bad
JSON), and however the node set changed in between, the answer must be the full decode's: the
same slot for each name in order, or the same 400 message.
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epcsched.core.snapshot import ClusterSnapshot
from epcsched.extender import wire
from epcsched.extender.names import NameResolver, SlotNames
from epcsched.model import NodeInfo

EPC = "sgx.intel.com/epc"


def cluster(names: list[str]) -> ClusterSnapshot:
    snap = ClusterSnapshot({EPC: 1}, capacity=4)
    for name in names:
        snap.upsert_node(NodeInfo(name, {EPC: 2**30}))
    return snap


def chunked(names: list[str], size: int, rng: random.Random) -> list[str]:
    """`names` as kube-scheduler's parallel filter lists them: chunks in a random order."""
    chunks = [names[i : i + size] for i in range(0, len(names), size)]
    rng.shuffle(chunks)
    return [n for chunk in chunks for n in chunk]


def expected(raw: bytes, snap: ClusterSnapshot) -> Any:
    try:
        return snap.slots_of(wire.decode_node_names(raw)).tolist()
    except wire.BadRequest as exc:
        return f"400 {exc}"


def resolved(resolver: NameResolver, raw: bytes, snap: ClusterSnapshot) -> Any:
    """The resolver's answer for `raw`, checked to be the same when the list is read in place
    inside a request body, and (as a set) when any order will do."""
    answer = _answer(lambda: resolver.resolve(raw, snap).tolist())
    body = b'{"Pod":{},"NodeNames":' + raw + b"}"
    start = len(body) - len(raw) - 1
    inside = _answer(lambda: resolver.resolve(body, snap, start, start + len(raw)).tolist())
    assert inside == answer
    unordered = _answer(
        lambda: sorted(resolver.resolve(body, snap, start, len(body) - 1, any_order=True).tolist())
    )
    assert unordered == (sorted(answer) if isinstance(answer, list) else answer)
    return answer


def _answer(read: Any) -> Any:
    try:
        return read()
    except wire.BadRequest as exc:
        return f"400 {exc}"


def compact(names: list[str]) -> bytes:
    return json.dumps(names, separators=(",", ":")).encode()


NODES = [f"aks-dcsv3-{i:05d}" for i in range(40)] + ["node-1", "node-10", "node-100", "n"]
UNIFORM = [f"aks-dcsv3-{i:05d}" for i in range(44)]
"""Names whose JSON all have one length: the resolver then cuts keys without searching."""

event = st.one_of(
    st.tuples(st.just("list"), st.integers(1, 12), st.floats(0, 0.3), st.booleans()),
    st.tuples(st.just("add"), st.sampled_from(["late-1", "late-2", 'we"ird', "ünï"])),
    st.tuples(st.just("remove"), st.sampled_from([*NODES[:6], "late-1"])),
    st.tuples(
        st.just("ghost"),
        st.sampled_from(["ghost-1", "node-1000", "aks-dcsv3-0000", "aks-dcsv3-99999"]),
    ),
    st.tuples(
        st.just("odd"),
        st.sampled_from(["spaces", "escape", "duplicate", "trailing comma", "bad", "empty"]),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(event, min_size=1, max_size=25),
    st.integers(0, 2**32),
    st.sampled_from([NODES, UNIFORM]),
)
def test_run_by_run_equals_the_full_decode(
    events: list[tuple[Any, ...]], seed: int, nodes: list[str]
) -> None:
    rng = random.Random(seed)
    snap = cluster(nodes)
    resolver = NameResolver()
    ghosts: list[str] = []
    for ev in events:
        kind = ev[0]
        if kind == "add":
            snap.upsert_node(NodeInfo(ev[1], {EPC: 2**30}))
            continue
        if kind == "remove":
            snap.remove_node(ev[1])
            continue
        listed = [n for n in nodes if n in snap.slots] + [n for n in snap.slots if n not in nodes]
        if kind == "list":
            _, size, drop, reverse = ev
            names = [n for n in listed if rng.random() >= drop] + ghosts
            raw = compact(chunked(names[::-1] if reverse else names, size, rng))
        elif kind == "ghost":
            ghosts.append(ev[1])
            raw = compact(chunked(listed + ghosts, 5, rng))
        else:
            names = chunked(listed, 7, rng)
            odd = ev[1]
            if odd == "spaces":
                raw = json.dumps(names, indent=1).encode()
            elif odd == "escape":
                raw = compact(names).replace(b"a", b"\\u0061", 3)
            elif odd == "duplicate":
                raw = compact(names + names[:3])
            elif odd == "trailing comma":
                raw = compact(names)[:-1] + b",]"
            elif odd == "bad":
                raw = compact(names)[: len(compact(names)) // 2]
            else:
                raw = b"[]"
        assert resolved(resolver, raw, snap) == expected(raw, snap)
        # prioritize repeats the list: the same answer again.
        assert resolved(resolver, raw, snap) == expected(raw, snap)


def test_a_shuffled_list_is_read_in_runs_not_names() -> None:
    names = [f"node-{i:04d}" for i in range(400)]
    snap = cluster(names)
    resolver = NameResolver()
    rng = random.Random(7)
    for _ in range(3):
        raw = compact(chunked(names, 20, rng))
        assert resolver.resolve(raw, snap).tolist() == snap.slots_of(json.loads(raw)).tolist()
    # 400 names in chunks of 20: the runs remembered are the 20 chunks, whatever their order.
    assert len(resolver._runs) == 20


@pytest.mark.parametrize("raw", [b'"a"', b"[1]", b'["a",', b'["a"]x', b'["a" "a"]'])
def test_what_is_not_an_array_of_strings_is_the_decoders_400(raw: bytes) -> None:
    snap = cluster(["a"])
    resolver = NameResolver()
    resolver.resolve(b'["a"]', snap)
    assert resolved(resolver, raw, snap) == expected(raw, snap)
    assert str(resolved(resolver, raw, snap)).startswith("400 NodeNames:")


def test_names_and_scores_are_written_by_slot() -> None:
    snap = cluster(["a", 'q"x', "ünï"])
    out = SlotNames()
    slots = np.array([snap.slots["ünï"], snap.slots['q"x']], dtype=np.int64)
    assert json.loads(out.names_json(snap, slots)) == ["ünï", 'q"x']
    scores = np.array([7, 10], dtype=np.int64)
    assert json.loads(out.scores_json(snap, slots, scores)) == [
        {"Host": "ünï", "Score": 7},
        {"Host": 'q"x', "Score": 10},
    ]
    assert out.scores_json(snap, slots[:0], scores[:0]) == b"[]"
    snap.upsert_node(NodeInfo("b", {EPC: 1}))
    assert json.loads(out.names_json(snap, np.array([snap.slots["b"]]))) == ["b"]


def test_many_names_and_scores_of_mixed_lengths() -> None:
    names = [f"n{i}" for i in range(10)] + [f"node-{i:03d}" for i in range(40)]
    names += ["ünïcode-1", 'quo"te', "x" * 63]
    snap = cluster(names)
    out = SlotNames()
    rng = random.Random(3)
    for _ in range(20):
        chosen = rng.sample(names, rng.randint(17, len(names)))
        slots = snap.slots_of(chosen)
        scores = np.array([rng.randint(1, 10) for _ in chosen], dtype=np.int64)
        listed = json.loads(out.scores_json(snap, slots, scores))
        assert sorted((e["Host"], e["Score"]) for e in listed) == sorted(
            zip(chosen, scores.tolist(), strict=True)
        )
        assert all(set(e) == {"Host", "Score"} for e in listed)
        assert sorted(json.loads(out.names_json(snap, slots))) == sorted(chosen)
    # One length only: the order of the slots is kept.
    same = [n for n in names if n.startswith("node-")]
    slots = snap.slots_of(same[::-1])
    assert json.loads(out.names_json(snap, slots)) == same[::-1]


def test_remembered_lists_are_told_apart_by_their_bytes_not_their_key() -> None:
    """Lists are remembered whole, keyed by their length and their two ends: two lists that
    share those but differ inside (two middle chunks swapped) each get their own slots, and a
    list remembered before the node set changed is read anew after it."""
    names = [f"aks-dcsv3-{i:05d}" for i in range(200)]
    snap = cluster(names)
    resolver = NameResolver()
    chunks = [names[i : i + 20] for i in range(0, 200, 20)]
    first = [n for chunk in chunks for n in chunk]
    chunks[3], chunks[6] = chunks[6], chunks[3]
    second = [n for chunk in chunks for n in chunk]
    a, b = compact(first), compact(second)
    assert a != b and len(a) == len(b) and a[:100] == b[:100] and a[-100:] == b[-100:]
    for raw in (a, b, a, b, b, a):
        assert resolved(resolver, raw, snap) == expected(raw, snap)
    # More lists than are remembered, then the first two again.
    rng = random.Random(5)
    others = [compact(chunked(names, 20, rng)) for _ in range(12)]
    for raw in [*others, a, b, others[-1]]:
        assert resolved(resolver, raw, snap) == expected(raw, snap)
    # A node deleted and its slot reused: a list remembered a moment ago now names a node that
    # is gone.
    gone = first[70]
    slot = snap.slots[gone]
    snap.remove_node(gone)
    snap.upsert_node(NodeInfo("newcomer", {EPC: 2**30}))
    assert snap.slots["newcomer"] == slot
    for raw in (others[-1], a, b):
        got = resolved(resolver, raw, snap)
        assert got == expected(raw, snap)
        assert got[json.loads(raw).index(gone)] == -1 and slot not in got


def test_replies_listing_most_candidates_leave_out_exactly_the_zero_scores() -> None:
    """The entries scoring 0 are written as whitespace, wherever they fall (first, last, all,
    between names of other lengths); the reply kept for a read-only list is reused only for
    that very array, and never across a change of the node set."""
    names = [f"n{i}" for i in range(10)] + [f"node-{i:03d}" for i in range(40)]
    names += ["ünïcode-1", 'quo"te', "x" * 63]
    snap = cluster(names)
    out = SlotNames()
    rng = random.Random(11)
    for round_ in range(60):
        chosen = rng.sample(names, rng.randint(1, len(names)))
        slots = snap.slots_of(chosen)
        slots.flags.writeable = round_ % 2 == 0
        for pattern in ("random", "first", "last", "all", "none"):
            scores = np.array([rng.choice([0, 1, 5, 10]) for _ in chosen], dtype=np.int64)
            if pattern == "first":
                scores[0] = 0
            elif pattern == "last":
                scores[-1] = 0
            elif pattern == "all":
                scores[:] = 0
            elif pattern == "none":
                scores[scores == 0] = 3
            listed = json.loads(out.nonzero_scores_json(snap, slots, scores))
            assert all(set(e) == {"Host", "Score"} for e in listed)
            assert sorted((e["Host"], e["Score"]) for e in listed) == sorted(
                (name, score) for name, score in zip(chosen, scores.tolist(), strict=True) if score
            )
    # One read-only array asked about twice, with the node set changed in between: a node
    # deleted and its slot taken by another is named as the newcomer the second time.
    slots = snap.slots_of(["n1", "n2", "node-007"] * 6)
    slots.flags.writeable = False
    scores = np.array([10, 0, 4] * 6, dtype=np.int64)
    first = sorted(
        (e["Host"], e["Score"]) for e in json.loads(out.nonzero_scores_json(snap, slots, scores))
    )
    assert first == sorted([("n1", 10), ("node-007", 4)] * 6)
    slot = snap.slots["n1"]
    snap.remove_node("n1")
    snap.upsert_node(NodeInfo("later", {EPC: 1}))
    assert snap.slots["later"] == slot
    again = sorted(
        (e["Host"], e["Score"]) for e in json.loads(out.nonzero_scores_json(snap, slots, scores))
    )
    assert again == sorted([("later", 10), ("node-007", 4)] * 6)
    # A writable array may be changed by its owner between calls: it is never kept.
    mine = snap.slots_of(["n2", "node-007"] * 9)
    scores = np.array([1, 2] * 9, dtype=np.int64)
    listed = json.loads(out.nonzero_scores_json(snap, mine, scores))
    assert sorted((e["Host"], e["Score"]) for e in listed) == sorted(
        [("n2", 1), ("node-007", 2)] * 9
    )
    mine[0] = snap.slots["n3"]
    listed = json.loads(out.nonzero_scores_json(snap, mine, scores))
    assert sorted((e["Host"], e["Score"]) for e in listed) == sorted(
        [("n3", 1)] + [("n2", 1)] * 8 + [("node-007", 2)] * 9
    )
