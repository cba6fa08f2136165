"""`epcsched metrics-api` answers the HPA controller's requests with the EPC values Prometheus
holds, so that a stock HorizontalPodAutoscaler scales enclaves on EPC.

Everything is real except the cluster: a real Prometheus loaded by `promtool` with ten minutes of
the exporter's series (per-pod EPC bytes and limit-hit counters keyed by pod UID, node capacity,
free EPC and eviction counters), queried at a pinned time; the fake API server over HTTP with the
pods and nodes, the front-proxy ConfigMap and an RBAC-like policy; the metrics API itself started
by `serve()` on a loopback TLS port; and a client that speaks like the HPA controller (front-proxy
client certificate, X-Remote-User/Group, discovery then the list with a label selector). Expected
values are worked out by hand from the recorded history. Protects DESIGN.md section 5b: the
documents' shapes for v1beta2 and v1beta1, pods without a sample left out, 404/400/405/503
Statuses and never a 500, and the HPA rule giving 4 replicas at 95 % of the EPC limit and 2 at
50 % against an `800m` target.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client.parser import text_string_to_metric_families

from epcsched.config import Config, config_from_mapping
from epcsched.kube.client import load_configuration
from epcsched.metricsapi.command import serve
from epcsched.metricsapi.tls import ServingTls, self_signed
from epcsched.quantity import parse_quantity
from epcsched.testing.access import Grant
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND
from tests.prometheus_fixtures import PrometheusServer, backfill

pytestmark = pytest.mark.timeout(90)

MiB = 2**20
EPC = "sgx.intel.com/epc"
T0 = (int(time.time()) // 60) * 60 - 1800
STEP = 15
HPA_USER = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
HPA_GROUPS = (
    "system:serviceaccounts",
    "system:serviceaccounts:kube-system",
    "system:authenticated",
)
PROXY_CN = "front-proxy-client"

# ----- the recorded cluster ---------------------------------------------------------------
# hot-*: three enclaves at 95 % of a 100Mi EPC limit; cool-*: three at 50 %. In `hot`, also a
# pending pod (no sample), one whose samples stopped 5 minutes before T0 (older than the 120 s
# window), and one with no EPC limit. n-hot and n-cool make pool dcsv3, n-other pool general.
HELD_95 = 99614720  # 0.95 * 100Mi, exactly
HELD_50 = 52428800  # 0.50 * 100Mi


def uid(name: str) -> str:
    number = sum(ord(c) * 31**i for i, c in enumerate(name)) % 16**12
    return f"00000000-0000-4000-8000-{number:012x}"


PODS: dict[str, dict[str, Any]] = {
    "hot/hot-1": {"app": "enclave", "epc": "100Mi", "node": "n-hot", "held": HELD_95},
    "hot/hot-2": {"app": "enclave", "epc": "100Mi", "node": "n-hot", "held": HELD_95},
    "hot/hot-3": {"app": "enclave", "epc": "100Mi", "node": "n-hot", "held": HELD_95},
    "hot/hot-pending": {"app": "batch", "epc": "100Mi", "node": None, "held": None},
    "hot/hot-stale": {"app": "batch", "epc": "100Mi", "node": "n-other", "held": 30 * MiB},
    "hot/hot-nolimit": {"app": "batch", "epc": None, "node": "n-other", "held": MiB},
    "cool/cool-1": {"app": "enclave", "epc": "100Mi", "node": "n-cool", "held": HELD_50},
    "cool/cool-2": {"app": "enclave", "epc": "100Mi", "node": "n-cool", "held": HELD_50},
    "cool/cool-3": {"app": "enclave", "epc": "100Mi", "node": "n-cool", "held": HELD_50},
}
NODES = {
    "n-hot": {"agentpool": "dcsv3", "epc": "512Mi"},
    "n-cool": {"agentpool": "dcsv3", "epc": "512Mi"},
    "n-other": {"agentpool": "general", "epc": "256Mi"},
}


def history() -> str:
    """Ten minutes of the exporter's series up to T0, as OpenMetrics for promtool."""
    lines: list[str] = ["# TYPE epcsched_cgroup_epc_bytes gauge"]
    times = range(T0 - 600, T0 + 1, STEP)
    for key, pod in PODS.items():
        if pod["held"] is None:
            continue
        end = T0 - 300 if key.endswith("stale") else T0
        labels = f'node="{pod["node"]}",pod="{uid(key)}"'
        lines += [
            f"epcsched_cgroup_epc_bytes{{{labels}}} {pod['held']} {t}" for t in times if t <= end
        ]
    # hot-1 hits its limit twice every 15 s (0.133/s); hot-2's counter stands still at 7.
    lines.append("# TYPE epcsched_cgroup_epc_max_events counter")
    for key, count in (
        ("hot/hot-1", lambda t: 1000 + 2 * (t - T0 + 600) // STEP),
        ("hot/hot-2", lambda t: 7),
    ):
        labels = f'node="n-hot",pod="{uid(key)}"'
        lines += [f"epcsched_cgroup_epc_max_events_total{{{labels}}} {count(t)} {t}" for t in times]
    for name, kind, values in (
        ("epcsched_node_epc_capacity_bytes", "gauge", {"n-hot": 512 * MiB, "n-cool": 512 * MiB}),
        ("epcsched_node_epc_free_bytes", "gauge", {"n-hot": 112 * MiB, "n-cool": 462 * MiB}),
    ):
        lines.append(f"# TYPE {name} {kind}")
        for node, value in values.items():
            lines += [f'{name}{{node="{node}"}} {value} {t}' for t in times]
    # Evictions: n-hot pages 1500 pages/s, n-cool 10/s.
    lines.append("# TYPE epcsched_node_epc_evicted_pages counter")
    for node, slope in (("n-hot", 1500), ("n-cool", 10)):
        lines += [
            f'epcsched_node_epc_evicted_pages_total{{node="{node}"}} {slope * (t - T0 + 600)} {t}'
            for t in times
        ]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def pod_object(key: str) -> dict[str, Any]:
    namespace, name = key.split("/")
    pod = PODS[key]
    requests: dict[str, str] = {"cpu": "100m", "memory": "64Mi"}
    if pod["epc"]:
        requests[EPC] = pod["epc"]
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "app",
                "image": "enclave:1",
                "resources": {"requests": requests, "limits": requests},
            }
        ]
    }
    if pod["node"]:
        spec["nodeName"] = pod["node"]
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid(key),
            "labels": {"app": pod["app"]},
        },
        "spec": spec,
        "status": {"phase": "Running" if pod["node"] else "Pending"},
    }


