"""Work moved off kube-scheduler's wait never changes an answer.

Protects issue 10's latency measures: the extender folds a watch event into its fit views and
score tables right after the event (`ExtenderService.refresh`, wired to the informers' change
listeners; one node rescored in Python floats by the core's `raw_score_at`), and answers a
prioritize ahead of its request once its filter passed every node (`prioritize_ahead`, the few
candidates above the lowest spread by `normalise_above`). Either may only move work; a reply
computed ahead is used only for the very body it answers with nothing changed since. Expected
replies are worked out by hand (binpack: a node's raw score is its EPC share used once the pod
is placed; the lowest candidate scores 0 and is left out, the highest 10, the rest
`floor(10 * (raw - low) / (high - low) + 0.5)`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from epcsched.config import Config
from epcsched.core.fit import PodRequest
from epcsched.core.score import normalise, normalise_above, raw_score_at, raw_scores
from epcsched.extender.service import ExtenderService
from epcsched.kube.informer import InformerSettings, InformerState
from epcsched.quantity import MIB
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND
from tests import kube_helpers
from tests.helpers import EPC, LEGACY, node, pod, snapshot_of
from tests.helpers import names_request as body
from tests.helpers import running_on as bound

FAST = InformerSettings(backoff_initial=0.01, backoff_max=0.1, watch_timeout=(1, 2), page_size=50)


def three_nodes() -> tuple[object, ExtenderService]:
    # a, b, c: 1Gi each, holding 0, 256Mi and 512Mi. A 16Mi pod fits all three; after placing
    # it a holds 16Mi, b 272Mi, c 528Mi: raw 16/1024, 272/1024, 528/1024. Over a, b, c:
    # low 16, high 528, b = floor(10 * 256/512 + 0.5) = floor(5.5) = 5, c = 10.
    snap = snapshot_of(
        node("a", "1Gi"),
        node("b", "1Gi"),
        node("c", "1Gi"),
        pod("x", "256Mi", node_name="b"),
        pod("y", "512Mi", node_name="c"),
    )
    return snap, ExtenderService(lambda: snap, strategy="binpack")


def scores(reply: bytes) -> dict[str, int]:
    return {entry["Host"]: entry["Score"] for entry in json.loads(reply)}


def scheduled(service: ExtenderService, request: bytes) -> bytes:
    """One pod as kube-scheduler's base profile sends it: filter, then prioritize of the same
    body (which teaches the service that prioritize repeats its filter's)."""
    service.filter(request)
    return service.prioritize(request)


def filtered_ahead(service: ExtenderService, request: bytes) -> bool:
    """A filter followed by what the handler runs once its reply is sent; whether a prioritize
    reply was computed ahead."""
    service.filter(request)
    service.prioritize_ahead()
    return service._ahead is not None


def test_a_reply_computed_ahead_is_the_reply() -> None:
    _, service = three_nodes()
    assert scores(scheduled(service, body("a", "b", "c"))) == {"b": 5, "c": 10}
    # The next pod of the same kind: its prioritize is answered ahead, then asked for.
    second = body("c", "a", "b", name="q")
    assert filtered_ahead(service, second)
    assert scores(service.prioritize(second)) == {"b": 5, "c": 10}


def test_the_reply_computed_ahead_is_the_one_sent() -> None:
    _, service = three_nodes()
    scheduled(service, body("a", "b", "c"))
    second = body("a", "b", "c", name="q")
    assert filtered_ahead(service, second)
    assert service._ahead is not None
    ready = service._ahead[2]
    # The very bytes computed ahead go out: nothing is scored again while kube-scheduler waits.
    assert service.prioritize(second) is ready


def test_two_nodes_passing_are_prioritized_ahead() -> None:
    # kube-scheduler prioritizes whenever more than one node passes: exactly two is enough.
    _, service = three_nodes()
    scheduled(service, body("a", "b"))
    assert filtered_ahead(service, body("b", "a", name="q"))


def test_a_reply_missed_for_a_change_does_not_stop_answering_ahead() -> None:
    snap, service = three_nodes()
    scheduled(service, body("a", "b", "c"))
    second = body("a", "b", "c", name="q")
    assert filtered_ahead(service, second)
    snap.upsert_pod(bound("z", "64Mi", "a"))  # type: ignore[attr-defined]
    # Computed again for the change; prioritize still repeated its filter's body, so the
    # next pod's is answered ahead as well.
    service.prioritize(second)
    assert filtered_ahead(service, body("a", "b", "c", name="r"))


def test_a_prioritize_of_another_body_stops_answering_ahead() -> None:
    _, service = three_nodes()
    first = body("a", "b", "c")
    scheduled(service, first)
    assert filtered_ahead(service, first)
    # Another scheduler's prioritize (another list) arrives instead: prioritize no longer
    # repeats its filter's body, and the next filter is not answered ahead.
    service.prioritize(body("a", "b"))
    assert not filtered_ahead(service, body("a", "b", "c", name="r"))


def test_a_bind_after_the_reply_was_computed_ahead_is_seen() -> None:
    snap, service = three_nodes()
    scheduled(service, body("a", "b", "c"))
    second = body("a", "b", "c", name="q")
    assert filtered_ahead(service, second)
    # 256Mi more lands on b before the prioritize arrives: b now holds 512Mi, like c, and
    # both score 10 (raw 528/1024 each); were the reply computed ahead used, b would get 5.
    snap.upsert_pod(bound("z", "256Mi", "b"))  # type: ignore[attr-defined]
    assert scores(service.prioritize(second)) == {"b": 10, "c": 10}


def test_a_prioritize_of_another_list_is_answered_for_that_list() -> None:
    _, service = three_nodes()
    first = body("a", "b", "c")
    scheduled(service, first)
    assert filtered_ahead(service, first)
    # Over a and b only: low 16 (a), high 272 (b): b = 10, a left out.
    assert scores(service.prioritize(body("a", "b"))) == {"b": 10}


def test_nothing_is_computed_ahead_until_prioritize_follows_filter() -> None:
    _, service = three_nodes()
    request = body("a", "b", "c")
    # The high-throughput profile: filters only. Computing ahead would be work for nothing.
    for _ in range(3):
        assert not filtered_ahead(service, request)
    # Once a prioritize repeats its filter's body, the next filter's is computed ahead.
    service.prioritize(request)
    assert filtered_ahead(service, request)


def test_nothing_is_computed_ahead_when_a_node_failed_or_only_one_passed() -> None:
    _, service = three_nodes()
    request = body("a", "b", "c")
    scheduled(service, request)
    # 600Mi fits a (1Gi free) and b (768Mi) but not c (512Mi): kube-scheduler then sends the
    # two that passed, a body of its own, so the filter's body is never asked about.
    big = body("a", "b", "c", epc="600Mi", name="big")
    assert not filtered_ahead(service, big)
    assert json.loads(service.filter(big))["NodeNames"] == ["a", "b"]
    # One node passes: kube-scheduler does not prioritize at all.
    scheduled(service, request)
    assert not filtered_ahead(service, body("a", name="one"))


def test_a_filter_that_failed_nodes_does_not_stop_answering_ahead() -> None:
    _, service = three_nodes()
    scheduled(service, body("a", "b", "c"))
    # 600Mi fails c; kube-scheduler prioritizes the other two with a body of its own, which
    # says nothing about whether prioritize repeats a filter's body.
    service.filter(body("a", "b", "c", epc="600Mi", name="big"))
    service.prioritize(body("a", "b", epc="600Mi", name="big"))
    assert filtered_ahead(service, body("a", "b", "c", name="next"))


def test_refresh_changes_no_reply() -> None:
    # The same binds into two copies of one cluster, one service refreshed after each bind:
    # every reply must be the same byte for byte.
    replies: list[list[bytes]] = []
    for refreshed in (False, True):
        snap, service = three_nodes()
        seen: list[bytes] = []
        for i, (where, epc) in enumerate([("a", "64Mi"), ("b", "128Mi"), ("a", "300Mi")]):
            for mib in ("16Mi", "100Mi"):
                request = body("a", "b", "c", epc=mib, name=f"p{i}{mib}")
                seen.append(service.filter(request))
                seen.append(service.prioritize(request))
            snap.upsert_pod(bound(f"bind{i}", epc, where))  # type: ignore[attr-defined]
            if refreshed:
                service.refresh()
        replies.append(seen)
    assert replies[0] == replies[1]


def test_refresh_leaves_no_change_for_the_next_replica() -> None:
    snap, service = three_nodes()
    for mib in ("16Mi", "100Mi"):
        scheduled(service, body("a", "b", "c", epc=mib, name=mib))
    snap.upsert_pod(bound("z", "64Mi", "a"))  # type: ignore[attr-defined]
    service.refresh()
    # The table of the kind asked about last (100Mi) has read the bind: nothing is left for
    # its next replica's request to update. The 16Mi table still has node a to catch up on
    # when next read (the replies stay the same either way: see above).
    older, newest = service._scores._tables.values()
    newest_changes = snap.changed_since(newest.mark)  # type: ignore[attr-defined]
    assert newest_changes is not None and newest_changes.tolist() == []
    older_changes = snap.changed_since(older.mark)  # type: ignore[attr-defined]
    assert older_changes is not None and older_changes.tolist() == [snap.slots["a"]]  # type: ignore[attr-defined]


def test_refresh_rebuilds_every_table_after_a_change_in_bulk() -> None:
    snap, service = three_nodes()
    for mib in ("16Mi", "100Mi"):
        scheduled(service, body("a", "b", "c", epc=mib, name=mib))
    # A telemetry poll replaces every node's measured use at once: a reader of any table
    # would have to rebuild it whole, so refresh does it for all of them now.
    snap.clear_usage()  # type: ignore[attr-defined]
    older, _ = service._scores._tables.values()
    assert snap.changed_since(older.mark) is None  # type: ignore[attr-defined]
    service.refresh()
    tables = list(service._scores._tables.values())
    for table in tables:
        changes = snap.changed_since(table.mark)  # type: ignore[attr-defined]
        assert changes is not None and changes.tolist() == []
    # And the order of use is kept: the 100Mi kind is still the one asked about last.
    assert [t.request.epc[EPC] for t in tables] == [16 * MIB, 100 * MIB]


def test_normalise_above_by_hand() -> None:
    # low 0.25, values 0.5 and 0.75: span 0.5; 0.5 -> 10 * 0.5 + 0.5 = 5.5 -> 5; 0.75 -> 10.
    assert normalise_above([0.5, 0.75], 0.25) == [5, 10]
    # Exactly half a step rounds up: (0.25 - 0) / 1 * 10 = 2.5, + 0.5 = 3.0 -> 3.
    assert normalise_above([0.25, 1.0], 0.0) == [3, 10]
    # Just under: 0.125 -> 1.25 + 0.5 = 1.75 -> 1.
    assert normalise_above([0.125, 1.0], 0.0) == [1, 10]
    # One value above the lowest is the highest: 10.
    assert normalise_above([0.3], 0.1) == [10]
    assert normalise_above([], 0.5) == []


@given(
    st.floats(min_value=0.0, max_value=4.0, allow_nan=False),
    st.lists(st.floats(min_value=0.0, max_value=4.0, allow_nan=False), min_size=1, max_size=20),
)
def test_normalise_above_is_normalise_over_all_candidates(low: float, values: list[float]) -> None:
    above = [v for v in values if v > low]
    everything = np.array([*above, low], dtype=np.float64)
    expected = normalise(everything, np.ones(everything.shape[0], dtype=np.bool_))[:-1]
    assert normalise_above(above, low) == expected.tolist()


async def test_informer_change_listeners_run_after_the_snapshot_has_changed(
    tmp_path: Path,
) -> None:
    async with FakeApiServer(bookmark_interval=0.05) as api:
        api.store.load(BY_KIND["Node"], kube_helpers.node("n1", "100Mi"))
        state = InformerState(
            await kube_helpers.configuration(api, tmp_path), Config(), settings=FAST
        )
        seen: list[tuple[int, bool]] = []

        def changed() -> None:
            seen.append((len(state.snapshot), "default/a" in state.snapshot.pods))

        state.change_listeners.append(changed)
        await state.start()
        try:
            await state.wait_synced(timeout=5)
            # Each first list changed the snapshot: one call per list, the node there at the
            # latest by the second.
            assert len(seen) == 2 and seen[-1] == (1, False)
            # Bookmarks (every 0.05 s) change nothing and call nothing.
            await asyncio.sleep(0.3)
            assert len(seen) == 2
            api.store.load(
                BY_KIND["Pod"],
                kube_helpers.pod("a", "30Mi", node_name="n1", phase="Running"),
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while len(seen) < 3 and loop.time() < deadline:
                await asyncio.sleep(0.01)
            # The pod's event: called once, with the pod already in the snapshot.
            assert seen[2:] == [(1, True)]
        finally:
            await state.stop()


def test_raw_score_at_by_hand() -> None:
    # c: 1Gi holding 512Mi; a 16Mi pod: (512 + 16) / 1024 = 0.515625, exact in binary.
    snap, _ = three_nodes()
    request = PodRequest(epc={EPC: 16 * MIB})
    slot = snap.slots["c"]  # type: ignore[attr-defined]
    assert raw_score_at(snap, request, slot, "binpack") == 0.515625  # type: ignore[arg-type]
    assert raw_score_at(snap, request, slot, "spread") == 1 - 0.515625  # type: ignore[arg-type]


def test_raw_score_at_averages_two_epc_names() -> None:
    # d advertises 1Gi of EPC and 512 MiB of the legacy name, holding 256Mi and 128 MiB; a pod
    # asking 16Mi of each: (256 + 16) / 1024 = 0.265625 and (128 + 16) / 512 = 0.28125,
    # averaged: 0.2734375 (all exact in binary).
    item = node("d", "1Gi")
    item["status"]["allocatable"][LEGACY] = "512"
    held = pod("x", "256Mi", node_name="d")
    held["spec"]["containers"][0]["resources"]["requests"][LEGACY] = "128"
    snap = snapshot_of(item, held)
    request = PodRequest(epc={EPC: 16 * MIB, LEGACY: 16 * MIB})
    slot = snap.slots["d"]
    assert raw_score_at(snap, request, slot, "binpack") == 0.2734375
    assert raw_score_at(snap, request, slot, "spread") == 1 - 0.2734375
    vector = raw_scores(snap, request, np.array([slot]), "binpack")
    assert vector.tolist() == [0.2734375]


def test_raw_score_at_on_a_one_byte_node() -> None:
    # 1 byte allocatable, a 1-byte pod: (0 + 1) / 1 = 1.0; a node advertising none: 0.0.
    snap = snapshot_of(node("t", "1"), node("none"))
    request = PodRequest(epc={EPC: 1})
    assert raw_score_at(snap, request, snap.slots["t"], "binpack") == 1.0
    assert raw_score_at(snap, request, snap.slots["none"], "binpack") == 0.0
    with pytest.raises(ValueError, match="unknown strategy 'pack'"):
        raw_score_at(snap, request, snap.slots["t"], "pack")


@given(
    st.lists(st.integers(min_value=0, max_value=64), min_size=1, max_size=6),
    st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=6),
    st.integers(min_value=1, max_value=40),
    st.sampled_from(["binpack", "spread", "balanced"]),
)
def test_raw_score_at_is_raw_scores_at_that_slot(
    sizes: list[int], used: list[int], need: int, strategy: str
) -> None:
    # Nodes of `sizes` MiB (0: advertises none) holding `used` MiB where it fits: every slot's
    # one-slot score must be the vector's, to the bit.
    items: list[dict[str, object]] = []
    for i, size in enumerate(sizes):
        items.append(node(f"n{i}", f"{size}Mi" if size else None))
        if size and i < len(used) and used[i] <= size:
            items.append(pod(f"p{i}", f"{used[i]}Mi", node_name=f"n{i}"))
    snap = snapshot_of(*items)
    request = PodRequest(epc={EPC: need * MIB}, cpu_milli=250, memory=64 * MIB)
    slots = np.arange(len(sizes), dtype=np.int64)
    vector = raw_scores(snap, request, slots, strategy)
    for slot in range(len(sizes)):
        assert raw_score_at(snap, request, slot, strategy) == vector[slot]
