"""Synthetic SGX clusters for the benchmarks: AKS-shaped Nodes and Pods as the API writes them."""

from __future__ import annotations

import random
from typing import Any

EPC = "sgx.intel.com/epc"
SIZES_GIB = (16, 32, 64)  # DC4s_v3, DC8s_v3, DC16s_v3
POD_EPC_MIB = (64, 128, 256, 512, 1024, 2048)


def node(name: str, epc_gib: int) -> dict[str, Any]:
    cpu = str(epc_gib // 4)
    memory = f"{epc_gib * 2}Gi"
    alloc = {
        "cpu": cpu,
        "memory": memory,
        "pods": "110",
        EPC: f"{epc_gib}Gi",
        "ephemeral-storage": "119703055367",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
    }
    stamp = "2026-11-28T19:57:24Z"
    labels = {
        "agentpool": "dcsv3",
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/instance-type": f"Standard_DC{epc_gib // 4}s_v3",
        "beta.kubernetes.io/os": "linux",
        "failure-domain.beta.kubernetes.io/region": "westeurope",
        "failure-domain.beta.kubernetes.io/zone": "0",
        "kubernetes.azure.com/agentpool": "dcsv3",
        "kubernetes.azure.com/cluster": "MC_rg_aks_westeurope",
        "kubernetes.azure.com/mode": "user",
        "kubernetes.azure.com/node-image-version": "AKSUbuntu-2204gen2containerd-202611.01.0",
        "kubernetes.azure.com/os-sku": "Ubuntu",
        "kubernetes.azure.com/role": "agent",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": f"Standard_DC{epc_gib // 4}s_v3",
        "topology.kubernetes.io/region": "westeurope",
        "topology.kubernetes.io/zone": "0",
        "feature.node.kubernetes.io/cpu-security.sgx.enabled": "true",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": f"0f6c{abs(hash(name)) % 10**8:08d}-5b1e-4d7a-9c3e-2a1b3c4d5e6f",
            "resourceVersion": "918273",
            "creationTimestamp": stamp,
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "csi.volume.kubernetes.io/nodeid": '{"disk.csi.azure.com":"' + name + '"}',
            },
        },
        "spec": {"podCIDR": "10.244.3.0/24", "providerID": f"azure:///subscriptions/x/{name}"},
        "status": {
            "capacity": dict(alloc),
            "allocatable": alloc,
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                    "reason": r,
                    "message": m,
                }
                for t, s, r, m in (
                    (
                        "MemoryPressure",
                        "False",
                        "KubeletHasSufficientMemory",
                        "kubelet has sufficient memory available",
                    ),
                    (
                        "DiskPressure",
                        "False",
                        "KubeletHasNoDiskPressure",
                        "kubelet has no disk pressure",
                    ),
                    (
                        "PIDPressure",
                        "False",
                        "KubeletHasSufficientPID",
                        "kubelet has sufficient PID available",
                    ),
                    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                )
            ],
            "addresses": [
                {"type": "InternalIP", "address": "10.224.0.4"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "3f1c2b",
                "systemUUID": "5e4d3c2b",
                "bootID": "9a8b7c",
                "kernelVersion": "5.15.0-1075-azure",
                "osImage": "Ubuntu 22.04.5 LTS",
                "containerRuntimeVersion": "containerd://1.7.25-1",
                "kubeletVersion": "v1.35.0",
                "kubeProxyVersion": "v1.35.0",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": [
                {
                    "names": [
                        f"mcr.microsoft.com/oss/kubernetes/image-{i}@sha256:{i:064d}",
                        f"mcr.microsoft.com/oss/kubernetes/image-{i}:v1.{i}.0",
                    ],
                    "sizeBytes": 10_000_000 + i,
                }
                for i in range(6)
            ],
        },
    }


def pod(
    name: str, node_name: str | None, epc_mib: int, *, namespace: str = "enclaves"
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "enclave",
                "image": "mcr.microsoft.com/acc/samples/sgx-test:1.1",
                "resources": {
                    "requests": {"cpu": "100m", "memory": "256Mi", EPC: f"{epc_mib}Mi"},
                    "limits": {EPC: f"{epc_mib}Mi"},
                },
            }
        ],
        "restartPolicy": "Always",
        "schedulerName": "epcsched-scheduler",
    }
    if node_name:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": spec,
        "status": {"phase": "Running" if node_name else "Pending"},
    }


def build(nodes: int, pods: int, *, seed: int = 1) -> dict[str, Any]:
    """A List of `nodes` DCsv3 nodes and `pods` bound enclave pods, none overcommitted."""
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    capacity: list[int] = []
    for i in range(nodes):
        size = rng.choice(SIZES_GIB)
        items.append(node(f"aks-dcsv3-{i:05d}", size))
        capacity.append(size * 1024)
    free = list(capacity)
    for j in range(pods):
        need = rng.choice(POD_EPC_MIB)
        target = rng.randrange(nodes)
        if free[target] < need:
            need = min(POD_EPC_MIB)
        if free[target] < need:
            continue
        free[target] -= need
        items.append(pod(f"enclave-{j:06d}", items[target]["metadata"]["name"], need))
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}