def node_object(name: str) -> dict[str, Any]:
    node = NODES[name]
    allocatable = {"cpu": "8", "memory": "32Gi", "pods": "110", EPC: node["epc"]}
    return {
        "metadata": {"name": name, "labels": {"agentpool": node["agentpool"]}},
        "status": {"allocatable": allocatable, "conditions": [{"type": "Ready", "status": "True"}]},
    }


# ----- certificates -----------------------------------------------------------------------
@dataclass
class Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def make_ca(name: str) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issuer(cert, key)


def client_cert(ca: Issuer, common_name: str, directory: Path) -> tuple[Path, Path]:
    """A client certificate (clientAuth) that `ca` signed, as files."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{common_name}.crt"
    key_path = directory / f"{common_name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def auth_configmap(front_proxy_ca: Issuer) -> dict[str, Any]:
    """kube-system/extension-apiserver-authentication as kube-apiserver writes it."""
    return {
        "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
        "data": {
            "client-ca-file": "",
            "requestheader-client-ca-file": front_proxy_ca.pem,
            "requestheader-allowed-names": json.dumps([PROXY_CN]),
            "requestheader-username-headers": json.dumps(["X-Remote-User"]),
            "requestheader-group-headers": json.dumps(["X-Remote-Group"]),
            "requestheader-extra-headers-prefix": json.dumps(["X-Remote-Extra-"]),
        },
    }


# ----- the running system -----------------------------------------------------------------
@dataclass
class System:
    """The metrics API, the fake API server it reviews with, and how to reach them."""

    url: str
    api: FakeApiServer
    server_cert: Path
    pki: Path
    front_proxy_ca: Issuer
    configuration: Any
    """The API server configuration the metrics API was given."""

    def client_tls(self, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.server_cert))
        if cert is not None:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        return context

    def proxy_tls(self) -> ssl.SSLContext:
        """The aggregator's side: the front-proxy client certificate."""
        return self.client_tls(client_cert(self.front_proxy_ca, PROXY_CN, self.pki))


def metrics_config(prometheus_url: str) -> Config:
    return config_from_mapping(
        {
            "prometheus": {"url": prometheus_url},
            "metricsApi": {"host": "127.0.0.1", "port": 0, "window": "2m", "cacheTtl": "10s"},
            "autoscaler": {
                "nodePools": [
                    {"name": "dcsv3", "nodeSelector": {"agentpool": "dcsv3"}},
                    {"name": "general", "nodeSelector": {"agentpool": "general"}},
                ]
            },
        }
    )


