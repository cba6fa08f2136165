"""`epcsched autoscaler --once --dry-run`: one JSON object on stdout, nothing changed.

It protects the dry-run contract of issue 7 point 2: every configured pool appears (`none` with
an empty `nodesToRemove` when nothing changes), a pool's current size in snapshot mode is its
node count, a pending pod is one with no node and PodScheduled=False/Unschedulable, and mistakes
in the configuration or the snapshot are one line naming the key or object, with exit code 2.
Against an API server (the fake one) the dry run reads MachineDeployment sizes and writes
nothing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from epcsched.cli import main
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND

EPC = "sgx.intel.com/epc"


def node(name: str, pool: str, epc: str = "16Gi") -> dict[str, Any]:
    allocatable = {EPC: epc, "cpu": "4", "memory": "16Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"agentpool": pool}},
        "status": {
            "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(
    name: str, epc: str, *, node_name: str | None = None, marked: bool = True, **spec: Any
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running" if node_name else "Pending"}
    if not node_name and marked:
        status["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
        ]
    body: dict[str, Any] = {
        "containers": [
            {"name": "e", "resources": {"limits": {EPC: epc}, "requests": {"cpu": "100m"}}}
        ],
        **spec,
    }
    if node_name:
        body["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "apps",
            "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}],
        },
        "spec": body,
        "status": status,
    }


def pool(name: str, provider: str = "simulated", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": provider,
        "minSize": 0,
        "maxSize": 3,
        "nodeSelector": {"agentpool": name},
        "template": {
            "resources": {EPC: "16Gi", "cpu": "4", "memory": "16Gi", "pods": "110"},
            "labels": {"agentpool": name},
        },
        **extra,
    }


def write(tmp_path: Path, name: str, data: object) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def config(tmp_path: Path, *pools: dict[str, Any], **autoscaler: Any) -> str:
    return write(tmp_path, "config.yaml", {"autoscaler": {"nodePools": list(pools), **autoscaler}})


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["autoscaler", *args])
    out, err = capsys.readouterr()
    return code, out, err


def dry_run(capsys: pytest.CaptureFixture[str], cfg: str, *snapshots: str) -> dict[str, Any]:
    args = [a for s in snapshots for a in ("--snapshot", s)]
    code, out, err = run(capsys, "--config", cfg, *args, "--once", "--dry-run")
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)  # exactly one JSON document, nothing else
    return result


def test_every_pool_appears_and_only_marked_pending_pods_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, pool("dcsv3"), pool("idle"))
    snap = write(
        tmp_path,
        "snap.yaml",
        {
            "kind": "List",
            "items": [
                node("a-0", "dcsv3"),
                pod("full", "12Gi", node_name="a-0"),
                # Two pods kube-scheduler gave up on: 10Gi each, one new 16Gi node per pod.
                pod("p-1", "10Gi"),
                pod("p-2", "10Gi"),
                # Not yet tried by kube-scheduler: the autoscaler leaves it alone.
                pod("fresh", "10Gi", marked=False),
            ],
        },
    )
    result = dry_run(capsys, cfg, snap)
    assert result == {
        "pools": [
            {
                "name": "dcsv3",
                "currentSize": 1,
                "targetSize": 3,
                "action": "scale-up",
                "reason": "2 pending EPC pod(s) need 2 new node(s)",
                "nodesToRemove": [],
            },
            {
                "name": "idle",
                "currentSize": 0,
                "targetSize": 0,
                "action": "none",
                "reason": "no change",
                "nodesToRemove": [],
            },
        ],
        "unschedulable": [],
    }


def test_unschedulable_pods_are_listed_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, pool("dcsv3"))
    snap = write(
        tmp_path,
        "snap.yaml",
        [
            pod("huge", "32Gi"),
            pod("elsewhere", "1Gi", nodeSelector={"agentpool": "other"}),
        ],
    )
    result = dry_run(capsys, cfg, snap)
    assert result["pools"][0]["action"] == "none"
    reasons = {u["name"]: (u["namespace"], u["reason"]) for u in result["unschedulable"]}
    assert set(reasons) == {"huge", "elsewhere"}
    assert reasons["huge"][0] == "apps"
    assert "pool dcsv3" in reasons["huge"][1] and EPC in reasons["huge"][1]
    assert "pool dcsv3" in reasons["elsewhere"][1] and "selector" in reasons["elsewhere"][1]


def test_an_idle_node_is_listed_for_removal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, pool("dcsv3"), scaleDownUnneededTime="0s")
    snap = write(
        tmp_path,
        "snap.yaml",
        [node("a-0", "dcsv3"), node("a-1", "dcsv3"), pod("busy", "12Gi", node_name="a-1")],
    )
    result = dry_run(capsys, cfg, snap)
    assert result["pools"][0] == {
        "name": "dcsv3",
        "currentSize": 2,
        "targetSize": 1,
        "action": "scale-down",
        "reason": result["pools"][0]["reason"],
        "nodesToRemove": ["a-0"],
    }
    assert result["pools"][0]["reason"].startswith("utilization 0.00 below 0.5")


@pytest.mark.parametrize(
    ("pools", "extra", "expected"),
    [
        ([], {}, "autoscaler.nodePools: no node pools configured"),
        ([pool("a", maxSize=-1)], {}, "autoscaler.nodePools[0].maxSize: must be >= minSize"),
        ([{**pool("a"), "template": None}], {}, "autoscaler.nodePools[0].template.resources"),
        ([pool("a", provider="gke")], {}, "autoscaler.nodePools[0].provider: must be one of"),
        ([pool("a", provider="clusterapi")], {}, "autoscaler.nodePools[0].clusterapi."),
        ([pool("a")], {"interval": "soon"}, "autoscaler.interval: invalid duration"),
        ([pool("a")], {"batchIdle": "5s", "batchMax": "1s"}, "autoscaler.batchMax"),
        ([pool("a")], {"expander": "random"}, "autoscaler.expander: must be one of"),
    ],
)
def test_config_errors_are_one_line_naming_the_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    pools: list[dict[str, Any]],
    extra: dict[str, Any],
    expected: str,
) -> None:
    cfg = config(tmp_path, *pools, **extra)
    snap = write(tmp_path, "snap.yaml", [node("a-0", "a")])
    code, out, err = run(capsys, "--config", cfg, "--snapshot", snap, "--once", "--dry-run")
    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert expected in err


def test_snapshot_errors_name_the_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, pool("a"))
    bad = pod("broken", "lots")
    snap = write(tmp_path, "snap.yaml", [node("a-0", "a"), bad])
    code, out, err = run(capsys, "--config", cfg, "--snapshot", snap, "--once", "--dry-run")
    assert (code, out) == (2, "")
    assert "broken" in err and "lots" in err and len(err.strip().splitlines()) == 1
    services = write(tmp_path, "svc.yaml", [{"kind": "Service", "metadata": {"name": "s"}}])
    code, _, err = run(capsys, "--config", cfg, "--snapshot", services, "--once", "--dry-run")
    assert code == 2 and "no Node or Pod in" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--once"], "--once --dry-run"),
        ([], "--once --dry-run"),
        (["--once", "--dry-run", "--kubeconfig", "k"], "give one source"),
        (["--once", "--dry-run", "--prometheus-url", "ftp://x"], "--prometheus-url"),
        (["--once", "--dry-run", "--log-level", "LOUD"], "--log-level"),
        (["--once", "--dry-run", "--port", "70000"], "--port"),
    ],
)
def test_flag_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    cfg = config(tmp_path, pool("a"))
    snap = write(tmp_path, "snap.yaml", [node("a-0", "a")])
    code, out, err = run(capsys, "--config", cfg, "--snapshot", snap, *args)
    assert (code, out) == (2, "")
    assert expected in err and len(err.strip().splitlines()) == 1


def test_dry_run_against_the_api_reads_machine_deployments_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def serve() -> tuple[FakeApiServer, str]:
        server = FakeApiServer()
        await server.start()
        return server, str(server.write_kubeconfig(tmp_path / "kubeconfig"))

    loop = asyncio.new_event_loop()
    server, kubeconfig = loop.run_until_complete(serve())
    try:
        server.store.load_many(
            [
                node("md-0", "dcsv3"),
                pod("p-1", "10Gi"),
                {
                    "apiVersion": "cluster.x-k8s.io/v1beta1",
                    "kind": "MachineDeployment",
                    "metadata": {"name": "md-dcsv3", "namespace": "default"},
                    "spec": {"replicas": 2, "clusterName": "c", "selector": {}, "template": {}},
                },
            ]
        )
        # The status is reset on create; mark the pod as kube-scheduler would.
        stored = server.store.get(BY_KIND["Pod"], "apps", "p-1")
        stored["status"] = pod("p-1", "10Gi")["status"]
        server.store.update(BY_KIND["Pod"], "apps", "p-1", stored, subresource="status")
        version = server.store.rv
        cfg = config(
            tmp_path,
            pool(
                "dcsv3",
                "clusterapi",
                clusterapi={"namespace": "default", "machineDeployment": "md-dcsv3"},
            ),
        )
        thread_result: dict[str, Any] = {}

        def call() -> None:
            thread_result["r"] = run(
                capsys, "--config", cfg, "--kubeconfig", kubeconfig, "--once", "--dry-run"
            )

        import threading

        worker = threading.Thread(target=call)
        worker.start()
        while worker.is_alive():
            loop.run_until_complete(asyncio.sleep(0.05))
        code, out, err = thread_result["r"]
        assert code == 0, err
        result = json.loads(out)
        # Replicas 2 with one node joined: one node is still on its way, and it holds p-1.
        assert result["pools"] == [
            {
                "name": "dcsv3",
                "currentSize": 2,
                "targetSize": 2,
                "action": "none",
                "reason": "1 node(s) asked for, not usable yet",
                "nodesToRemove": [],
            }
        ]
        assert server.store.rv == version
    finally:
        loop.run_until_complete(server.stop())
        loop.close()
