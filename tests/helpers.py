"""Builders for Kubernetes-shaped Node and Pod objects shared by the tests."""

from __future__ import annotations

from typing import Any

EPC = "sgx.intel.com/epc"
LEGACY = "kubernetes.azure.com/sgx_epc_mem_in_MiB"


def node(
    name: str,
    epc: str | None = None,
    *,
    resource: str = EPC,
    cpu: str = "8",
    memory: str = "32Gi",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    allocatable: dict[str, str] = {"cpu": cpu, "memory": memory, "pods": "110"}
    if epc is not None:
        allocatable[resource] = epc
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": labels or {}},
        "spec": {},
        "status": {
            "capacity": dict(allocatable),
            "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(
    name: str,
    epc: str | None = None,
    *,
    node_name: str | None = None,
    resource: str = EPC,
    phase: str = "Running",
    namespace: str = "default",
    limit_only: bool = False,
    cpu: str | None = None,
) -> dict[str, Any]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if epc is not None:
        limits[resource] = epc
        if not limit_only:
            requests[resource] = epc
    if cpu is not None:
        requests["cpu"] = cpu
    spec: dict[str, Any] = {
        "containers": [
            {"name": "app", "image": "sgx:1", "resources": {"requests": requests, "limits": limits}}
        ]
    }
    if node_name is not None:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": spec,
        "status": {"phase": phase if node_name else "Pending"},
    }


def cluster(*items: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": list(items)}


def snapshot_of(*items: dict[str, Any], headroom: object = 0) -> Any:
    """A ClusterSnapshot holding these Node and Pod objects."""
    import msgspec

    from epcsched.config import parse_headroom
    from epcsched.core.snapshot import ClusterSnapshot
    from epcsched.objects import Node, Pod, node_info, pod_info
    from epcsched.quantity import DEFAULT_EPC_RESOURCES

    snap = ClusterSnapshot(DEFAULT_EPC_RESOURCES, headroom=parse_headroom(headroom))
    for item in items:
        if item["kind"] == "Node":
            snap.upsert_node(node_info(msgspec.convert(item, Node), DEFAULT_EPC_RESOURCES))
        else:
            snap.upsert_pod(pod_info(msgspec.convert(item, Pod), DEFAULT_EPC_RESOURCES))
    return snap


def request_of(item: dict[str, Any]) -> Any:
    import msgspec

    from epcsched.core.fit import PodRequest
    from epcsched.objects import Pod, pod_info
    from epcsched.quantity import DEFAULT_EPC_RESOURCES

    return PodRequest.of(pod_info(msgspec.convert(item, Pod), DEFAULT_EPC_RESOURCES))


def names_request(*names: str, epc: str = "16Mi", name: str = "p") -> bytes:
    """A cache-mode filter or prioritize body: pod `name` asking `epc`, over `names`."""
    import json

    return json.dumps({"Pod": pod(name, epc), "Nodes": None, "NodeNames": list(names)}).encode()


def running_on(name: str, epc: str, node_name: str) -> Any:
    """The PodInfo of a Running pod bound to `node_name`: what a bind's watch event adds."""
    import msgspec

    from epcsched.objects import Pod, pod_info
    from epcsched.quantity import DEFAULT_EPC_RESOURCES

    obj = pod(name, epc, node_name=node_name)
    obj["status"] = {"phase": "Running"}
    return pod_info(msgspec.convert(obj, Pod), DEFAULT_EPC_RESOURCES)
