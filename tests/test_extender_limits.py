"""Memory stays bounded by the configuration, and every refusal is the same JSON (issue 9 point 6).

The extender sidecar runs under the memory limit in `manifests/base/scheduler`; the default
`extender.maxBodyBytes` must keep the worst request it accepts well within it. The worst body per
byte is a `NodeNames` list of short names the cache does not know (each becomes a failure with a
reason). A real `epcsched extender` child process, on the default configuration, gets the largest
such body it accepts, and its peak resident set (`VmHWM`) is read from /proc; one byte more is a
413. 413, 404 and 405 carry the `{"Error": ...}` body every other refusal has.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from epcsched.config import Config
from epcsched.extender.app import create_app
from epcsched.netutil import free_port
from epcsched.quantity import parse_int
from epcsched.state import SnapshotState
from epcsched.testing.processes import command, peak_rss, wait_ready
from tests.helpers import cluster, node, pod, snapshot_of

ROOT = Path(__file__).resolve().parent.parent
MB = 2**20


def extender_memory_limit() -> int:
    """The extender container's memory limit in the shipped scheduler Deployment, in bytes."""
    documents = yaml.safe_load_all((ROOT / "manifests/base/scheduler/deployment.yaml").read_text())
    (deployment,) = [d for d in documents if d and d.get("kind") == "Deployment"]
    containers = deployment["spec"]["template"]["spec"]["initContainers"]
    (extender,) = [c for c in containers if c["name"] == "extender"]
    return parse_int(extender["resources"]["limits"]["memory"])


async def test_refusals_are_json(extender_client: Any) -> None:
    config = Config()
    config.extender.max_body_bytes = 1024
    app = create_app(config, SnapshotState(snapshot_of(node("a", "1Gi"))))
    client = await extender_client(app)

    big = json.dumps({"Pod": pod("p", "1Mi"), "NodeNames": ["a"] * 200}).encode()
    assert len(big) > 1024
    response = await client.post("/filter", data=big)
    assert response.status == 413
    assert response.content_type == "application/json"
    assert "Maximum request body size 1024 exceeded" in (await response.json())["Error"]

    response = await client.get("/filter")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert (await response.json()) == {"Error": "GET /filter: method not allowed (use POST)"}

    response = await client.post("/filtre", data=b"{}")
    assert response.status == 404
    error = (await response.json())["Error"]
    assert error.startswith("/filtre: not found (served: ")
    assert "/filter" in error and "/prioritize" in error

    # The routes that exist still answer as before.
    assert (await client.get("/healthz")).status == 200
    reply = await client.post(
        "/filter", data=json.dumps({"Pod": pod("p", "1Mi"), "NodeNames": ["a"]}).encode()
    )
    assert reply.status == 200 and (await reply.json())["NodeNames"] == ["a"]


def post(port: int, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/filter", data=body)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def names_body(size: int) -> bytes:
    """A filter body of at most `size` bytes, and within 11 of it, listing names the cache does
    not know (the most memory per byte), encoded as kube-scheduler encodes it: no whitespace."""
    incoming = pod("big", "64Mi")
    empty = len(msgspec.json.encode({"Pod": incoming, "Nodes": None, "NodeNames": []}))
    count = (size - empty + 1) // 11  # "u1234567",
    names = [f"u{i:07d}" for i in range(count)]
    return msgspec.json.encode({"Pod": incoming, "Nodes": None, "NodeNames": names})


@pytest.mark.timeout(240)
def test_worst_accepted_body_stays_within_the_memory_limit(tmp_path: Path) -> None:
    limit = extender_memory_limit()
    accepted = Config().extender.max_body_bytes
    snapshot = tmp_path / "cluster.json"
    # A cluster of the size the sidecar's baseline was measured on: 1,000 nodes, 10,000 pods.
    items = [node(f"aks-dcsv3-{i:05d}", "16Gi") for i in range(1000)]
    items += [pod(f"p{i:05d}", "64Mi", node_name=f"aks-dcsv3-{i % 1000:05d}") for i in range(10000)]
    snapshot.write_text(json.dumps(cluster(*items)))
    port = free_port()
    proc = subprocess.Popen(
        # At the default level, INFO: the decision log then reads the reply as well.
        command("extender", "--snapshot", str(snapshot), "--port", str(port)),
        stderr=(tmp_path / "extender.log").open("wb"),
        cwd=ROOT,
    )
    try:
        wait_ready(port, proc, timeout=60)
        baseline = peak_rss(proc.pid)

        status, reply = post(port, names_body(accepted + 12))
        assert status == 413 and b"Maximum request body size" in reply
        assert peak_rss(proc.pid) < baseline + 4 * accepted  # read up to the limit, no further

        body = names_body(accepted)
        assert accepted - 11 < len(body) <= accepted
        status, reply = post(port, body)
        assert status == 200
        failed = len(json.loads(reply)["FailedNodes"])
        assert failed > 700_000
        # The decision log runs after the reply is sent: wait until the peak stops moving.
        peak = peak_rss(proc.pid)
        for _ in range(50):
            time.sleep(0.3)
            if peak_rss(proc.pid) == peak:
                break
            peak = peak_rss(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # So many failures are counted, not grouped, in the decision log.
    decisions = [
        line
        for line in (tmp_path / "extender.log").read_text().splitlines()
        if "epcsched.extender.decisions" in line
    ]
    assert len(decisions) == 1
    assert f"failed {failed} nodes ({failed} where preemption could help, 0 where" in decisions[0]
    assert f"{failed}× reasons not grouped: too many failed nodes" in decisions[0]
    # Within three quarters of the limit: a margin for the cache of a bigger cluster.
    assert peak <= 0.75 * limit, f"peak {peak / MB:.0f} MB of a {limit / MB:.0f} MB limit"
    print(f"baseline {baseline / MB:.0f} MB, peak {peak / MB:.0f} MB for {accepted / MB:.0f} MB")
