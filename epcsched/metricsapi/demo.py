"""The metrics API part of `make demo`: what an HPA reads for the example enclaves, and the replica
count it derives.

No cluster and no Prometheus are needed. The fake API server holds the example cluster
(`examples/cluster.json`: the `kms` enclaves in namespace `enclaves`, 8Gi and 4Gi EPC limits);
the real metrics API app (informer index, TLS, TokenReview and SubjectAccessReview against that
API server, the same documents) serves it on a loopback port, reading EPC use from a
`MemorySource` where a cluster would read the exporter's series from Prometheus. The demo then
asks what the HPA controller asks: discovery for the preferred version of
`custom.metrics.k8s.io`, then the `pods/*` list of `sgx_epc_usage_ratio` for the Deployment's
label selector, and applies the controller's replica rule (`hpa.py`) to the values served, once
with the enclaves near their limits and once after their use falls.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import aiohttp
from aiohttp import web

from epcsched.config import config_from_mapping
from epcsched.kube.client import load_configuration
from epcsched.metricsapi.app import create_app
from epcsched.metricsapi.auth import Reviewer
from epcsched.metricsapi.hpa import replicas_for_pods_metric
from epcsched.metricsapi.index import InformedIndex
from epcsched.metricsapi.source import MemorySource
from epcsched.metricsapi.tls import ServingTls, TlsSite, self_signed
from epcsched.metricsapi.values import USAGE_RATIO
from epcsched.quantity import format_bytes, parse_quantity
from epcsched.testing.access import Grant, TokenUser
from epcsched.testing.apiserver import FakeApiServer

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"
HPA_USER = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
TOKEN = "demo-hpa-token"
NAMESPACE = "enclaves"
SELECTOR = "app=kms"
TARGET = "800m"
"""The target of the example HPA (manifests/examples/enclave-hpa.yaml)."""
GIB = 2**30
# EPC each example enclave holds (pod UID -> bytes): kms-0 at 95 % of its 8Gi, kms-1 at 90 % of
# its 4Gi; then, once the load falls, a quarter of each.
BUSY = {"uid-kms-0": 7.6 * GIB, "uid-kms-1": 3.6 * GIB, "uid-ledger-0": 1 * GIB}
QUIET = {"uid-kms-0": 2 * GIB, "uid-kms-1": 1 * GIB, "uid-ledger-0": 1 * GIB}


@dataclass(frozen=True, slots=True)
class Reading:
    """One answer of the metrics API and the replica count the HPA rule gives for it."""

    values: dict[str, str]
    """sgx_epc_usage_ratio per pod, as served."""
    replicas: int


def milli(value: str) -> int:
    """`Quantity.MilliValue()`: thousandths, rounded up."""
    return math.ceil(parse_quantity(value) * 1000)


@contextlib.contextmanager
def _quiet_front_proxy() -> Iterator[None]:
    """The demo authenticates with a bearer token; the server's warning that the example cluster
    has no front-proxy ConfigMap (which only the aggregator's path needs) is not part of it."""
    logger = logging.getLogger("epcsched.metricsapi")
    saved = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(saved)


async def _get(session: aiohttp.ClientSession, url: str, context: ssl.SSLContext) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with session.get(url, ssl=context, headers=headers) as response:
        body: dict[str, Any] = await response.json()
        if response.status != 200:
            raise RuntimeError(f"GET {url}: {response.status} {body.get('message')}")
        return body


async def _ask(
    session: aiohttp.ClientSession,
    base: str,
    context: ssl.SSLContext,
    current: int,
    out: TextIO,
) -> Reading:
    groups = await _get(session, f"{base}/apis", context)
    (group,) = [g for g in groups["groups"] if g["name"] == "custom.metrics.k8s.io"]
    version = group["preferredVersion"]["version"]
    # client-go escapes the `*` of "every pod" in the path.
    path = f"/apis/custom.metrics.k8s.io/{version}/namespaces/{NAMESPACE}/pods/%2A/{USAGE_RATIO}"
    query = f"labelSelector={quote(SELECTOR)}"
    body = await _get(session, f"{base}{path}?{query}", context)
    print(f"GET {path}?{query}  ({body['kind']})", file=out)
    values = {item["describedObject"]["name"]: item["value"] for item in body["items"]}
    for name, value in values.items():
        print(f"  {name:<8} {value:>6}", file=out)
    served = [milli(v) for v in values.values()]
    replicas = replicas_for_pods_metric(current, served, milli(TARGET))
    average = sum(served) // len(served)
    ratio = average / milli(TARGET)
    print(
        f"  HPA rule, averageValue {TARGET}: average {average}m / {milli(TARGET)}m = "
        f"{ratio:.3f}, ceil({current} x {ratio:.3f}) = {replicas} "
        + ("replica" if replicas == 1 else "replicas")
        + (" (within 10 %: unchanged)" if replicas == current else ""),
        file=out,
    )
    return Reading(values, replicas)


async def hpa_demo(out: TextIO = sys.stdout) -> list[Reading]:
    """Run the metrics API demo, printing each request and the replica count it leads to."""
    config = config_from_mapping({"metricsApi": {"host": "127.0.0.1", "port": 0}})
    source = MemorySource({"usage": BUSY})
    readings = []
    with tempfile.TemporaryDirectory(prefix="epcsched-demo-") as tmp, _quiet_front_proxy():
        async with FakeApiServer() as api:
            api.load(EXAMPLES / "cluster.json")
            api.access.tokens[TOKEN] = TokenUser(HPA_USER)
            api.access.grants.extend(
                [
                    Grant(
                        users=(HPA_USER,),
                        verbs=("get", "list"),
                        api_groups=("custom.metrics.k8s.io", "external.metrics.k8s.io"),
                    ),
                    Grant(users=(HPA_USER,), verbs=("get",), non_resource_urls=("/apis*",)),
                ]
            )
            configuration = await load_configuration(api.write_kubeconfig(Path(tmp) / "kube"))
            cert, key = self_signed(tmp, ["127.0.0.1"])
            tls = ServingTls(cert, key)
            index = InformedIndex(configuration, config.epc.resources)
            app = create_app(config, index, source, Reviewer(configuration, ttl=10.0), tls=tls)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            try:
                await TlsSite(runner, "127.0.0.1", 0, tls).start()
                base = f"https://127.0.0.1:{runner.addresses[0][1]}"
                await index.wait_synced(10.0)
                print(
                    f"\n== EPC metrics for the HorizontalPodAutoscaler: epcsched metrics-api on "
                    f"{base}\n(fake API server with examples/cluster.json; EPC use from "
                    f"{source.url}; requests as the HPA controller makes them, with its service "
                    "account's token)",
                    file=out,
                )
                context = ssl.create_default_context(cafile=str(cert))
                async with aiohttp.ClientSession() as session:
                    held = ", ".join(
                        f"{name} holds {format_bytes(round(BUSY[f'uid-{name}']))}"
                        for name in ("kms-0", "kms-1")
                    )
                    print(f"\nThe kms enclaves busy ({held} of 8Gi and 4Gi limits):", file=out)
                    readings.append(await _ask(session, base, context, 2, out))
                    source.set("usage", QUIET)
                    print("\nThe load falls (2Gi and 1Gi held):", file=out)
                    readings.append(await _ask(session, base, context, 2, out))
                print(
                    "An HPA then applies its behavior: at most double (or +4 pods) per sync "
                    "up, the highest recommendation of the last 5 minutes down, within "
                    "minReplicas..maxReplicas.",
                    file=out,
                )
            finally:
                await runner.cleanup()
    return readings
