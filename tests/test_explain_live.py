"""A live cluster without files (issue 9 point 8).

`epcsched explain --kubeconfig FILE [--context C] NAMESPACE/POD` explains a pod read from the
API server over the cluster the informers list (the fake API server, on its own loop in a
thread, reached over loopback); a pod already bound is explained without its own EPC counted;
`explain --snapshot FILE -` reads the pod from standard input, as `kubectl get pod x -o yaml |`
gives it. `--kube-api-qps`/`--kube-api-burst` are a token bucket shared by every client built
from the configuration, as client-go's are: checked with a hand-worked clock and against the
server.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client

from epcsched.cli import main
from epcsched.kube.client import RateLimiter, api_client, load_configuration
from epcsched.testing.apiserver import FakeApiServer
from tests.helpers import cluster, node, pod

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("explain-live")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = FakeApiServer()
    pending = pod("enclave", "64Mi", phase="Pending", namespace="team-a")
    typo = pod("typo", "64Mi", resource="sgx.intel.com/ecp", phase="Pending")
    server.store.load_many(
        [
            node("big", "16Gi"),
            node("small", "94Mi"),
            pod("x", "72Mi", node_name="small"),
            pending,
            typo,
        ]
    )
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    path = server.write_kubeconfig(tmp / "kubeconfig")
    # A second context that names a server nobody listens on.
    document = yaml.safe_load(path.read_text())
    document["clusters"].append({"name": "gone", "cluster": {"server": "http://127.0.0.1:9"}})
    document["contexts"].append(
        {
            "name": "gone",
            "context": {"cluster": "gone", "user": document["users"][0]["name"]},
        }
    )
    path.write_text(yaml.safe_dump(document))
    try:
        yield path
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def rows(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines()[1:] if line[:1].isalnum()}


def test_explains_a_pending_pod_in_the_cluster(
    kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", "--kubeconfig", str(kubeconfig), "team-a/enclave"]) == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert "yes" in table["big"]
    assert "insufficient sgx.intel.com/epc: requested 64Mi, free 22Mi of 94Mi" in table["small"]
    assert "1 of 2 nodes fit" in out and "already bound" not in out


def test_a_bound_pod_does_not_count_against_itself(
    kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", "--kubeconfig", str(kubeconfig), "default/x"]) == 0
    out = capsys.readouterr().out
    # Without x's own 72Mi, small has all 94Mi free and fits it again.
    assert "94Mi free of 94Mi" in rows(out)["small"]
    assert "2 of 2 nodes fit" in out
    assert "note: the pod is already bound to small" in out


def test_a_pod_name_alone_is_in_the_default_namespace(
    kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", "--kubeconfig", str(kubeconfig), "typo"]) == 0
    out = capsys.readouterr().out
    assert "did you mean sgx.intel.com/epc?" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["team-a/nobody"], "POD: no pod team-a/nobody in the cluster"),
        (["--context", "missing", "team-a/enclave"], "--kubeconfig:"),
        (["--context", "gone", "team-a/enclave"], "cannot reach the API server at"),
    ],
)
def test_mistakes_are_one_line(
    kubeconfig: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    assert main(["explain", "--kubeconfig", str(kubeconfig), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert expected in captured.err


def test_reads_the_pod_from_standard_input(tmp_path: Path) -> None:
    snapshot = tmp_path / "cluster.json"
    snapshot.write_text(
        json.dumps(
            cluster(node("big", "16Gi"), node("small", "94Mi"), pod("x", "72Mi", node_name="small"))
        )
    )
    piped = yaml.safe_dump(pod("enclave", "64Mi", phase="Pending"))
    result = subprocess.run(
        [sys.executable, "-m", "epcsched", "explain", "--snapshot", str(snapshot), "-"],
        input=piped,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "1 of 2 nodes fit" in result.stdout
    assert "free 22Mi of 94Mi" in rows(result.stdout)["small"]
    two = piped + "---\n" + piped
    result = subprocess.run(
        [sys.executable, "-m", "epcsched", "explain", "--snapshot", str(snapshot), "-"],
        input=two,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "epcsched explain: error: <stdin>: expected one Pod, found 2 documents\n"
    )


def test_token_bucket_by_hand() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
    # Three at once from the burst, then one every half second.
    assert [limiter.delay() for _ in range(5)] == [0.0, 0.0, 0.0, 0.5, 1.0]
    now[0] = 10.0  # long idle: the bucket refills to the burst, not beyond
    assert [limiter.delay() for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
    assert limiter.waited == 2.0


async def test_clients_share_the_rate_limit(kubeconfig: Path) -> None:
    configuration = await load_configuration(kubeconfig, qps=10, burst=1)
    started = time.monotonic()
    async with api_client(configuration) as first, api_client(configuration) as second:
        for api in (first, second, first, second):
            await client.CoreV1Api(api).list_node(_request_timeout=10)
    elapsed = time.monotonic() - started
    # One token at once, then ten a second: the 2nd, 3rd and 4th wait about 0.1 s each.
    limiter = configuration.rate_limiter
    assert limiter is not None
    assert 0.25 <= limiter.waited <= 0.31
    assert elapsed >= 0.25
    unlimited = await load_configuration(kubeconfig)
    assert getattr(unlimited, "rate_limiter", None) is None
