"""`POST /preempt` keeps only the nodes where the proposed victims free enough EPC.

kube-scheduler (with `preemptVerb` set) proposes victims per node, by UID in cache mode and as
whole pods otherwise; the extender drops the nodes where evicting them would not let the pod's
EPC fit, and leaves the victims of the others unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from epcsched.config import Config
from epcsched.extender.app import create_app
from epcsched.state import SnapshotState
from tests.helpers import LEGACY, node, pod, snapshot_of

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def client(extender_client: MakeClient) -> TestClient[Any, Any]:
    snap = snapshot_of(
        node("a", "94Mi"),
        node("b", "94Mi"),
        node("c", "94", resource=LEGACY),
        pod("x", "40Mi", node_name="a"),
        pod("y", "40Mi", node_name="a"),
        pod("z", "10Mi", node_name="b"),
        pod("w", "70Mi", node_name="b"),
        pod("v", "50", node_name="c", resource=LEGACY),
    )
    return await extender_client(create_app(Config(), SnapshotState(snap)))


def meta(*uids: str, pdb: int = 0) -> dict[str, Any]:
    return {"Pods": [{"UID": u} for u in uids], "NumPDBViolations": pdb}


async def preempt(client: TestClient[Any, Any], body: Any) -> tuple[int, Any]:
    async with client.post("/preempt", data=json.dumps(body)) as response:
        return response.status, await response.json()


async def test_cache_mode_drops_nodes_where_victims_free_too_little(
    client: TestClient[Any, Any],
) -> None:
    body = {
        "Pod": pod("p", "64Mi"),
        "NodeNameToVictims": None,
        "NodeNameToMetaVictims": {
            "a": meta("uid-x"),
            "b": meta("uid-w", pdb=1),
            "c": meta("uid-v"),
        },
    }
    status, reply = await preempt(client, body)
    assert status == 200
    assert reply == {"NodeNameToMetaVictims": {"b": meta("uid-w", pdb=1)}}
    body["NodeNameToMetaVictims"]["a"] = meta("uid-x", "uid-y")
    status, reply = await preempt(client, body)
    assert set(reply["NodeNameToMetaVictims"]) == {"a", "b"}
    assert reply["NodeNameToMetaVictims"]["a"] == meta("uid-x", "uid-y")


async def test_full_mode_reads_victims_from_the_pods_sent(client: TestClient[Any, Any]) -> None:
    body = {
        "Pod": pod("p", "64Mi"),
        "NodeNameToVictims": {
            "a": {"Pods": [pod("x", "40Mi", node_name="a")], "NumPDBViolations": 0},
            "b": {"Pods": [pod("w", "70Mi", node_name="b")], "NumPDBViolations": 0},
        },
        "NodeNameToMetaVictims": None,
    }
    status, reply = await preempt(client, body)
    assert status == 200
    assert reply == {"NodeNameToMetaVictims": {"b": meta("uid-w")}}


async def test_pods_without_epc_keep_every_node(client: TestClient[Any, Any]) -> None:
    body = {"Pod": pod("p", cpu="1"), "NodeNameToMetaVictims": {"a": meta("uid-x"), "c": meta()}}
    status, reply = await preempt(client, body)
    assert status == 200 and set(reply["NodeNameToMetaVictims"]) == {"a", "c"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "malformed JSON"),
        (b'{"NodeNameToMetaVictims": {}}', "missing Pod"),
        (b'{"Pod": {}}', "neither NodeNameToMetaVictims nor NodeNameToVictims"),
        (b'{"Pod": {}, "NodeNameToMetaVictims": {"a": {"Pods": 3}}}', "NodeNameToMetaVictims"),
        (
            b'{"Pod": {}, "NodeNameToVictims": {"a": {"Pods": [{"spec": {"containers": '
            b'[{"resources": {"requests": {"sgx.intel.com/epc": "x"}}}]}}]}}}',
            "NodeNameToVictims[a].Pods[0]",
        ),
    ],
)
async def test_bad_preempt_requests_are_400(
    client: TestClient[Any, Any], body: bytes, message: str
) -> None:
    async with client.post("/preempt", data=body) as response:
        assert response.status == 400
        assert message in (await response.json())["Error"]
