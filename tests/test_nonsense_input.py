"""Nonsense input is refused or flagged, never silently accepted (issue 9 point 4).

A snapshot with no Node (a pod file given to `--snapshot`) is an error naming the file for the
extender and for `explain`. A pod asking for a name that looks like EPC but is not configured
(`sgx.intel.com/ecp`) is flagged with the nearest configured name in `explain` and, once per
pending pod, in the extender's log (from the informer, against the fake API server); Intel's
`sgx.intel.com/enclave` device resource is not flagged. `explain` shows the headroom it
subtracted, node by node and as configured.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from epcsched.cli import main
from epcsched.config import Config
from epcsched.kube.informer import InformerSettings, InformerState
from epcsched.lookalike import lookalikes
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND
from tests.helpers import cluster, node, pod
from tests.kube_helpers import configuration
from tests.kube_helpers import node as api_node
from tests.kube_helpers import pod as api_pod


def write(path: Path, data: object) -> str:
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def snapshot(tmp_path: Path) -> str:
    return write(
        tmp_path / "cluster.json",
        cluster(node("big", "16Gi"), node("small", "94Mi"), pod("x", "72Mi", node_name="small")),
    )


def test_extender_refuses_a_snapshot_without_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pods = write(tmp_path / "pods.json", cluster(pod("p", "64Mi")))
    assert main(["extender", "--snapshot", pods, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--snapshot: no Node in {pods}" in err


def test_nodes_and_pods_in_separate_files_are_one_snapshot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = write(tmp_path / "nodes.json", cluster(node("big", "16Gi")))
    pod_file = write(tmp_path / "pod.json", pod("p", "64Mi"))
    assert main(["explain", pod_file, "--snapshot", nodes, "--snapshot", nodes]) == 0
    assert "1 of 1 nodes fit" in capsys.readouterr().out


@pytest.mark.parametrize("content", [cluster(pod("p", "64Mi")), cluster()])
def test_explain_of_a_snapshot_without_nodes_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object
) -> None:
    empty = write(tmp_path / "empty.json", content)
    pod_file = write(tmp_path / "pod.json", pod("p", "64Mi"))
    assert main(["explain", pod_file, "--snapshot", empty]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"no Node in {empty}" in captured.err


def test_explain_flags_a_name_that_looks_like_epc(
    tmp_path: Path, snapshot: str, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = write(tmp_path / "typo.json", pod("p", "64Mi", resource="sgx.intel.com/ecp"))
    assert main(["explain", typo, "--snapshot", snapshot]) == 0
    out = capsys.readouterr().out
    # Read as a pod that asks for no EPC: both nodes pass, which is why it must be flagged.
    assert "2 of 2 nodes fit" in out
    assert (
        "warning: the pod requests sgx.intel.com/ecp, which looks like EPC but is not a "
        "configured EPC resource (epc.resources): did you mean sgx.intel.com/epc?"
    ) in out


def test_explain_does_not_flag_configured_names_or_the_enclave_device(
    tmp_path: Path, snapshot: str, capsys: pytest.CaptureFixture[str]
) -> None:
    enclave = pod("p", "64Mi")
    enclave["spec"]["containers"][0]["resources"]["limits"]["sgx.intel.com/enclave"] = "1"
    path = write(tmp_path / "pod.json", enclave)
    assert main(["explain", path, "--snapshot", snapshot]) == 0
    assert "warning" not in capsys.readouterr().out


def test_lookalikes_with_and_without_a_near_name() -> None:
    configured = ["sgx.intel.com/epc", "kubernetes.azure.com/sgx_epc_mem_in_MiB"]
    requested = ["cpu", "SGX.intel.com/EPC", "example.com/epc-pages", "sgx.intel.com/provision"]
    assert lookalikes(requested, configured) == [
        ("SGX.intel.com/EPC", "sgx.intel.com/epc"),
        ("example.com/epc-pages", None),
    ]


def test_explain_shows_the_headroom_it_subtracted(
    tmp_path: Path, snapshot: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("epc:\n  headroom: 10%\n")
    pod_file = write(tmp_path / "pod.json", pod("p", "8Mi"))
    assert main(["explain", pod_file, "--snapshot", snapshot, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:3]}
    # small: 94Mi less 72Mi requested less ceil(9.4Mi) headroom = 12.6Mi;
    # big: 16Gi less ceil(1.6Gi) = 14.4Gi.
    assert "12.6Mi free of 94Mi sgx.intel.com/epc after 9.4Mi headroom" in rows["small"]
    assert "14.4Gi free of 16Gi sgx.intel.com/epc after 1.6Gi headroom" in rows["big"]
    assert "Headroom kept free and subtracted above: 10% of each node's EPC (epc.headroom)." in out


def test_explain_says_when_no_headroom_is_kept(
    tmp_path: Path, snapshot: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pod_file = write(tmp_path / "pod.json", pod("p", "8Mi"))
    assert main(["explain", pod_file, "--snapshot", snapshot]) == 0
    out = capsys.readouterr().out
    assert "22Mi free of 94Mi sgx.intel.com/epc" in out and "after" not in out
    assert "No EPC headroom kept (epc.headroom: 0)." in out


async def test_extender_log_warns_once_per_pending_pod_with_a_lookalike_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="epcsched.kube.informer")
    async with FakeApiServer(bookmark_interval=0.05) as api:
        api.store.load(BY_KIND["Node"], api_node("n1", "1Gi"))
        typo = api_pod("typo", "64Mi", resource="sgx.intel.com/ecp", namespace="team-a")
        api.store.load(BY_KIND["Pod"], typo)
        api.store.load(BY_KIND["Pod"], api_pod("fine", "64Mi"))
        settings = InformerSettings(backoff_initial=0.01, backoff_max=0.05)
        state = InformerState(await configuration(api, tmp_path), Config(), settings=settings)
        await state.start()
        try:
            await state.wait_synced(timeout=5)
            # A change to the same pod (its labels) must not repeat the warning.
            api.store.patch(
                BY_KIND["Pod"],
                "team-a",
                "typo",
                "application/merge-patch+json",
                {"metadata": {"labels": {"changed": "yes"}}},
            )
            # Until the pods informer has seen the server's newest version (the update).
            assert state.pods is not None
            for _ in range(250):
                if state.pods.status.resource_version == str(api.store.rv):
                    break
                await asyncio.sleep(0.02)
            assert state.pods.status.resource_version == str(api.store.rv)
        finally:
            await state.stop()
    warnings = [r for r in caplog.records if r.name == "epcsched.kube.informer"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert message.startswith("pod team-a/typo (uid ")
    assert "requests sgx.intel.com/ecp" in message
    assert "did you mean sgx.intel.com/epc?" in message
    assert warnings[0].resource == "sgx.intel.com/ecp"  # type: ignore[attr-defined]
