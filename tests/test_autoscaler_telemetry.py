"""The autoscaler's EPC pressure from a real Prometheus (issue 7 point 3).

A small HTTP server on loopback serves exporter metrics (capacity, free EPC, an eviction counter
that grows at a fixed rate); a real Prometheus scrapes it every second; the autoscaler's dry run
polls Prometheus as the live loop does. It protects three rules: a pool's utilization for the
pressure rule is the larger of requested and measured EPC per node (so measured use can grow a
pool whose requests look small), a node paging above `pressure.pagingRate` counts as full and is
never a scale-down candidate, and when the telemetry is stale the plan falls back to requests and
the output says so.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from epcsched.autoscaler.runtime import snapshot_once
from epcsched.config import config_from_mapping
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.kube.snapshot import load_snapshot
from tests.prometheus_fixtures import PrometheusServer

pytestmark = pytest.mark.timeout(120)

GIB = 2**30
EPC = "sgx.intel.com/epc"
STARTED = time.time()
# What the exporters of six nodes report: (EPC in use in GiB, pages evicted per second).
MEASURED = {
    # Pressure scenario: requests are 4Gi + 4Gi + 0 of 48Gi, but measured use is far higher.
    "a1": (16, 0),
    "a2": (12, 0),
    "a3": (0, 500),
    # Scale-down scenario: all idle, but b0 pages.
    "b0": (0, 500),
    "b1": (1, 0),
    "b2": (1, 0),
}


async def metrics(_: web.Request) -> web.Response:
    elapsed = time.time() - STARTED
    lines = ["# TYPE epcsched_node_epc_capacity_bytes gauge"]
    lines += [f'epcsched_node_epc_capacity_bytes{{node="{n}"}} {16 * GIB}' for n in MEASURED]
    lines.append("# TYPE epcsched_node_epc_free_bytes gauge")
    lines += [
        f'epcsched_node_epc_free_bytes{{node="{n}"}} {(16 - used) * GIB}'
        for n, (used, _) in MEASURED.items()
    ]
    lines.append("# TYPE epcsched_node_epc_evicted_pages_total counter")
    lines += [
        f'epcsched_node_epc_evicted_pages_total{{node="{n}"}} {int(rate * elapsed)}'
        for n, (_, rate) in MEASURED.items()
    ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


@pytest.fixture(scope="module")
def exporter_port() -> Iterator[int]:
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = int(runner.addresses[0][1])
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(
        f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}), timeout=5
    ) as response:
        body: dict[str, Any] = json.loads(response.read())
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, exporter_port: int
) -> Iterator[PrometheusServer]:
    server = PrometheusServer(
        tmp_path_factory.mktemp("prometheus-autoscaler"), targets=[f"127.0.0.1:{exporter_port}"]
    )
    server.start()
    try:
        # Until the paging rate of every paging node is measured (a rate needs two scrapes).
        deadline = time.monotonic() + 60
        while True:
            rates = _query(server.url, "rate(epcsched_node_epc_evicted_pages_total[2m]) > 100")
            if len(rates) == 2:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("Prometheus never measured the paging rates")
            time.sleep(0.5)
        yield server
    finally:
        server.stop()


def node(name: str) -> dict[str, Any]:
    allocatable = {EPC: "16Gi", "cpu": "4", "memory": "16Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"agentpool": "sgx"}},
        "status": {"allocatable": allocatable, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def pod(name: str, epc: str, node_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "apps",
            "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}],
        },
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "e", "resources": {"limits": {EPC: epc}}}],
        },
        "status": {"phase": "Running"},
    }


def settings(url: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "pressure": {"pagingRate": 100},
        "autoscaler": {
            "scaleDownUnneededTime": "0s",
            "scaleDownDelayAfterAdd": "0s",
            "nodePools": [
                {
                    "name": "sgx",
                    "provider": "simulated",
                    "minSize": 0,
                    "maxSize": 10,
                    "nodeSelector": {"agentpool": "sgx"},
                    "template": {
                        "resources": {EPC: "16Gi", "cpu": "4", "memory": "16Gi", "pods": "110"}
                    },
                }
            ],
        },
    }
    if url:
        data["prometheus"] = {"url": url, "staleAfter": "30s"}
    return data


async def plan(tmp_path: Path, url: str | None, items: list[dict[str, Any]]) -> dict[str, Any]:
    path = tmp_path / "snap.json"
    path.write_text(json.dumps({"kind": "List", "items": items}))
    config = config_from_mapping(settings(url))
    snapshot: ClusterSnapshot = load_snapshot([path], config)
    return await snapshot_once(config, snapshot, [str(path)])


PRESSURE = [node("a1"), node("a2"), node("a3"), pod("x", "4Gi", "a1"), pod("y", "4Gi", "a2")]
IDLE = [node("b0"), node("b1"), node("b2")]


async def test_measured_use_and_paging_grow_a_pool_requests_alone_would_not(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    # By requests: 8Gi of 48Gi. Measured: a1 16Gi, a2 12Gi, and a3 pages so it counts as full:
    # 44/48 = 0.917 of EPC, 1.146 times the 0.8 target (outside the 0.1 tolerance), so the
    # HPA rule asks for ceil(3 * 1.146) = 4 nodes.
    without = await plan(tmp_path, None, PRESSURE)
    # By requests alone a3 is idle and goes (scaleDownUnneededTime 0s).
    assert (without["pools"][0]["action"], without["pools"][0]["nodesToRemove"]) == (
        "scale-down",
        ["a3"],
    )
    measured = await plan(tmp_path, prometheus.url, PRESSURE)
    assert measured["telemetry"]["stale"] is False
    row = measured["pools"][0]
    assert (row["action"], row["currentSize"], row["targetSize"]) == ("scale-up", 3, 4)
    assert "pressure" in row["reason"]


async def test_a_paging_node_is_never_removed(tmp_path: Path, prometheus: PrometheusServer) -> None:
    # All three nodes are idle by requests; in name order b0 would go first, but it pages.
    without = await plan(tmp_path, None, IDLE)
    assert without["pools"][0]["nodesToRemove"] == ["b0"]
    measured = await plan(tmp_path, prometheus.url, IDLE)
    assert measured["pools"][0]["nodesToRemove"] == ["b1"]


async def test_stale_telemetry_falls_back_to_requests_and_says_so(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A Prometheus that scrapes nothing: no fresh sample for any node.
    empty = PrometheusServer(tmp_path_factory.mktemp("prometheus-empty"))
    empty.start()
    try:
        result = await plan(tmp_path, empty.url, PRESSURE)
    finally:
        empty.stop()
    assert result["telemetry"]["stale"] is True
    assert "no EPC samples" in result["telemetry"]["detail"]["error"]
    assert result["pools"][0]["nodesToRemove"] == ["a3"]  # exactly what requests alone say
