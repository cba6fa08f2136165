"""Shared builders for the tests that run epcsched against the fake API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from kubernetes_asyncio import client

from epcsched.config import Config
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.kube.client import load_configuration
from epcsched.objects import Node, Pod, node_info, pod_info
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND

MI = 2**20


def node(
    name: str,
    epc: str | None = "64Mi",
    *,
    resource: str = "sgx.intel.com/epc",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    allocatable: dict[str, str] = {"cpu": "8", "memory": "32Gi", "pods": "110"}
    if epc is not None:
        allocatable[resource] = epc
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": name, "labels": labels or {}},
        "status": {
            "allocatable": allocatable,
            "capacity": dict(allocatable),
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(
    name: str,
    epc: str | None = None,
    *,
    node_name: str | None = None,
    namespace: str = "default",
    phase: str = "Pending",
    resource: str = "sgx.intel.com/epc",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    requests: dict[str, str] = {"cpu": "100m", "memory": "64Mi"}
    if epc is not None:
        requests[resource] = epc
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "image": "enclave:1", "resources": {"requests": requests}}]
    }
    if node_name:
        spec["nodeName"] = node_name
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": spec,
        "status": {"phase": phase},
    }


async def configuration(api: FakeApiServer, tmp_path: Path) -> client.Configuration:
    """A kubernetes-asyncio configuration loaded from a kubeconfig the server wrote."""
    return await load_configuration(api.write_kubeconfig(tmp_path / "kubeconfig"))


def server_snapshot(api: FakeApiServer, config: Config) -> ClusterSnapshot:
    """What the cache should hold: the server's objects read the way epcsched reads them."""
    snap = ClusterSnapshot(config.epc.resources, headroom=config.epc.headroom)
    for obj in api.store.items(BY_KIND["Node"], None):
        snap.upsert_node(node_info(msgspec.convert(obj, Node), config.epc.resources))
    for obj in api.store.items(BY_KIND["Pod"], None):
        snap.upsert_pod(pod_info(msgspec.convert(obj, Pod), config.epc.resources))
    return snap
