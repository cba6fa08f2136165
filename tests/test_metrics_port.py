"""Metrics on their own port (issue 9 point 7).

`epcsched extender --metrics-port` serves /metrics (and /healthz, /readyz for the kubelet's
probes) on a listener apart from the extender verbs, as controller-runtime's
`--metrics-bind-address` does, so that a NetworkPolicy can let Prometheus reach the metrics and
nothing that decides placements. Checked on the real command (both ports picked by the OS, read
from its start line), and in the shipped manifests: the verbs listen on loopback only (where
kube-scheduler, in the same pod, calls them), probes, the metrics Service and the ServiceMonitor
use the metrics port, and the NetworkPolicy opens that port alone.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from epcsched.config import config_from_mapping
from epcsched.testing.processes import command
from tests.helpers import cluster, node, pod

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def call(address: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://{address}{path}", data=body)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def extender(tmp_path: Path) -> Iterator[dict[str, Any]]:
    snapshot = tmp_path / "cluster.json"
    snapshot.write_text(json.dumps(cluster(node("a", "1Gi"))))
    argv = command("extender", "--snapshot", str(snapshot), "--port", "0")
    proc = subprocess.Popen(
        [*argv, "--metrics-port", "0", "--log-format", "json"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        started: dict[str, Any] = json.loads(proc.stderr.readline())
        yield started
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_metrics_and_verbs_on_separate_listeners(extender: dict[str, Any]) -> None:
    verbs, metrics = extender["address"], extender["metricsAddress"]
    assert verbs != metrics
    assert f"/metrics, /healthz and /readyz on {metrics}" in extender["message"]
    body = json.dumps({"Pod": pod("p", "1Mi"), "NodeNames": ["a"]}).encode()

    status, page = call(metrics, "/metrics")
    assert status == 200 and b"epcsched_build_info{" in page
    assert b"epcsched_extender_requests_total" in page
    for probe in ("/healthz", "/readyz"):
        assert call(metrics, probe)[0] == 200
    # Nothing that decides placements answers on the metrics port.
    for verb in ("/filter", "/prioritize", "/preempt", "/bind"):
        status, reply = call(metrics, verb, body)
        assert status == 404 and verb in json.loads(reply)["Error"]

    status, reply = call(verbs, "/filter", body)
    assert status == 200 and json.loads(reply)["NodeNames"] == ["a"]
    assert call(verbs, "/metrics")[0] == 404
    # The filter just served shows in the counters on the metrics port.
    _, page = call(metrics, "/metrics")
    assert re.search(rb'epcsched_extender_requests_total\{code="200",verb="filter"\} 1\.0', page), (
        page.decode()[:2000]
    )


def rendered() -> list[dict[str, Any]]:
    if not Path(KUBECTL).exists():
        pytest.fail(f"kubectl not found at {KUBECTL}")
    done = subprocess.run(
        [KUBECTL, "kustomize", str(ROOT / "manifests" / "monitoring")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_manifests_open_only_the_metrics_port() -> None:
    docs = rendered()

    def one(kind: str, name: str) -> dict[str, Any]:
        (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
        return found

    configmap = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("epcsched-config")
    )
    config = config_from_mapping(yaml.safe_load(configmap["data"]["config.yaml"]))
    settings = config.extender
    assert settings.host == "127.0.0.1"  # kube-scheduler is in the same pod
    assert settings.metrics_host == "0.0.0.0" and settings.metrics_port is not None
    deployment = one("Deployment", "epcsched-scheduler")
    (extender,) = [
        c
        for c in deployment["spec"]["template"]["spec"]["initContainers"]
        if c["name"] == "extender"
    ]
    ports = {p["name"]: p["containerPort"] for p in extender["ports"]}
    assert ports == {"metrics": settings.metrics_port}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert extender[probe]["httpGet"]["port"] == "metrics"
    service = one("Service", "epcsched-extender")
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        (settings.metrics_port, "metrics")
    ]
    monitor = one("ServiceMonitor", "epcsched-extender")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [
        service["spec"]["ports"][0]["name"]
    ]
    policy = one("NetworkPolicy", "epcsched-scheduler")
    opened = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert settings.port not in opened
    assert settings.metrics_port in opened
