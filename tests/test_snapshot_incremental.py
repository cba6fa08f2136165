"""The snapshot's derived arrays (free EPC per slot, used share) kept current slot by slot equal
the same arrays built from scratch, whatever sequence of events came in between.

The extender reads them on every request and an event between two requests updates only the
node it touched; this checks that shortcut against a snapshot that saw the same events and builds
its arrays once, at the end.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from epcsched.core.snapshot import ClusterSnapshot
from epcsched.model import NodeInfo, PodInfo

EPC = "sgx.intel.com/epc"
LEGACY = "kubernetes.azure.com/sgx_epc_mem_in_MiB"
MI = 2**20
RESOURCES = {EPC: 1, LEGACY: MI}
NODES = ["n0", "n1"]
PODS = ["p0", "p1", "p2"]


def random_op(rng: random.Random) -> tuple[Any, ...]:
    """One event, every kind equally likely, on few names so that events meet on one node."""
    node, pod, mib = rng.choice(NODES), rng.choice(PODS), rng.randint(1, 64)
    return rng.choice(
        [
            ("node", node, rng.choice([EPC, EPC, LEGACY, None]), mib),
            ("pod", pod, rng.choice([*NODES, None]), mib // 2),
            ("remove_node", node),
            ("remove_pod", pod),
            ("reserve", pod, node, mib // 4 + 1),
            ("release", pod),
            ("usage", node, rng.choice([None, mib])),
            ("pressure", node, rng.random() < 0.5),
            ("clear_usage",),
            ("accounting", rng.choice(["requests", "usage", "max"])),
        ]
    )


def apply(snap: ClusterSnapshot, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "node":
        _, name, resource, mib = op
        epc = {resource: mib * MI} if resource else {}
        snap.upsert_node(NodeInfo(name, epc, cpu_milli=4000, memory=8 * 2**30))
    elif kind == "pod":
        _, name, node, mib = op
        snap.upsert_pod(
            PodInfo("default", name, node_name=node, phase="Running", epc={EPC: mib * MI})
        )
    elif kind == "remove_node":
        snap.remove_node(op[1])
    elif kind == "remove_pod":
        snap.remove_pod(f"default/{op[1]}")
    elif kind == "reserve":
        _, name, node, mib = op
        if node in snap.slots:
            snap.reserve(f"default/{name}", node, {EPC: mib * MI}, expires_at=1.0)
    elif kind == "release":
        snap.release(f"default/{op[1]}")
    elif kind == "usage":
        _, node, mib = op
        snap.set_usage(node, None if mib is None else mib * MI)
    elif kind == "pressure":
        _, node, on = op
        snap.set_pressure(node, "paging" if on else None)
    elif kind == "clear_usage":
        snap.clear_usage()
    else:
        snap.accounting = op[1]


def read(snap: ClusterSnapshot) -> list[np.ndarray[Any, Any]]:
    out: list[np.ndarray[Any, Any]] = []
    for name in RESOURCES:
        out.append(snap.fit_view(name).copy())
        used, allocatable = snap.used_and_allocatable(name)
        out += [used.copy(), allocatable.copy()]
    return out


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 120))
def test_arrays_followed_event_by_event_equal_arrays_built_once(seed: int, count: int) -> None:
    rng = random.Random(seed)
    followed = ClusterSnapshot(RESOURCES, capacity=2)
    built = ClusterSnapshot(RESOURCES, capacity=2)
    read(followed)
    for _ in range(count):
        op = random_op(rng)
        apply(followed, op)
        apply(built, op)
        if rng.random() < 0.7:
            read(followed)
    for got, expected in zip(read(followed), read(built), strict=True):
        assert got.shape == expected.shape
        assert np.array_equal(got, expected)


def test_a_bind_updates_one_slot_of_the_view() -> None:
    snap = ClusterSnapshot({EPC: 1})
    for name in NODES:
        snap.upsert_node(NodeInfo(name, {EPC: 64 * MI}))
    view = snap.fit_view(EPC)
    before = view.copy()
    snap.upsert_pod(PodInfo("default", "a", node_name="n1", phase="Running", epc={EPC: 24 * MI}))
    after = snap.fit_view(EPC)
    slot = snap.slots["n1"]
    assert after is view  # brought up to date in place, not rebuilt
    assert after[slot] == 40 * MI
    changed = np.flatnonzero(after != before)
    assert changed.tolist() == [slot]