async def start_system(
    tmp_path: Path,
    prometheus_url: str,
    *,
    grants: list[Grant] | None = None,
    qps: float | None = None,
    burst: int | None = None,
) -> AsyncIterator[System]:
    """Start the fake API server (seeded) and `serve()`; yields once /readyz says ready. With
    `qps`, its clients share that rate limit (`--kube-api-qps`, `--kube-api-burst`)."""
    api = FakeApiServer()
    for name in NODES:
        api.store.load(BY_KIND["Node"], node_object(name))
    for key in PODS:
        api.store.load(BY_KIND["Pod"], pod_object(key))
    front_proxy_ca = make_ca("front-proxy-ca")
    api.store.load(BY_KIND["ConfigMap"], auth_configmap(front_proxy_ca))
    api.access.grants.extend(
        grants
        if grants is not None
        else [
            Grant(
                users=(HPA_USER,),
                verbs=("get", "list"),
                api_groups=("custom.metrics.k8s.io", "external.metrics.k8s.io"),
                resources=("*",),
            ),
            Grant(
                groups=("system:authenticated",),
                verbs=("get",),
                non_resource_urls=("/apis", "/apis/*"),
            ),
        ]
    )
    await api.start()
    configuration = await load_configuration(
        api.write_kubeconfig(tmp_path / "kubeconfig"), qps=qps, burst=burst
    )
    cert, key = self_signed(tmp_path, ["127.0.0.1"])
    stop = asyncio.Event()
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            metrics_config(prometheus_url),
            configuration,
            ServingTls(cert, key),
            stop=stop,
            started=started,
            clock=lambda: float(T0),
        )
    )
    try:
        port = await asyncio.wait_for(asyncio.shield(started), 20)
        system = System(
            f"https://127.0.0.1:{port}", api, cert, tmp_path / "pki", front_proxy_ca, configuration
        )
        context = system.client_tls()
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                async with session.get(system.url + "/readyz", ssl=context) as response:
                    if response.status == 200:
                        break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"metrics API not ready: {await response.text()}")
        yield system
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await api.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    work = tmp_path_factory.mktemp("prometheus-epc")
    server = PrometheusServer(work)
    backfill(server.data_dir, history(), work)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def system(tmp_path: Path, prometheus: PrometheusServer) -> AsyncIterator[System]:
    async for running in start_system(tmp_path, prometheus.url):
        yield running


