"""`epcsched extender` as a real process on a loopback port answers kube-scheduler's bodies.

Starts the installed command on a YAML snapshot (split over two files, as `--snapshot` allows),
waits for /readyz, replays the bodies a real kube-scheduler 1.35 sent, and checks the process
survives bad input and exits cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from epcsched.netutil import free_port
from epcsched.testing.processes import command, wait_ready
from tests.helpers import LEGACY, cluster, node, pod

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "kube-scheduler-1.35"


def call(port: int, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def extender(tmp_path: Path) -> Iterator[int]:
    nodes = cluster(
        node("sgx-a", "94Mi"),
        node("sgx-b", "32Gi"),
        node("sgx-c", "16384", resource=LEGACY),
        node("sgx-e", "16Gi"),
        node("sgx-f", "8Gi"),
    )
    pods = cluster(pod("a1", "72Mi", node_name="sgx-a"), pod("f1", "6Gi", node_name="sgx-f"))
    (tmp_path / "nodes.yaml").write_text(yaml.safe_dump(nodes))
    (tmp_path / "pods.yaml").write_text(yaml.safe_dump(pods))
    port = free_port()
    proc = subprocess.Popen(
        command(
            "extender", "--snapshot", str(tmp_path / "nodes.yaml"),
            "--snapshot", str(tmp_path / "pods.yaml"), "--port", str(port),
            "--strategy", "binpack",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_ready(port, proc, timeout=30)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        # A graceful shutdown exits 0; being killed by the signal (-SIGTERM) is a failure.
        assert proc.wait(timeout=15) == 0
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "Traceback" not in output


def test_replays_real_kube_scheduler_bodies(extender: int) -> None:
    status, reply = call(extender, "/filter", (FIXTURES / "filter-nodecache.json").read_bytes())
    assert status == 200
    assert json.loads(reply)["NodeNames"] == ["sgx-e", "sgx-f", "sgx-b"]
    status, reply = call(
        extender, "/prioritize", (FIXTURES / "prioritize-fullnodes.json").read_bytes()
    )
    assert status == 200
    scores = {e["Host"]: e["Score"] for e in json.loads(reply)}
    assert scores["sgx-f"] == 10 and "sgx-b" not in scores  # a zero score is left out
    status, reply = call(extender, "/filter", b"{]")
    assert status == 400 and b"malformed JSON" in reply
    status, _ = call(extender, "/filter", (FIXTURES / "filter-fullnodes.json").read_bytes())
    assert status == 200
    status, metrics = call(extender, "/metrics")
    assert (
        status == 200 and b'epcsched_extender_requests_total{code="400",verb="filter"}' in metrics
    )


def test_port_in_use_is_one_line_error(extender: int, tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps(cluster(node("a", "1Gi"))))
    result = subprocess.run(
        command("extender", "--snapshot", str(tmp_path / "c.json"), "--port", str(extender)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{extender}" in result.stderr
    assert "Traceback" not in result.stderr


def test_waiting_for_a_process_that_exits_says_why() -> None:
    # No --snapshot and no --kubeconfig: the command refuses at once with exit code 2, and the
    # wait reports that code and the one-line error instead of waiting out its timeout.
    port = free_port()
    proc = subprocess.Popen(
        command("extender", "--port", str(port)), stderr=subprocess.PIPE, cwd=ROOT
    )
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"exited with 2: .*--snapshot or --kubeconfig"):
        wait_ready(port, proc, timeout=60)
    assert time.monotonic() - started < 30
