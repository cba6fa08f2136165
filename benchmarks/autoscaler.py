"""Autoscaler speed: `python benchmarks/autoscaler.py`.

One decision for 1,000 pending EPC pods on a cluster of 500 full nodes in 5 pools (the pure
`decide`, which runs the planner: target under 1 s, aim 0.2 s), then one full loop of the live
controller against the fake API server holding the same objects: informers synced, the
simulated provider, status ConfigMap written twice, and a TriggeredScaleUp Event per pod.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry

from epcsched.autoscaler.kube import kube_parts
from epcsched.autoscaler.loop import Autoscaler, pool_nodes, pool_template
from epcsched.autoscaler.metrics import AutoscalerMetrics
from epcsched.autoscaler.runtime import simulated_provider
from epcsched.config import Config, config_from_mapping
from epcsched.core.autoscale import ControllerPolicy, ControllerState, PoolView, decide
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.kube.client import load_configuration
from epcsched.kube.informer import InformerState
from epcsched.objects import Node, Pod, node_info, pod_info
from epcsched.testing.apiserver import FakeApiServer

POOLS = [  # name, EPC GiB per node
    ("dcsv3-a", 8),
    ("dcsv3-b", 16),
    ("dcsv3-c", 32),
    ("dcsv3-d", 64),
    ("dcsv2-e", 4),
]


def config(nodes_per_pool: int) -> Config:
    pools = []
    for i, (name, epc) in enumerate(POOLS):
        pools.append(
            {
                "name": name,
                "provider": "simulated",
                "minSize": 0,
                "maxSize": nodes_per_pool + 400,
                "nodeSelector": {"agentpool": name},
                "template": {
                    "resources": {
                        "sgx.intel.com/epc": f"{epc}Gi",
                        "cpu": "16",
                        "memory": "64Gi",
                        "pods": "110",
                    },
                    "labels": {"agentpool": name},
                },
                "costPerHour": 0.1 * epc,
                "priority": i,
            }
        )
    return config_from_mapping({"autoscaler": {"nodePools": pools}})


def objects(nodes_per_pool: int, pending: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for name, epc in POOLS:
        for n in range(nodes_per_pool):
            node = f"{name}-{n:04d}"
            items.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": node, "labels": {"agentpool": name}},
                    "status": {
                        "allocatable": {
                            "sgx.intel.com/epc": f"{epc}Gi",
                            "cpu": "16",
                            "memory": "64Gi",
                            "pods": "110",
                        },
                        "conditions": [{"type": "Ready", "status": "True"}],
                    },
                }
            )
            # Each node full of EPC, so every pending pod needs a new node.
            items.append(_pod(f"run-{node}", f"{epc}Gi", node, None))
    for i in range(pending):
        selector = {"agentpool": POOLS[i % 5][0]} if i % 3 == 0 else None
        items.append(_pod(f"pending-{i:05d}", f"{256 * (1 + i % 8)}Mi", None, selector))
    return items


def _pod(name: str, epc: str, node: str | None, selector: dict[str, str] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "enclave",
                "image": "enclave:1",
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"sgx.intel.com/epc": epc},
                },
            }
        ]
    }
    status: dict[str, Any] = {"phase": "Pending"}
    if node:
        spec["nodeName"] = node
        status = {"phase": "Running"}
    else:
        status["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
        ]
    if selector:
        spec["nodeSelector"] = selector
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "rs",
                    "uid": "rs-1",
                    "controller": True,
                }
            ],
        },
        "spec": spec,
        "status": status,
    }


def plan_seconds(
    cfg: Config, items: list[dict[str, Any]], repeats: int
) -> tuple[float, dict[str, int]]:
    snapshot = ClusterSnapshot(cfg.epc.resources, capacity=1024)
    for item in items:
        if item["kind"] == "Node":
            snapshot.upsert_node(node_info(msgspec.convert(item, Node), cfg.epc.resources))
        else:
            snapshot.upsert_pod(pod_info(msgspec.convert(item, Pod), cfg.epc.resources))
    views = []
    for pool in cfg.autoscaler.node_pools:
        template = pool_template(pool, cfg)
        nodes, usable = pool_nodes(snapshot, pool, template)
        views.append(
            PoolView(pool.name, template, pool.min_size, pool.max_size, nodes, usable, len(nodes))
        )
    policy = ControllerPolicy.from_settings(cfg.autoscaler)
    times = []
    targets: dict[str, int] = {}
    for _ in range(repeats):
        started = time.perf_counter()
        _, decision = decide(ControllerState(), views, snapshot, policy, 1_000_000.0)
        times.append(time.perf_counter() - started)
        targets = {p.name: p.target_size for p in decision.pools}
    return statistics.median(times), targets


async def loop_seconds(cfg: Config, items: list[dict[str, Any]]) -> dict[str, float]:
    async with FakeApiServer() as server:
        server.store.load_many(items)
        with tempfile.TemporaryDirectory() as tmp:
            path = server.write_kubeconfig(Path(tmp) / "kubeconfig")
            configuration = await load_configuration(path)
        state = InformerState(configuration, cfg)
        started = time.perf_counter()
        await state.start()
        await state.wait_synced(timeout=120)
        synced = time.perf_counter() - started
        from kubernetes_asyncio import client

        api = client.ApiClient(configuration)
        parts = kube_parts(api, namespace="default", identity="bench")
        provider = simulated_provider(cfg, None, state.snapshot, delay=3600)
        scaler = Autoscaler(
            cfg,
            state,
            {"simulated": provider},
            AutoscalerMetrics(CollectorRegistry()),
            recorder=parts.recorder,
            remover=parts.remover,
            status=parts.status,
        )
        started = time.perf_counter()
        decision = await scaler.run_once()
        loop = time.perf_counter() - started
        assert decision is not None
        await provider.close()
        await api.close()
        await state.stop()
        return {"syncSeconds": round(synced, 3), "loopSeconds": round(loop, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes-per-pool", type=int, default=100)
    parser.add_argument("--pending", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = config(args.nodes_per_pool)
    items = objects(args.nodes_per_pool, args.pending)
    plan, targets = plan_seconds(cfg, items, args.repeats)
    result: dict[str, Any] = {
        "nodes": args.nodes_per_pool * len(POOLS),
        "pools": len(POOLS),
        "pendingPods": args.pending,
        "planSeconds": round(plan, 4),
        "planTargetSeconds": 1.0,
        "targets": targets,
    }
    result.update(asyncio.run(loop_seconds(cfg, items)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