class HpaClient:
    """Requests as the HPA controller's custom and external metrics clients make them, through
    the aggregator (front-proxy certificate, user and groups in headers)."""

    def __init__(self, system: System, session: aiohttp.ClientSession) -> None:
        self.system = system
        self.session = session
        self.tls = system.proxy_tls()
        self.headers = [("X-Remote-User", HPA_USER)] + [("X-Remote-Group", g) for g in HPA_GROUPS]

    async def get(self, path: str, **query: str) -> tuple[int, dict[str, Any]]:
        async with self.session.get(
            self.system.url + path, params=query or None, ssl=self.tls, headers=self.headers
        ) as response:
            return response.status, await response.json()

    async def preferred_version(self, group: str) -> str:
        status, groups = await self.get("/apis")
        assert status == 200 and groups["kind"] == "APIGroupList"
        (found,) = [g for g in groups["groups"] if g["name"] == group]
        return str(found["preferredVersion"]["version"])

    async def pod_metric(
        self, namespace: str, metric: str, selector: str, *, version: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        version = version or await self.preferred_version("custom.metrics.k8s.io")
        # client-go escapes the `*` of "all pods" in the path.
        path = f"/apis/custom.metrics.k8s.io/{version}/namespaces/{namespace}/pods/%2A/{metric}"
        return await self.get(path, labelSelector=selector)


def milli(value: str) -> int:
    """resource.Quantity.MilliValue(): thousandths, rounded up."""
    return math.ceil(parse_quantity(value) * 1000)


def hpa_replicas(current: int, values_milli: list[int], target_milli: int) -> int:
    """The HPA controller's rule for a Pods metric with an AverageValue target, all pods ready:
    keep the count within 10 % of the target, else ceil(current * average / target)."""
    ratio = Fraction(sum(values_milli), target_milli * len(values_milli))
    if abs(ratio - 1) <= Fraction(1, 10):
        return current
    return math.ceil(ratio * current)


# ----- discovery --------------------------------------------------------------------------
async def test_discovery_names_groups_versions_and_each_metric(system: System) -> None:
    async with aiohttp.ClientSession() as session:
        hpa = HpaClient(system, session)
        status, groups = await hpa.get("/apis")
        assert status == 200
        assert {g["name"]: [v["version"] for v in g["versions"]] for g in groups["groups"]} == {
            "custom.metrics.k8s.io": ["v1beta2", "v1beta1"],
            "external.metrics.k8s.io": ["v1beta1"],
        }
        assert await hpa.preferred_version("custom.metrics.k8s.io") == "v1beta2"
        status, group = await hpa.get("/apis/external.metrics.k8s.io")
        assert (status, group["kind"], group["preferredVersion"]["groupVersion"]) == (
            200,
            "APIGroup",
            "external.metrics.k8s.io/v1beta1",
        )
        for version in ("v1beta2", "v1beta1"):
            status, listing = await hpa.get(f"/apis/custom.metrics.k8s.io/{version}")
            assert status == 200 and listing["kind"] == "APIResourceList"
            assert listing["groupVersion"] == f"custom.metrics.k8s.io/{version}"
            assert {
                r["name"]: (r["namespaced"], r["kind"], r["verbs"]) for r in listing["resources"]
            } == {
                f"pods/{m}": (True, "MetricValueList", ["get"])
                for m in ("sgx_epc_usage_bytes", "sgx_epc_usage_ratio", "sgx_epc_limit_hits")
            }
        status, listing = await hpa.get("/apis/external.metrics.k8s.io/v1beta1")
        assert [r["name"] for r in listing["resources"]] == [
            "sgx_epc_pool_utilization",
            "sgx_epc_node_paging_rate",
        ]


# ----- pod metrics ------------------------------------------------------------------------
async def test_usage_ratio_v1beta2_list_as_the_hpa_reads_it(system: System) -> None:
    async with aiohttp.ClientSession() as session:
        status, body = await HpaClient(system, session).pod_metric(
            "hot", "sgx_epc_usage_ratio", "app=enclave"
        )
    assert status == 200
    assert (body["kind"], body["apiVersion"]) == (
        "MetricValueList",
        "custom.metrics.k8s.io/v1beta2",
    )
    stamp = datetime.datetime.fromtimestamp(T0, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["items"] == [
        {
            "describedObject": {
                "kind": "Pod",
                "namespace": "hot",
                "name": f"hot-{i}",
                "apiVersion": "/v1",
            },
            "metric": {"name": "sgx_epc_usage_ratio"},
            "timestamp": stamp,
            "windowSeconds": 0,
            "value": "950m",
        }
        for i in (1, 2, 3)
    ]


async def test_v1beta1_shape_has_metric_name_and_window(system: System) -> None:
    async with aiohttp.ClientSession() as session:
        status, body = await HpaClient(system, session).pod_metric(
            "hot", "sgx_epc_limit_hits", "app=enclave", version="v1beta1"
        )
    assert status == 200 and body["apiVersion"] == "custom.metrics.k8s.io/v1beta1"
    # hot-1: 2 events per 15 s = 0.1333/s; hot-2: a counter that stands still; hot-3: no series.
    assert [
        (i["describedObject"]["name"], i["metricName"], i["window"], i["value"])
        for i in body["items"]
    ] == [
        ("hot-1", "sgx_epc_limit_hits", 120, "133m"),
        ("hot-2", "sgx_epc_limit_hits", 120, "0"),
    ]
    assert all("metric" not in item for item in body["items"])


async def test_pods_without_a_sample_in_the_window_or_a_limit_are_left_out(system: System) -> None:
    async with aiohttp.ClientSession() as session:
        hpa = HpaClient(system, session)
        _, usage = await hpa.pod_metric("hot", "sgx_epc_usage_bytes", "app=batch")
        _, ratio = await hpa.pod_metric("hot", "sgx_epc_usage_ratio", "app=batch")
        _, every = await hpa.pod_metric("hot", "sgx_epc_usage_bytes", "")
    # hot-pending has no sample, hot-stale's last is 300 s old (window 120 s).
    assert [(i["describedObject"]["name"], i["value"]) for i in usage["items"]] == [
        ("hot-nolimit", "1048576")
    ]
    # hot-nolimit holds EPC but has no limit to be a share of.
    assert ratio["items"] == []
    assert [i["describedObject"]["name"] for i in every["items"]] == [
        "hot-1",
        "hot-2",
        "hot-3",
        "hot-nolimit",
    ]
    assert {i["value"] for i in every["items"][:3]} == {str(HELD_95)}


async def test_one_named_pod_and_the_missing_ones_are_404(system: System) -> None:
    async with aiohttp.ClientSession() as session:
        hpa = HpaClient(system, session)
        base = "/apis/custom.metrics.k8s.io/v1beta2/namespaces"
        status, body = await hpa.get(f"{base}/cool/pods/cool-2/sgx_epc_usage_ratio")
        assert status == 200
        assert [(i["describedObject"]["name"], i["value"]) for i in body["items"]] == [
            ("cool-2", "500m")
        ]
        status, body = await hpa.get(f"{base}/cool/pods/ghost/sgx_epc_usage_ratio")
        assert (status, body["kind"], body["reason"], body["message"]) == (
            404,
            "Status",
            "NotFound",
            'pods "ghost" not found',
        )
        status, body = await hpa.get(f"{base}/hot/pods/hot-pending/sgx_epc_usage_bytes")
        assert (status, body["message"]) == (
            404,
            "the server could not find the metric sgx_epc_usage_bytes for pods hot-pending",
        )
        status, body = await hpa.get(f"{base}/hot/pods/%2A/sgx_epc_cpu")
        assert (status, body["reason"]) == (404, "NotFound")
        assert body["message"] == "the server could not find the metric sgx_epc_cpu for pods"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"labelSelector": "app in (enclave"}, 400),
        ({"labelSelector": "app=="}, 200),
        ({"labelSelector": "=enclave"}, 400),
        ({"labelSelector": "app=en clave"}, 400),
        ({"metricLabelSelector": "x notin ()"}, 400),
        ({"labelSelector": "app=enclave,,tier=x"}, 400),
    ],
)
async def test_bad_selectors_are_400_statuses(
    system: System, query: dict[str, str], code: int
) -> None:
    async with aiohttp.ClientSession() as session:
        status, body = await HpaClient(system, session).get(
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/hot/pods/%2A/sgx_epc_usage_ratio",
            **query,
        )
    assert status == code
    if code == 400:
        assert (body["kind"], body["reason"], body["code"]) == ("Status", "BadRequest", 400)
        assert body["message"].startswith("unable to parse the selector: ")


