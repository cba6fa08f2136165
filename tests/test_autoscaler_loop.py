"""The live autoscaler controller against the fake API server, with kubernetes-asyncio clients.

What it protects (issue 7 points 4, 5 and 7): a burst of unschedulable EPC pods is one decision
and one absolute target; the pool grows, and shrinks back once the pods are gone (cordon, drain,
remove exactly that node); a controller killed in the middle of a scale-up and restarted does
not scale again; of two replicas exactly one acts, and when it dies without a word the other
takes over within the lease duration; an API outage changes nothing until the API is back; a
provider that keeps failing backs the pool off and says so in the status ConfigMap and in the
pods' Events; a node that never advertises EPC is given up after maxNodeProvisionTime.

Timers are seconds instead of minutes (interval 0.3 s, lease 3 s), so every wait is real but
short; each test has a timeout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client

from epcsched.autoscaler.loop import Autoscaler
from epcsched.autoscaler.providers.base import PoolSize
from epcsched.autoscaler.providers.simulated import SimulatedProvider
from epcsched.autoscaler.runtime import controller, simulated_provider
from epcsched.config import Config, NodePoolSettings, config_from_mapping
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND
from tests.kube_helpers import configuration

pytestmark = pytest.mark.timeout(90)

NS = "default"
LEASE_SECONDS = 3.0


def settings(**autoscaler: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "interval": "0.3s",
        "batchIdle": "0.2s",
        "batchMax": "1s",
        "scaleDownUnneededTime": "1s",
        "scaleDownDelayAfterAdd": "0s",
        "maxNodeProvisionTime": "30s",
        "maxPodEvictionTime": "5s",
        "backoff": {"initial": "2s", "max": "8s", "reset": "1h"},
        "nodePools": [
            {
                "name": "sgx",
                "provider": "simulated",
                "minSize": 0,
                "maxSize": 5,
                "nodeSelector": {"agentpool": "sgx"},
                "template": {
                    "resources": {
                        "sgx.intel.com/epc": "16Gi",
                        "cpu": "4",
                        "memory": "16Gi",
                        "pods": "110",
                    },
                    "labels": {"agentpool": "sgx"},
                },
            }
        ],
    }
    base.update(autoscaler)
    return {"autoscaler": base}


def make_config(**autoscaler: Any) -> Config:
    return config_from_mapping(settings(**autoscaler))


def enclave(name: str, epc: str) -> dict[str, Any]:
    """A ReplicaSet's enclave pod that kube-scheduler found no node for."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "enclave",
                    "uid": "rs-1",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "enclave",
                    "image": "enclave:1",
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "64Mi"},
                        "limits": {"sgx.intel.com/epc": epc},
                    },
                }
            ]
        },
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/0 nodes are available",
                }
            ],
        },
    }


class Recording:
    """A provider wrapper that notes every change asked for, with when (monotonic)."""

    def __init__(self, inner: SimulatedProvider) -> None:
        self.inner = inner
        self.calls: list[tuple[str, int, float]] = []

    async def size(self, pool: NodePoolSettings) -> PoolSize:
        return await self.inner.size(pool)

    async def set_target(self, pool: NodePoolSettings, target: int) -> None:
        self.calls.append(("set_target", target, time.monotonic()))
        await self.inner.set_target(pool, target)

    async def remove_node(self, pool: NodePoolSettings, node: str, target: int) -> None:
        self.calls.append((f"remove_node {node}", target, time.monotonic()))
        await self.inner.remove_node(pool, node, target)

    async def close(self) -> None:
        return None


async def submit(api: client.ApiClient, name: str, epc: str) -> None:
    """Create the pod, then mark it as kube-scheduler does after failing to place it (the API
    server resets the status of a new pod)."""
    core = client.CoreV1Api(api)
    body = enclave(name, epc)
    await core.create_namespaced_pod(NS, body)
    await core.patch_namespaced_pod_status(
        name, NS, {"status": body["status"]}, _content_type="application/merge-patch+json"
    )


