"""Informer and bind speed against the fake API server: `python benchmarks/informer.py`.

Measures, over real HTTP with kubernetes-asyncio: the first list of 1,000 nodes and 50,000
pods until `ready()`; sustained pod churn through the watch (events per second until the cache
has caught up, fake server included in the same process); the cost of applying one watch event
to the snapshot alone (decode + O(1) update, no HTTP); and `/bind` throughput with reservations.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from epcsched.config import Config
from epcsched.extender.app import create_app
from epcsched.extender.bind import Binder, install
from epcsched.kube.client import load_configuration
from epcsched.kube.informer import InformerSettings, InformerState
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND

NODES = BY_KIND["Node"]
PODS = BY_KIND["Pod"]


def node(name: str) -> dict[str, Any]:
    allocatable = {"cpu": "8", "memory": "32Gi", "pods": "110", "sgx.intel.com/epc": "16Gi"}
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": {"pool": "dcsv3"}},
        "status": {"allocatable": allocatable, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def pod(name: str, epc_mib: int, node_name: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "enclave",
                "image": "enclave:1",
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"sgx.intel.com/epc": f"{epc_mib}Mi"},
                },
            }
        ]
    }
    if node_name:
        spec["nodeName"] = node_name
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench"}},
        "spec": spec,
        "status": {"phase": "Running" if node_name else "Pending"},
    }


async def caught_up(api: FakeApiServer, state: InformerState) -> None:
    assert state.pods is not None and state.nodes is not None
    while state.pods.status.resource_version != str(api.store.rv):
        await asyncio.sleep(0.001)


async def run(nodes: int, pods: int, churn: int, binds: int) -> dict[str, Any]:
    rng = random.Random(1)
    result: dict[str, Any] = {"nodes": nodes, "pods": pods}
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeApiServer(bookmark_interval=0.05) as api:
            names = [f"node-{i}" for i in range(nodes)]
            for name in names:
                api.store.load(NODES, node(name))
            for i in range(pods):
                api.store.load(PODS, pod(f"p{i}", rng.choice([16, 64, 256]), rng.choice(names)))
            conf = await load_configuration(api.write_kubeconfig(Path(tmp) / "kubeconfig"))
            config = Config()
            state = InformerState(conf, config, settings=InformerSettings(page_size=500))
            started = time.perf_counter()
            await state.start()
            await state.wait_synced(timeout=300)
            result["first_list_s"] = round(time.perf_counter() - started, 3)
            await caught_up(api, state)

            started = time.perf_counter()
            for i in range(churn):
                if i % 2:
                    api.store.load(PODS, pod(f"c{i}", 32, rng.choice(names)))
                else:
                    api.store.delete(PODS, "bench", f"p{i}")
                if i % 500 == 0:
                    await asyncio.sleep(0)
            await caught_up(api, state)
            elapsed = time.perf_counter() - started
            result["churn_events"] = churn
            result["churn_events_per_s"] = round(churn / elapsed)

            # Applying one event to the snapshot alone: decode and an O(1) update.
            assert state.pods is not None
            sink = state.pods.sink
            raws = [
                msgspec.Raw(msgspec.json.encode(pod(f"x{i}", 64, rng.choice(names))))
                for i in range(20000)
            ]
            started = time.perf_counter()
            for raw in raws:
                sink.apply("ADDED", raw)
            result["apply_us_per_event"] = round(
                (time.perf_counter() - started) / len(raws) * 1e6, 2
            )

            for i in range(binds):
                api.store.load(PODS, pod(f"b{i}", 64, None))
            await caught_up(api, state)
            binder = Binder(conf, state, ttl=30.0)
            app = create_app(config, state)
            install(app, binder)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/bind"
            try:
                async with aiohttp.ClientSession() as session:

                    async def bind(i: int) -> str:
                        body = {
                            "PodName": f"b{i}",
                            "PodNamespace": "bench",
                            "Node": names[i % nodes],
                        }
                        async with session.post(url, json=body) as resp:
                            reply: dict[str, str] = await resp.json()
                            return reply["Error"]

                    started = time.perf_counter()
                    errors = await asyncio.gather(*(bind(i) for i in range(binds)))
                    elapsed = time.perf_counter() - started
            finally:
                await runner.cleanup()
            result["binds"] = binds
            result["binds_ok"] = sum(1 for e in errors if not e)
            result["binds_per_s"] = round(binds / elapsed)
            await state.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=50000)
    parser.add_argument("--churn", type=int, default=20000)
    parser.add_argument("--binds", type=int, default=500)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.nodes, args.pods, args.churn, args.binds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
