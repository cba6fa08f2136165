"""Metrics API speed: `python benchmarks/metrics_api.py`.

What the HPA controller waits for on every sync: one `pods/*/sgx_epc_usage_ratio` list whose
label selector matches 1,000 pods, through the whole server (TLS with the front-proxy client
certificate, the user headers, the cached SubjectAccessReview, the informer index, the cached
Prometheus answer, JSON of 1,000 items). The cluster is the fake API server; Prometheus is the
real one, loaded by promtool with five minutes of per-pod EPC series. One request fills the
caches (reported as `first_ms`), then requests are sent one at a time as an HPA sends them.
Target: p99 under 50 ms. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from epcsched.config import config_from_mapping
from epcsched.kube.client import load_configuration
from epcsched.metricsapi.command import serve
from epcsched.metricsapi.tls import ServingTls, self_signed
from epcsched.testing.access import Grant
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND
from tests.prometheus_fixtures import PrometheusServer, backfill
from tests.test_metrics_api import (
    HPA_GROUPS,
    HPA_USER,
    PROXY_CN,
    auth_configmap,
    client_cert,
    make_ca,
)

MiB = 2**20
EPC = "sgx.intel.com/epc"
TARGET_P99_MS = 50.0


def uid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012x}"


def objects(pods: int, nodes: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    node_objs = [
        {
            "metadata": {"name": f"n{n}", "labels": {"agentpool": "dcsv3"}},
            "status": {
                "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110", EPC: "8Gi"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
        for n in range(nodes)
    ]
    pod_objs = []
    for i in range(pods):
        requests = {"cpu": "100m", "memory": "64Mi", EPC: "64Mi"}
        pod_objs.append(
            {
                "metadata": {
                    "name": f"enclave-{i:04d}",
                    "namespace": "bench",
                    "uid": uid(i),
                    "labels": {"app": "enclave", "shard": str(i % 7)},
                },
                "spec": {
                    "nodeName": f"n{i % nodes}",
                    "containers": [
                        {"name": "app", "image": "e", "resources": {"requests": requests}}
                    ],
                },
                "status": {"phase": "Running"},
            }
        )
    return node_objs, pod_objs


def history(pods: int, nodes: int, t0: int) -> str:
    lines = ["# TYPE epcsched_cgroup_epc_bytes gauge"]
    for i in range(pods):
        held = (40 + i % 24) * MiB
        for t in range(t0 - 300, t0 + 1, 15):
            lines.append(
                f'epcsched_cgroup_epc_bytes{{node="n{i % nodes}",pod="{uid(i)}"}} {held} {t}'
            )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


async def run(pods: int, nodes: int, requests: int, work: Path) -> dict[str, Any]:
    t0 = (int(time.time()) // 60) * 60 - 1200
    (work / "prometheus").mkdir()
    prometheus = PrometheusServer(work / "prometheus")
    backfill(prometheus.data_dir, history(pods, nodes, t0), work)
    prometheus.start()
    api = FakeApiServer()
    try:
        node_objs, pod_objs = objects(pods, nodes)
        for obj in node_objs:
            api.store.load(BY_KIND["Node"], obj)
        for obj in pod_objs:
            api.store.load(BY_KIND["Pod"], obj)
        ca = make_ca("front-proxy-ca")
        api.store.load(BY_KIND["ConfigMap"], auth_configmap(ca))
        api.access.grants.append(
            Grant(users=(HPA_USER,), verbs=("get",), api_groups=("custom.metrics.k8s.io",))
        )
        await api.start()
        configuration = await load_configuration(api.write_kubeconfig(work / "kubeconfig"))
        cert, key = self_signed(work, ["127.0.0.1"])
        config = config_from_mapping(
            {
                "prometheus": {"url": prometheus.url},
                "metricsApi": {"host": "127.0.0.1", "port": 0, "cacheTtl": "10m"},
            }
        )
        stop = asyncio.Event()
        started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(
            serve(
                config,
                configuration,
                ServingTls(cert, key),
                stop=stop,
                started=started,
                clock=lambda: float(t0),
            )
        )
        try:
            port = await asyncio.wait_for(asyncio.shield(started), 30)
            url = (
                f"https://127.0.0.1:{port}/apis/custom.metrics.k8s.io/v1beta2/namespaces/bench/"
                "pods/%2A/sgx_epc_usage_ratio"
            )
            tls = ssl.create_default_context(cafile=str(cert))
            tls.load_cert_chain(*map(str, client_cert(ca, PROXY_CN, work / "pki")))
            headers = [("X-Remote-User", HPA_USER)] + [("X-Remote-Group", g) for g in HPA_GROUPS]
            # Until the informers have synced and the front-proxy CA is trusted; a connection
            # made before that carries no verified client certificate, so it is not reused.
            async with aiohttp.ClientSession() as probe:
                for _ in range(600):
                    async with probe.get(f"https://127.0.0.1:{port}/readyz", ssl=tls) as response:
                        if response.status == 200:
                            break
                    await asyncio.sleep(0.05)
            async with aiohttp.ClientSession() as session:
                params = {"labelSelector": "app=enclave"}

                async def once() -> tuple[float, int]:
                    started_at = time.perf_counter()
                    async with session.get(
                        url, params=params, ssl=tls, headers=headers
                    ) as response:
                        body = await response.read()
                        assert response.status == 200, body[:300]
                    elapsed = (time.perf_counter() - started_at) * 1000
                    return elapsed, len(json.loads(body)["items"])

                first_ms, items = await once()
                times = [(await once())[0] for _ in range(requests)]
        finally:
            stop.set()
            await server
    finally:
        await api.stop()
        prometheus.stop()
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return {
        "benchmark": "metrics_api",
        "pods": pods,
        "items": items,
        "requests": requests,
        "first_ms": round(first_ms, 2),
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(times[-1], 2),
        "target_p99_ms": TARGET_P99_MS,
        "ok": p99 < TARGET_P99_MS and items == pods,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="epcsched-bench-metrics-api-") as work:
        result = asyncio.run(run(args.pods, args.nodes, args.requests, Path(work)))
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