async def until(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@asynccontextmanager
async def running(
    server: FakeApiServer,
    tmp_path: Path,
    config: Config,
    provider: Any,
    identity: str = "a",
) -> AsyncIterator[Autoscaler]:
    conf = await configuration(server, tmp_path)
    stop = asyncio.Event()
    started: asyncio.Future[Autoscaler] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        controller(
            config,
            conf,
            namespace=NS,
            identity=identity,
            host="127.0.0.1",
            port=0,
            lease_duration=LEASE_SECONDS,
            providers={"simulated": provider},
            stop=stop,
            started=started,
        )
    )
    done, _ = await asyncio.wait({task, started}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    scaler = started.result()
    try:
        yield scaler
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@pytest.fixture
async def server() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer(bookmark_interval=0.5) as api:
        yield api


@pytest.fixture
async def api(server: FakeApiServer, tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    conf = await configuration(server, tmp_path)
    async with client.ApiClient(conf) as api_client:
        yield api_client


def node_names(server: FakeApiServer) -> list[str]:
    return sorted(n["metadata"]["name"] for n in server.store.items(BY_KIND["Node"], None))


def pod_events(server: FakeApiServer, reason: str) -> list[dict[str, Any]]:
    return [e for e in server.store.items(BY_KIND["Event"], None) if e.get("reason") == reason]


def status(server: FakeApiServer) -> dict[str, Any]:
    cm = server.store.get(BY_KIND["ConfigMap"], NS, "epcsched-autoscaler-status")
    data: dict[str, Any] = yaml.safe_load(cm["data"]["status"])
    return data


async def bind_all(api: client.ApiClient, server: FakeApiServer, nodes: list[str]) -> None:
    """Play kube-scheduler: pending pods onto the nodes, two 6Gi pods per 16Gi node."""
    core = client.CoreV1Api(api)
    pending = sorted(
        p["metadata"]["name"]
        for p in server.store.items(BY_KIND["Pod"], NS)
        if not p["spec"].get("nodeName")
    )
    for i, name in enumerate(pending):
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": nodes[i // 2]},
        }
        await core.create_namespaced_binding(NS, body, _preload_content=False)


async def test_a_burst_is_one_decision_then_the_pool_grows_and_shrinks_back(
    server: FakeApiServer, api: client.ApiClient, tmp_path: Path
) -> None:
    inner = simulated_provider(make_config(), api, None, delay=0.5)
    assert isinstance(inner, SimulatedProvider)
    provider = Recording(inner)
    async with running(server, tmp_path, make_config(interval="3s"), provider) as scaler:
        await until(scaler.acting, 10, "leadership")
        # Right after an interval loop, so that only the batch can wake the next decision.
        loops = scaler.loops
        await until(lambda: scaler.loops > loops, 5, "an interval loop")
        core = client.CoreV1Api(api)
        first = time.monotonic()
        for i in range(4):
            await submit(api, f"e-{i}", "6Gi")
            await asyncio.sleep(0.05)
        await until(lambda: bool(provider.calls), 10, "a scale-up")
        latency = provider.calls[0][2] - first
        print(f"burst of 4 pods -> provider call after {latency:.2f}s")
        await asyncio.sleep(1.0)
        # 6Gi + 6Gi fit a 16Gi node, a third does not: four pods need two nodes, asked at once.
        assert [c[:2] for c in provider.calls] == [("set_target", 2)]
        assert latency < 1.0 + 0.5  # batchMax, plus a loop's own time
        await until(lambda: len(node_names(server)) == 2, 10, "two nodes to join")
        assert {e["involvedObject"]["name"] for e in pod_events(server, "TriggeredScaleUp")} == {
            f"e-{i}" for i in range(4)
        }
        message = pod_events(server, "TriggeredScaleUp")[0]["message"]
        assert message == "pod triggered scale-up: [{sgx 0->2 (max: 5)}]"
        await bind_all(api, server, node_names(server))
        await asyncio.sleep(1.0)
        assert [c[:2] for c in provider.calls] == [("set_target", 2)]
        # The pods finish: both nodes become unneeded and go, one at a time.
        for i in range(4):
            await core.delete_namespaced_pod(f"e-{i}", NS)
        await until(lambda: node_names(server) == [], 20, "the pool to shrink back")
        removals = [c for c in provider.calls if c[0].startswith("remove_node")]
        assert [c[1] for c in removals] == [1, 0]

        def removed() -> list[str]:
            return sorted(
                e["involvedObject"]["name"]
                for e in pod_events(server, "ScaleDown")
                if e["message"].startswith("node removed by epcsched")
            )

        # The Event follows the provider's removal of the node by a moment.
        await until(lambda: len(removed()) == 2, 5, "the second ScaleDown Event")
        assert removed() == ["sgx-sim-00000", "sgx-sim-00001"]
        assert status(server)["pools"]["sgx"]["target"] == 0
        # What an operator's Prometheus and probes see.
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{scaler.http_port}"
            async with http.get(f"{base}/metrics") as response:
                text = await response.text()
            async with http.get(f"{base}/healthz") as health:
                assert health.status == 200
            async with http.get(f"{base}/readyz") as ready:
                assert ready.status == 200 and (await ready.json())["leader"] is True
        for line in (
            'epcsched_autoscaler_scale_total{direction="up",pool="sgx"} 2.0',
            'epcsched_autoscaler_scale_total{direction="down",pool="sgx"} 2.0',
            'epcsched_autoscaler_pool_size{pool="sgx",state="target"} 0.0',
            "epcsched_autoscaler_unschedulable_pods 0.0",
            'epcsched_autoscaler_backoff{pool="sgx"} 0.0',
            "epcsched_autoscaler_leader 1.0",
        ):
            assert line in text.splitlines(), line
        assert "epcsched_autoscaler_loop_seconds_count" in text


async def test_killed_mid_scale_up_and_restarted_does_not_scale_again(
    server: FakeApiServer, api: client.ApiClient, tmp_path: Path
) -> None:
    inner = simulated_provider(make_config(), api, None, delay=60)
    assert isinstance(inner, SimulatedProvider)
    provider = Recording(inner)
    await submit(api, "e-0", "10Gi")
    async with running(server, tmp_path, make_config(), provider, identity="a") as scaler:
        await until(lambda: bool(provider.calls), 10, "the scale-up")
        await until(lambda: "sgx" in status(server).get("pools", {}), 5, "the status")
        asked = status(server)["pools"]["sgx"]["askedAt"]
        assert scaler.acting()
    # A new replica with no memory of its own: the node it asked for is still booting.
    async with running(server, tmp_path, make_config(), provider, identity="b") as again:
        await until(again.acting, 10, "leadership of the new replica")
        loops = again.loops
        await until(lambda: again.loops >= loops + 3, 10, "three more loops")
        assert [c[:2] for c in provider.calls] == [("set_target", 1)]
        assert status(server)["pools"]["sgx"]["askedAt"] == asked
        assert again.last_decision is not None
        assert again.last_decision.pool("sgx").in_flight == 1


async def test_two_replicas_exactly_one_acts_and_the_other_takes_over_when_it_dies(
    server: FakeApiServer, api: client.ApiClient, tmp_path: Path
) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(settings()))
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    # Replica A is its own process, so that it can die without a word (SIGKILL).
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "epcsched",
            "autoscaler",
            "--config",
            str(config_file),
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            NS,
            "--identity",
            "replica-a",
            "--port",
            "0",
            "--lease-duration",
            str(LEASE_SECONDS),
        ],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:

        def holder() -> str | None:
            try:
                lease = server.store.get(BY_KIND["Lease"], NS, "epcsched-autoscaler")
            except Exception:
                return None
            value = lease.get("spec", {}).get("holderIdentity")
            return str(value) if value else None

        await until(lambda: holder() == "replica-a", 20, "replica A to lead")
        inner = simulated_provider(make_config(), api, None, delay=60)
        assert isinstance(inner, SimulatedProvider)
        provider = Recording(inner)
        async with running(server, tmp_path, make_config(), provider, identity="replica-b") as b:
            await asyncio.sleep(1.0)
            assert not b.acting()
            await submit(api, "e-0", "10Gi")
            # Only the leader acts: A grows its own (separate) simulated pool; B asks nothing.
            await until(lambda: len(pod_events(server, "TriggeredScaleUp")) == 1, 10, "A's act")
            assert provider.calls == []
            assert pod_events(server, "TriggeredScaleUp")[0]["source"]["host"] == "replica-a"
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            killed = time.monotonic()
            await until(b.acting, LEASE_SECONDS + 3, "replica B to take over")
            took = time.monotonic() - killed
            print(f"replica B leads {took:.2f}s after replica A was killed")
            assert took <= LEASE_SECONDS + 1.0
            assert holder() == "replica-b"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


