"""`epcsched extender --kubeconfig` serves from the API: a pod created or deleted there changes
/filter within one second, and /readyz is 503 until the first lists are in.

Protects issue 3 point 3. The extender runs as the real command in a subprocess; the fake API
server runs in the test and is reached over loopback through the kubeconfig it wrote.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from epcsched.kube.client import KubeConfigError, load_configuration
from epcsched.netutil import free_port
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND
from tests.kube_helpers import configuration, node, pod

ROOT = Path(__file__).resolve().parent.parent


def extender_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "epcsched", "extender", *args]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[FakeApiServer, Path]]:
    async with FakeApiServer(bookmark_interval=0.2) as api:
        for name in ("sgx-1", "sgx-2"):
            api.store.load(BY_KIND["Node"], node(name, "64Mi"))
        api.store.load(BY_KIND["Node"], node("plain", None))
        yield api, api.write_kubeconfig(tmp_path / "kubeconfig")


async def _wait_ready(session: aiohttp.ClientSession, url: str, proc: Any) -> list[int]:
    codes: list[int] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"extender exited with {proc.returncode}")
        try:
            async with session.get(f"{url}/readyz") as resp:
                codes.append(resp.status)
                if resp.status == 200:
                    return codes
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"extender never became ready: {codes}")


def filter_body(epc: str) -> dict[str, Any]:
    return {
        "Pod": pod("incoming", epc),
        "Nodes": None,
        "NodeNames": ["sgx-1", "sgx-2", "plain"],
    }


async def _filter(session: aiohttp.ClientSession, url: str, epc: str) -> dict[str, Any]:
    async with session.post(f"{url}/filter", json=filter_body(epc)) as resp:
        assert resp.status == 200
        reply: dict[str, Any] = await resp.json()
        return reply


async def _until(
    session: aiohttp.ClientSession, url: str, predicate: Any, *, within: float
) -> float:
    started = time.monotonic()
    while True:
        reply = await _filter(session, url, "48Mi")
        if predicate(reply):
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"filter did not change within {within}s: {reply}")
        await asyncio.sleep(0.01)


@pytest.mark.timeout(60)
async def test_filter_follows_the_api_within_a_second(
    cluster: tuple[FakeApiServer, Path], tmp_path: Path
) -> None:
    api, kubeconfig = cluster
    port = free_port()
    # Hold the first lists back so the extender is seen unready before it is ready.
    api.faults.delay_next(1.0, count=2)
    proc = subprocess.Popen(
        extender_command("--kubeconfig", str(kubeconfig), "--port", str(port)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "KUBERNETES_SERVICE_HOST": ""},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            codes = await _wait_ready(session, url, proc)
            assert 503 in codes, codes
            async with session.get(f"{url}/readyz") as resp:
                detail = await resp.json()
            assert detail["state"]["source"] == "kubernetes"
            assert detail["state"]["nodes"] == 3

            before = await _filter(session, url, "48Mi")
            assert before["NodeNames"] == ["sgx-1", "sgx-2"]
            assert "plain" in before["FailedAndUnresolvableNodes"]

            async with client.ApiClient(await configuration(api, tmp_path)) as k8s:
                core = client.CoreV1Api(k8s)
                await core.create_namespaced_pod(
                    "default", pod("enclave-a", "32Mi", node_name="sgx-1")
                )
                took_create = await _until(
                    session, url, lambda r: "sgx-1" in r["FailedNodes"], within=1.0
                )
                reply = await _filter(session, url, "48Mi")
                assert reply["NodeNames"] == ["sgx-2"]
                assert "insufficient sgx.intel.com/epc" in reply["FailedNodes"]["sgx-1"]

                await core.delete_namespaced_pod("enclave-a", "default")
                took_delete = await _until(
                    session, url, lambda r: r["NodeNames"] == ["sgx-1", "sgx-2"], within=1.0
                )
            print(
                f"filter changed {took_create * 1000:.0f} ms after create, "
                f"{took_delete * 1000:.0f} ms after delete"
            )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kubeconfig", "/nonexistent/kubeconfig"], "no such kubeconfig file"),
        (["--kubeconfig", "KC"], "not a usable kubeconfig"),
        (["--kubeconfig", "KC", "--snapshot", "examples/cluster.json"], "one source"),
        (["--snapshot", "examples/cluster.json", "--bind"], "binding needs an API server"),
        ([], "--snapshot or --kubeconfig"),
    ],
)
def test_cluster_flags_fail_with_one_clear_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("not: [a kubeconfig")
    argv = [str(kubeconfig) if a == "KC" else a for a in args]
    result = subprocess.run(
        extender_command(*argv, "--port", "0"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "KUBERNETES_SERVICE_HOST": ""},
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


async def test_in_cluster_configuration_uses_the_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    (tmp_path / "token").write_text("service-account-token")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    conf = await load_configuration(service_account=tmp_path)
    assert conf.host == "https://10.96.0.1:443"
    assert conf.api_key["BearerToken"] == "Bearer service-account-token"
    assert conf.ssl_ca_cert == str(tmp_path / "ca.crt")
    (tmp_path / "token").unlink()
    with pytest.raises(KubeConfigError, match="in-cluster configuration"):
        await load_configuration(service_account=tmp_path)


def test_extender_in_a_pod_without_flags_uses_the_service_account(tmp_path: Path) -> None:
    # No --snapshot and no --kubeconfig inside a pod: the extender goes in-cluster. Here the
    # service account is missing, which must be one clear error, not a traceback.
    env = {**os.environ, "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    result = subprocess.run(
        extender_command("--port", "0"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert "in-cluster configuration" in result.stderr
    assert "Traceback" not in result.stderr
