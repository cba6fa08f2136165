"""The command line: bad files and flags give one line naming the file and field, explain works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from epcsched.cli import main
from tests.helpers import LEGACY, cluster, node, pod

ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


@pytest.fixture
def snapshot_file(tmp_path: Path) -> Path:
    return write(
        tmp_path / "cluster.json",
        cluster(
            node("big", "16Gi"),
            node("small", "94Mi"),
            node("legacy", "168", resource=LEGACY),
            pod("x", "72Mi", node_name="small"),
        ),
    )


def test_explain_prints_a_row_per_node(
    tmp_path: Path, snapshot_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pod_file = write(tmp_path / "pod.json", pod("p", "64Mi"))
    assert main(["explain", "--snapshot", str(snapshot_file), str(pod_file)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "yes" in rows["big"] and "10" in rows["big"]
    assert "insufficient sgx.intel.com/epc: requested 64Mi, free 22Mi of 94Mi" in rows["small"]
    assert "does not advertise sgx.intel.com/epc" in rows["legacy"]
    assert "1 of 3 nodes fit" in out


def test_explain_names_the_kube_scheduler_rule_that_refuses_a_node(
    tmp_path: Path, snapshot_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    selecting = pod("p", "1Mi")
    selecting["spec"]["nodeSelector"] = {"agentpool": "nowhere"}
    pod_file = write(tmp_path / "pod.json", selecting)
    assert main(["explain", "--snapshot", str(snapshot_file), str(pod_file)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "kube-scheduler: node(s) didn't match Pod's node affinity/selector" in rows["big"]
    assert "0 of 3 nodes fit" in out


def test_explain_accepts_yaml_pods(
    tmp_path: Path, snapshot_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pod_file = write(
        tmp_path / "pod.yaml",
        "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n"
        "    resources: {limits: {sgx.intel.com/epc: 20Mi}}\n",
    )
    assert main(["explain", "--snapshot", str(snapshot_file), str(pod_file)]) == 0
    assert "2 of 3 nodes fit" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps(cluster(node("a", "12x"))), "items[0] (Node a): status.allocatable"),
        (
            json.dumps(cluster(node("a", "1Gi"), pod("p", "1Gi", node_name="a") | {"spec": 5})),
            "items[1] (Pod)",
        ),
        (json.dumps({"kind": "List", "items": 3}), "items: must be a list"),
        ("- 1\n- 2\n", "items[0]: must be an object"),
        ('{"kind": "List", "items": [' + "[" * 100000 + "]}", "nested too deeply"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
)
def test_invalid_snapshot_names_file_and_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    expected: str,
) -> None:
    bad = write(tmp_path / "bad.json", content)
    pod_file = write(tmp_path / "pod.json", pod("p", "1Mi"))
    assert main(["explain", "--snapshot", str(bad), str(pod_file)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and expected in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("extender:\n  strategy: fastest\n", "extender.strategy: must be one of"),
        ("extender:\n  port: 99999\n", "extender.port"),
        ("epc:\n  headroom: 150%\n", "epc.headroom"),
        ("epc:\n  resources: {sgx.intel.com/epc: 1.5}\n", "epc.resources"),
        ("extender:\n  maxBodyBytes: lots\n", "extender.maxBodyBytes"),
        ("extender:\n  reservationTtl: soon\n", "extender.reservationTtl: invalid duration"),
        ("extendr: {}\n", "extendr: unknown key"),
        (
            "autoscaler:\n  nodePools:\n  - {name: a, minSize: 3, maxSize: 1}\n",
            "autoscaler.nodePools[0].maxSize: must be >= minSize",
        ),
        ("[1, 2]\n", "must be a map"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_invalid_config_names_file_and_key(
    tmp_path: Path,
    snapshot_file: Path,
    capsys: pytest.CaptureFixture[str],
    config: str,
    expected: str,
) -> None:
    config_file = write(tmp_path / "config.yaml", config)
    pod_file = write(tmp_path / "pod.json", pod("p", "1Mi"))
    code = main(
        ["explain", "--snapshot", str(snapshot_file), "--config", str(config_file), str(pod_file)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert str(config_file) in err and expected in err
    assert "Traceback" not in err


def test_missing_files_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"
    assert main(["explain", "--snapshot", str(missing), str(missing)]) == 2
    assert f"{missing}: cannot read" in capsys.readouterr().err


def test_extender_command_rejects_bad_snapshot_in_a_real_process(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "bad.yaml",
        "kind: Node\nmetadata: {name: a}\nstatus:\n  allocatable: {sgx.intel.com/epc: 1Q}\n",
    )
    result = subprocess.run(
        [sys.executable, "-m", "epcsched", "extender", "--snapshot", str(bad), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert str(bad) in result.stderr and "invalid quantity '1Q'" in result.stderr
    assert "Traceback" not in result.stderr


def test_core_imports_no_io_libraries() -> None:
    code = (
        "import importlib, pkgutil, sys, epcsched.core\n"
        "for m in pkgutil.iter_modules(epcsched.core.__path__):\n"
        "    importlib.import_module('epcsched.core.' + m.name)\n"
        "bad = [m for m in ('aiohttp', 'kubernetes_asyncio', 'prometheus_client', "
        "'prometheus_api_client', 'asyncio', 'urllib3', 'requests') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    assert result.stdout.strip() == ""