async def test_an_api_outage_changes_nothing_until_the_api_is_back(
    server: FakeApiServer, api: client.ApiClient, tmp_path: Path
) -> None:
    inner = simulated_provider(make_config(), api, None, delay=0.3)
    assert isinstance(inner, SimulatedProvider)
    provider = Recording(inner)
    async with running(server, tmp_path, make_config(), provider) as scaler:
        await until(scaler.acting, 10, "leadership")
        server.faults.fail_next(503, 10**6)
        await until(lambda: not scaler.acting(), LEASE_SECONDS, "stepping down")
        loops = scaler.loops
        await asyncio.sleep(1.5)
        assert scaler.loops > loops  # alive, and observing
        assert provider.calls == []
        server.faults.clear()
        await until(scaler.acting, 10, "leadership again")
        await submit(api, "e-0", "10Gi")
        await until(lambda: bool(provider.calls), 10, "the scale-up after the outage")
        assert [c[:2] for c in provider.calls] == [("set_target", 1)]


async def test_a_failing_provider_backs_off_and_says_so(
    server: FakeApiServer, api: client.ApiClient, tmp_path: Path
) -> None:
    inner = simulated_provider(make_config(), api, None, delay=0.3)
    assert isinstance(inner, SimulatedProvider)
    inner.fail_next("sgx", "quota exceeded for Standard_DC4s_v3", count=1000)
    async with running(server, tmp_path, make_config(), inner) as scaler:
        await until(scaler.acting, 10, "leadership")
        await submit(api, "e-0", "10Gi")

        def backed_off() -> bool:
            try:
                return "backoffUntil" in status(server)["pools"]["sgx"]
            except Exception:
                return False

        await until(backed_off, 10, "the backoff in the status ConfigMap")
        assert "quota exceeded" in status(server)["pools"]["sgx"]["failure"]
        await until(lambda: bool(pod_events(server, "NotTriggerScaleUp")), 10, "a pod Event")
        message = pod_events(server, "NotTriggerScaleUp")[0]["message"]
        assert "backed off" in message and "quota exceeded" in message
        assert node_names(server) == []
        inner.clear_faults()
        # After the backoff (2 s) the pool grows.
        await until(lambda: node_names(server) == ["sgx-sim-00000"], 10, "the scale-up")


async def test_a_node_that_never_advertises_epc_is_given_up(
    server: FakeApiServer, api: client.ApiClient, tmp_path: Path
) -> None:
    config = make_config(maxNodeProvisionTime="2s")
    inner = simulated_provider(config, api, None, delay=0.2)
    assert isinstance(inner, SimulatedProvider)
    inner.epc["sgx"] = False
    provider = Recording(inner)
    async with running(server, tmp_path, config, provider) as scaler:
        await until(scaler.acting, 10, "leadership")
        await submit(api, "e-0", "10Gi")
        await until(lambda: node_names(server) == ["sgx-sim-00000"], 10, "a node without EPC")
        # Ready but without EPC: still in flight, no second scale-up.
        await asyncio.sleep(1.0)
        assert [c[:2] for c in provider.calls] == [("set_target", 1)]
        await until(lambda: len(provider.calls) >= 2, 5, "giving the node up")
        assert provider.calls[1][:2] == ("remove_node sgx-sim-00000", 0)
        pool = status(server)["pools"]["sgx"]
        assert "maxNodeProvisionTime" in pool["failure"] and "backoffUntil" in pool
