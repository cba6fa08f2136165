"""kube-scheduler reads our answers as it reads any extender's, and picks the same node as if
prioritize listed every candidate.

Replies are decoded with the field names and Go types of kube-scheduler's `extenderv1` structs
(`ExtenderFilterResult`, `HostPriorityList`), strictly: a field it does not read would fail the
decode. Its choice is then made its way: each listed host's score times weight times
MaxNodeScore/MaxExtenderPriority (100/10) added to its own plugins' total, a host not listed
adding nothing, the highest total winning (ties at random). Prioritize lists only the hosts that
score above the lowest candidate, so the set of winners must equal the set from the full list
(every candidate scored by the core), over many clusters, pods, plugin scores and strategies,
with each pod bound into the cache before the next is asked about, as in a cluster, and now
and then another pod landing between a filter and its prioritize.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from epcsched.config import Config
from epcsched.core.score import score
from epcsched.extender.app import create_app
from epcsched.extender.service import ExtenderService
from epcsched.objects import Pod, pod_info
from epcsched.quantity import DEFAULT_EPC_RESOURCES
from epcsched.state import SnapshotState
from tests.helpers import LEGACY, node, pod, request_of, snapshot_of

FIXTURES = Path(__file__).parent / "fixtures" / "kube-scheduler-1.35"
MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]

MAX_NODE_SCORE = 100
MAX_EXTENDER_PRIORITY = 10
WEIGHT = 5  # what manifests/ configures
INT64 = 2**63


# ----- kube-scheduler's extender v1 types (k8s.io/kube-scheduler/extender/v1) ---------------
class ExtenderFilterResult(msgspec.Struct, forbid_unknown_fields=True):
    Nodes: dict[str, Any] | None = None  # *v1.NodeList
    NodeNames: list[str] | None = None  # *[]string
    FailedNodes: dict[str, str] | None = None  # FailedNodesMap
    FailedAndUnresolvableNodes: dict[str, str] | None = None
    Error: str = ""


class HostPriority(msgspec.Struct, forbid_unknown_fields=True):
    Host: str
    Score: int  # int64


filter_result = msgspec.json.Decoder(ExtenderFilterResult)
host_priority_list = msgspec.json.Decoder(list[HostPriority])


def winners(candidates: list[str], listed: list[HostPriority], plugins: dict[str, int]) -> set[str]:
    """The hosts kube-scheduler may pick: highest total, extender scores added per listed host."""
    extra: dict[str, int] = {}
    for entry in listed:
        assert 0 <= entry.Score <= MAX_EXTENDER_PRIORITY and -INT64 <= entry.Score < INT64
        assert entry.Host in candidates, f"{entry.Host} was not asked about"
        extra[entry.Host] = extra.get(entry.Host, 0) + entry.Score * WEIGHT
    totals = {
        n: plugins.get(n, 0) + extra.get(n, 0) * (MAX_NODE_SCORE // MAX_EXTENDER_PRIORITY)
        for n in candidates
    }
    best = max(totals.values())
    return {n for n, total in totals.items() if total == best}


def chunked(names: list[str], rng: random.Random) -> list[str]:
    size = max(1, int(len(names) ** 0.5))
    chunks = [names[i : i + size] for i in range(0, len(names), size)]
    rng.shuffle(chunks)
    return [n for chunk in chunks for n in chunk]


node_kinds = st.sampled_from(["1Gi", "4Gi", "8Gi", "16Gi", "64Gi", "94Mi", "legacy", "none"])
pod_sizes = st.sampled_from(["16Mi", "64Mi", "256Mi", "1Gi", "3Gi", None])


@settings(max_examples=150, deadline=None)
@given(
    nodes=st.lists(st.tuples(node_kinds, st.integers(0, 3)), min_size=2, max_size=12),
    pods=st.lists(pod_sizes, min_size=1, max_size=8),
    strategy=st.sampled_from(["binpack", "spread", "balanced"]),
    plugins=st.lists(st.integers(0, 300), min_size=12, max_size=12),
    seed=st.integers(0, 2**32),
)
def test_listing_only_scores_above_the_lowest_picks_as_the_full_list(
    nodes: list[tuple[str, int]],
    pods: list[str | None],
    strategy: str,
    plugins: list[int],
    seed: int,
) -> None:
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    names = [f"n{i:02d}" for i in range(len(nodes))]
    for name, (kind, existing) in zip(names, nodes, strict=True):
        if kind == "legacy":
            items.append(node(name, "16384", resource=LEGACY))
        else:
            items.append(node(name, None if kind == "none" else kind, cpu="4"))
        items += [pod(f"{name}-p{j}", "32Mi", node_name=name) for j in range(existing)]
    snap = snapshot_of(*items)
    service = ExtenderService(lambda: snap, strategy=strategy)
    own = dict(zip(names, plugins, strict=False))
    for i, size in enumerate(pods):
        incoming = pod(f"incoming-{i}", size, cpu="100m")
        body = {"Pod": incoming, "Nodes": None, "NodeNames": chunked(names, rng)}
        result = filter_result.decode(service.filter(json.dumps(body).encode()))
        assert result.Error == "" and result.Nodes is None and result.NodeNames is not None
        passing = result.NodeNames
        if not passing:
            continue
        if len(passing) == 1:
            chosen = passing[0]  # kube-scheduler does not call prioritize for one node
        else:
            if rng.random() < 0.3:
                # Another scheduler's pod lands between filter and prioritize: some candidates
                # may no longer fit, and those must score as the core scores them (0).
                racer = pod(f"racer-{i}", rng.choice(["1Gi", "4Gi", "16Gi"]), cpu="1")
                racer["spec"]["nodeName"] = rng.choice(passing)
                snap.upsert_pod(pod_info(msgspec.convert(racer, Pod), DEFAULT_EPC_RESOURCES))
            body["NodeNames"] = passing
            listed = host_priority_list.decode(service.prioritize(json.dumps(body).encode()))
            request = request_of(incoming)
            everyone = score(snap, request, snap.slots_of(passing), strategy)
            full = [HostPriority(n, int(s)) for n, s in zip(passing, everyone, strict=True)]
            assert winners(passing, listed, own) == winners(passing, full, own)
            # Exactly the core's scores, less the lowest, for the hosts above it.
            lowest = min(entry.Score for entry in full)
            expected = {e.Host: e.Score - lowest for e in full if e.Score > lowest}
            assert {entry.Host: entry.Score for entry in listed} == expected
            assert len(listed) == len(expected)
            chosen = min(winners(passing, listed, own))
        # The binding reaches the cache before the next pod, as a watch event would.
        bound = pod(f"incoming-{i}", size, node_name=chosen, cpu="100m")
        snap.upsert_pod(pod_info(msgspec.convert(bound, Pod), DEFAULT_EPC_RESOURCES))


async def test_replies_to_captured_bodies_decode_as_extenderv1(
    extender_client: MakeClient,
) -> None:
    # The cluster the fixtures were captured on (see tests/fixtures/kube-scheduler-1.35).
    snap = snapshot_of(
        node("sgx-a", "94Mi"),
        node("sgx-b", "32Gi"),
        node("sgx-c", "16384", resource=LEGACY),
        node("plain-d"),
        node("sgx-e", "16Gi"),
        node("sgx-f", "8Gi"),
        pod("a1", "72Mi", node_name="sgx-a"),
        pod("e1", "4Gi", node_name="sgx-e"),
        pod("f1", "6Gi", node_name="sgx-f"),
    )
    client = await extender_client(create_app(Config(), SnapshotState(snap)))
    replies = {}
    for name in ("filter-nodecache", "prioritize-nodecache", "filter-fullnodes"):
        verb = name.split("-")[0]
        body = (FIXTURES / f"{name}.json").read_bytes()
        async with client.post(f"/{verb}", data=body) as response:
            assert response.status == 200
            replies[name] = await response.read()
    cache_mode = filter_result.decode(replies["filter-nodecache"])
    assert cache_mode.NodeNames == ["sgx-e", "sgx-f", "sgx-b"] and cache_mode.Nodes is None
    full_mode = filter_result.decode(replies["filter-fullnodes"])
    assert full_mode.NodeNames is None and full_mode.Nodes is not None
    assert [n["metadata"]["name"] for n in full_mode.Nodes["items"]] == ["sgx-e", "sgx-f", "sgx-b"]
    listed = host_priority_list.decode(replies["prioritize-nodecache"])
    # binpack, 64Mi: sgx-f ends 6/8 full (10), sgx-e 4/16 (between), sgx-b empty (0, unlisted).
    assert [h.Host for h in listed] == ["sgx-e", "sgx-f"]
    assert listed[1].Score == 10 and 0 < listed[0].Score < 10
    candidates = ["sgx-e", "sgx-f", "sgx-b"]
    assert winners(candidates, listed, {}) == {"sgx-f"}
    # Even when kube-scheduler's own plugins prefer the empty node by less than the gap.
    assert winners(candidates, listed, {"sgx-b": 400}) == {"sgx-f"}