async def test_metric_label_selector_over_label_free_pod_metrics(system: System) -> None:
    async with aiohttp.ClientSession() as session:
        hpa = HpaClient(system, session)
        path = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/hot/pods/%2A/sgx_epc_usage_ratio"
        _, none = await hpa.get(path, labelSelector="app=enclave", metricLabelSelector="tier=gold")
        _, all_ = await hpa.get(path, labelSelector="app=enclave", metricLabelSelector="!tier")
    assert none["items"] == []
    assert len(all_["items"]) == 3


# ----- the HPA rule -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("namespace", "value", "replicas"), [("hot", "950m", 4), ("cool", "500m", 2)]
)
async def test_hpa_rule_on_usage_ratio_scales_up_at_95_and_down_at_50_percent(
    system: System, namespace: str, value: str, replicas: int
) -> None:
    """Three replicas, target averageValue 800m: 950/800 = 1.1875, ceil(3 * 1.1875) = 4;
    500/800 = 0.625, ceil(3 * 0.625) = 2."""
    async with aiohttp.ClientSession() as session:
        status, body = await HpaClient(system, session).pod_metric(
            namespace, "sgx_epc_usage_ratio", "app=enclave"
        )
    assert status == 200
    values = [milli(item["value"]) for item in body["items"]]
    assert values == [milli(value)] * 3
    assert hpa_replicas(3, values, milli("800m")) == replicas


# ----- external metrics -------------------------------------------------------------------
async def test_pool_utilization_counts_the_larger_of_requested_and_measured(system: System) -> None:
    """dcsv3: n-hot max(300Mi requested, 400Mi measured) + n-cool max(300Mi, 50Mi) = 700Mi of
    1024Mi = 0.684; general: n-other has no measurement, 100Mi requested of 256Mi = 0.391."""
    async with aiohttp.ClientSession() as session:
        hpa = HpaClient(system, session)
        path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/hot/sgx_epc_pool_utilization"
        status, body = await hpa.get(path)
        _, one = await hpa.get(path, labelSelector="pool=dcsv3")
        _, by_node_label = await hpa.get(path, labelSelector="agentpool=general")
    assert status == 200 and body["kind"] == "ExternalMetricValueList"
    assert body["apiVersion"] == "external.metrics.k8s.io/v1beta1"
    assert [(i["metricLabels"], i["value"], i["window"]) for i in body["items"]] == [
        ({"agentpool": "dcsv3", "pool": "dcsv3"}, "684m", 0),
        ({"agentpool": "general", "pool": "general"}, "391m", 0),
    ]
    assert [i["value"] for i in one["items"]] == ["684m"]
    assert [i["metricLabels"]["pool"] for i in by_node_label["items"]] == ["general"]
    assert all(i["metricName"] == "sgx_epc_pool_utilization" for i in body["items"])


