"""`make demo`: epcsched end to end on a bundled example cluster, no real cluster needed.

First the extender serves the example snapshot on a loopback port and answers the filter and
prioritize bodies kube-scheduler would send for the bundled enclave pod; then the same extender
follows a (fake, in-process) API server as enclave pods come and go; then the tiny simulation
scenario compares every placement policy, with plots written under `out/demo/`; then the
autoscaler grows a simulated SGX pool for enclave pods that do not fit and shrinks it back; last,
the metrics API serves the example enclaves' `sgx_epc_usage_ratio` as an HPA reads it, and the
HPA's replica rule turns it into a replica count.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from epcsched.config import Config
from epcsched.extender.app import create_app
from epcsched.kube.snapshot import load_snapshot
from epcsched.netutil import free_port
from epcsched.state import SnapshotState

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example_pod() -> dict[str, Any]:
    """The bundled enclave pod as the API server would hand it to kube-scheduler."""
    pod: dict[str, Any] = yaml.safe_load((EXAMPLES / "enclave-pod.yaml").read_text())
    pod["metadata"].setdefault("uid", "7c0ffee0-0000-4000-8000-000000000001")
    pod["status"] = {"phase": "Pending"}
    return pod


async def extender_decision(out: Any = sys.stdout) -> None:
    config = Config()
    snapshot = load_snapshot([EXAMPLES / "cluster.json"], config)
    app = create_app(config, SnapshotState(snapshot, sources=["examples/cluster.json"]))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        pod = example_pod()
        names = snapshot.node_names()
        body = {"Pod": pod, "Nodes": None, "NodeNames": names}
        url = f"http://127.0.0.1:{port}"
        request = pod["spec"]["containers"][0]["resources"]
        print(f"== epcsched extender on {url}, example cluster of {len(names)} nodes", file=out)
        print(f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']}: {request}", file=out)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/filter", json=body) as resp:
                filtered = await resp.json()
            print("\nPOST /filter (nodeCacheCapable: true)", file=out)
            print(f"  passes: {', '.join(filtered['NodeNames'])}", file=out)
            for kind in ("FailedNodes", "FailedAndUnresolvableNodes"):
                for node, reason in sorted(filtered[kind].items()):
                    print(f"  {kind:<27} {node:<13} {reason}", file=out)
            body["NodeNames"] = filtered["NodeNames"]
            async with session.post(f"{url}/prioritize", json=body) as resp:
                scores = await resp.json()
        print("\nPOST /prioritize (binpack; kube-scheduler multiplies by weight 5 x 10)", file=out)
        ranked = sorted(scores, key=lambda e: (-e["Score"], e["Host"]))
        for entry in ranked:
            print(f"  {entry['Host']:<13} {entry['Score']:>2}", file=out)
        print(f"\n=> kube-scheduler binds the pod to {ranked[0]['Host']}", file=out)
    finally:
        await runner.cleanup()


async def run_all(out_dir: Path) -> None:
    from epcsched.autoscaler.demo import autoscaler_demo
    from epcsched.kube.demo import cluster_demo
    from epcsched.metricsapi.demo import hpa_demo
    from epcsched.simulation.demo import run_demo

    await extender_decision()
    print(file=sys.stdout)
    await cluster_demo()
    print("\n== offline simulation: the same policy code over a replayed workload\n")
    # Simulation is CPU-bound and synchronous; it runs off the loop like any blocking work.
    await asyncio.to_thread(run_demo, out_dir)
    await autoscaler_demo()
    await hpa_demo()


def main() -> int:
    asyncio.run(run_all(Path("out") / "demo"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
