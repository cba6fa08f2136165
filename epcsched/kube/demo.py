"""The live-cluster half of `make demo`: the extender following an API server as pods come and go.

No cluster is needed: the fake API server (`epcsched.testing`) is started with the example
cluster, `epcsched extender --kubeconfig --bind` runs as its own process against it, and the
demo uses kubernetes-asyncio to change the cluster the way workloads would. It shows a filter
decision, the same decision after another enclave takes EPC on the preferred node, a bind with
an EPC reservation, and the node coming back when that enclave is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, cast

import aiohttp
import numpy as np
import yaml
from kubernetes_asyncio import client

from epcsched.config import Config
from epcsched.kube.client import load_configuration
from epcsched.kube.snapshot import load_snapshot
from epcsched.netutil import free_port
from epcsched.quantity import format_bytes
from epcsched.testing.apiserver import FakeApiServer

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"
EPC = "sgx.intel.com/epc"


def _print_filter(reply: dict[str, Any], out: TextIO) -> None:
    print(f"  passes: {', '.join(reply['NodeNames']) or '(none)'}", file=out)
    for kind in ("FailedNodes", "FailedAndUnresolvableNodes"):
        for node, why in sorted((reply.get(kind) or {}).items()):
            print(f"  {kind:<27} {node:<13} {why}", file=out)


async def _wait_ready(
    session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the extender exited with status {proc.returncode}")
        with contextlib.suppress(aiohttp.ClientConnectionError):
            async with session.get(f"{url}/readyz") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise RuntimeError("the extender did not become ready within 30s")


async def cluster_demo(out: TextIO = sys.stdout) -> None:
    """Run the live-cluster demo, printing what happens to `out`."""
    config = Config()
    pod: dict[str, Any] = yaml.safe_load((EXAMPLES / "enclave-pod.yaml").read_text())
    namespace = pod["metadata"]["namespace"]
    name = pod["metadata"]["name"]
    with tempfile.TemporaryDirectory(prefix="epcsched-demo-") as tmp:
        async with FakeApiServer(bookmark_interval=0.2) as api:
            loaded = api.load(EXAMPLES / "cluster.json")
            kubeconfig = api.write_kubeconfig(Path(tmp) / "kubeconfig")
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            print(
                f"\n== live cluster: fake API server on {api.url} with examples/cluster.json "
                f"({loaded} objects)",
                file=out,
            )
            command = [
                sys.executable, "-m", "epcsched", "extender", "--kubeconfig", str(kubeconfig),
                "--bind", "--port", str(port), "--log-level", "WARNING",
            ]  # fmt: skip
            print(
                f"$ epcsched extender --kubeconfig {kubeconfig.name} --bind --port {port}", file=out
            )
            env = {**os.environ, "KUBERNETES_SERVICE_HOST": ""}
            proc = subprocess.Popen(command, env=env)
            try:
                async with aiohttp.ClientSession() as session:
                    await _wait_ready(session, url, proc)
                    conf = await load_configuration(kubeconfig)
                    async with client.ApiClient(conf) as k8s:
                        await _scenario(session, url, k8s, pod, namespace, name, config, out)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def _scenario(
    session: aiohttp.ClientSession,
    url: str,
    k8s: client.ApiClient,
    pod: dict[str, Any],
    namespace: str,
    name: str,
    config: Config,
    out: TextIO,
) -> None:
    core = client.CoreV1Api(k8s)
    # kubernetes-asyncio serialises plain dicts as they are; its stubs only name the models.
    created = await core.create_namespaced_pod(namespace, cast(Any, pod))
    uid = created.metadata.uid
    print(
        f"\nkubectl create -f examples/enclave-pod.yaml  -> {namespace}/{name} (Pending)", file=out
    )
    names = sorted(load_snapshot([EXAMPLES / "cluster.json"], config).node_names())
    # The pod as kube-scheduler would send it: the API's JSON form of the created object.
    body = {"Pod": k8s.sanitize_for_serialization(created), "Nodes": None, "NodeNames": names}

    async def filter_now() -> dict[str, Any]:
        async with session.post(f"{url}/filter", json=body) as resp:
            reply: dict[str, Any] = await resp.json()
            return reply

    async def wait_for(check: Callable[[dict[str, Any]], bool]) -> tuple[dict[str, Any], float]:
        started = time.monotonic()
        while True:
            reply = await filter_now()
            if check(reply) or time.monotonic() - started > 5:
                return reply, time.monotonic() - started
            await asyncio.sleep(0.01)

    first = await filter_now()
    print("\nPOST /filter", file=out)
    _print_filter(first, out)
    body["NodeNames"] = first["NodeNames"]
    async with session.post(f"{url}/prioritize", json=body) as resp:
        scores = await resp.json()
    ranked = sorted(scores, key=lambda e: (-e["Score"], e["Host"]))
    best = ranked[0]["Host"]
    listing = ", ".join(f"{e['Host']}={e['Score']}" for e in ranked)
    print(f"  prioritize: {listing}", file=out)
    body["NodeNames"] = names

    # Another enclave lands on the preferred node and takes all but 1Gi of its free EPC.
    snapshot = load_snapshot([EXAMPLES / "cluster.json"], config)
    free = int(snapshot.free(EPC, np.array([snapshot.slots[best]], dtype=np.int64))[0])
    take = free - 2**30
    other = {
        "metadata": {"name": "batch-enclave", "namespace": namespace},
        "spec": {
            "nodeName": best,
            "containers": [
                {"name": "enclave", "image": "batch:1", "resources": {"limits": {EPC: str(take)}}}
            ],
        },
    }
    await core.create_namespaced_pod(namespace, cast(Any, other))
    print(
        f"\nanother enclave, {namespace}/batch-enclave, starts on {best} and takes "
        f"{format_bytes(take)} of its {format_bytes(free)} free EPC",
        file=out,
    )
    second, took = await wait_for(lambda r: best in (r.get("FailedNodes") or {}))
    print(f"POST /filter again ({took * 1000:.0f} ms after the pod appeared in the API)", file=out)
    _print_filter(second, out)
    if not second["NodeNames"]:
        print("\n=> no node can take the pod now", file=out)
        return
    target = second["NodeNames"][0]
    print(f"\n=> the decision changed: {best} is out, {target} takes the pod", file=out)

    bind = {"PodName": name, "PodNamespace": namespace, "PodUID": uid, "Node": target}
    async with session.post(f"{url}/bind", json=bind) as resp:
        result = await resp.json()
    bound = await core.read_namespaced_pod(name, namespace)
    print(
        f"\nPOST /bind {name} -> {target}: Error={result['Error']!r}; the API now shows "
        f"spec.nodeName={bound.spec.node_name}",
        file=out,
    )

    await core.delete_namespaced_pod("batch-enclave", namespace)
    third, took = await wait_for(lambda r: best not in (r.get("FailedNodes") or {}))
    print(
        f"\nkubectl delete pod batch-enclave -> POST /filter for a second replica "
        f"({took * 1000:.0f} ms later):",
        file=out,
    )
    _print_filter(third, out)


def main() -> int:
    asyncio.run(cluster_demo())
    return 0


if __name__ == "__main__":
    sys.exit(main())