async def test_node_paging_rate_by_node_with_pool_and_node_labels(system: System) -> None:
    async with aiohttp.ClientSession() as session:
        hpa = HpaClient(system, session)
        path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/sgx_epc_node_paging_rate"
        _, pool = await hpa.get(path, labelSelector="pool=dcsv3")
        _, node = await hpa.get(path, labelSelector="node=n-cool")
        status, unknown = await hpa.get(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/default/sgx_epc_queue_depth"
        )
    assert [(i["metricLabels"], i["value"], i["window"]) for i in pool["items"]] == [
        ({"agentpool": "dcsv3", "node": "n-cool", "pool": "dcsv3"}, "10", 120),
        ({"agentpool": "dcsv3", "node": "n-hot", "pool": "dcsv3"}, "1500", 120),
    ]
    assert [i["value"] for i in node["items"]] == ["10"]
    assert (status, unknown["reason"]) == (404, "NotFound")


# ----- never a 500 ------------------------------------------------------------------------
async def test_odd_paths_and_methods_are_statuses_never_500(system: System) -> None:
    paths = [
        "/",
        "/apis/custom.metrics.k8s.io/v9",
        "/apis/custom.metrics.k8s.io/v1beta2/pods/%2A/sgx_epc_usage_ratio",
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/hot/metrics/sgx_epc_usage_ratio",
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/hot/pods/%2A/sgx_epc_usage_ratio/extra",
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/hot",
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/%00/pods/%2A/%FF",
        "/api/v1/pods",
    ]
    async with aiohttp.ClientSession() as session:
        hpa = HpaClient(system, session)
        # An administrator, so that every path gets past authorisation to routing.
        hpa.headers = [("X-Remote-User", "admin"), ("X-Remote-Group", "system:masters")]
        for path in paths:
            status, body = await hpa.get(path)
            assert status == 404, path
            assert body["kind"] == "Status"
        async with session.post(
            system.url
            + "/apis/custom.metrics.k8s.io/v1beta2/namespaces/hot/pods/%2A/sgx_epc_usage_ratio",
            ssl=hpa.tls,
            headers=hpa.headers,
            data=b"{}",
        ) as response:
            assert response.status == 405
            assert (await response.json())["reason"] == "MethodNotAllowed"


async def test_prometheus_down_is_a_503_that_names_it(tmp_path: Path) -> None:
    async for system in start_system(tmp_path, "http://127.0.0.1:9"):
        async with aiohttp.ClientSession() as session:
            status, body = await HpaClient(system, session).pod_metric(
                "hot", "sgx_epc_usage_ratio", "app=enclave"
            )
        assert (status, body["reason"]) == (503, "ServiceUnavailable")
        assert "cannot reach Prometheus at http://127.0.0.1:9" in body["message"]


def prometheus_queries(prometheus: PrometheusServer) -> float:
    """Instant queries Prometheus has answered so far, from its own /metrics."""
    with urllib.request.urlopen(prometheus.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "prometheus_http_requests_total"
                and sample.labels.get("handler") == "/api/v1/query"
            ):
                return float(sample.value)
    return 0.0


async def test_one_prometheus_query_serves_many_requests_within_the_cache_ttl(
    system: System, prometheus: PrometheusServer
) -> None:
    before = prometheus_queries(prometheus)
    async with aiohttp.ClientSession() as session:
        hpa = HpaClient(system, session)
        answers = await asyncio.gather(
            *(
                hpa.pod_metric(ns, "sgx_epc_usage_bytes", "app=enclave", version="v1beta2")
                for ns in ("hot", "cool") * 10
            )
        )
        # Twenty concurrent requests of two namespaces shared one query (usage); limit hits
        # is another query, run once for the two requests that follow.
        for ns in ("hot", "cool"):
            await hpa.pod_metric(ns, "sgx_epc_limit_hits", "app=enclave", version="v1beta2")
    assert {len(body["items"]) for _, body in answers} == {3}
    assert prometheus_queries(prometheus) - before == 2
