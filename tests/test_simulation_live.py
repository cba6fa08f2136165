"""`--via-http`: every placement of a bundled scenario, asked of the real extender app over HTTP
the way kube-scheduler asks (its own fit first, then /filter, then /prioritize when more than one
node passes), comes back the same as the simulator's in-process decision, also while an
autoscaler adds and removes nodes; an extender configured differently is caught; a bad URL is a
one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from epcsched.cli import main
from epcsched.model import PodInfo
from epcsched.simulation.engine import simulate
from epcsched.simulation.live import check_policy, check_via_http, pod_json
from epcsched.simulation.scenario import load_scenario
from epcsched.simulation.workload import load_workload
from tests.simulation_helpers import EPC, GIB, pool, synthetic, trace_scenario

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "simulations" / "tiny" / "scenario.yaml"
LOOPBACK = "http://127.0.0.1:0"

pytestmark = pytest.mark.timeout(90)


def test_the_bundled_tiny_scenario_decides_the_same_over_http() -> None:
    scenario = load_scenario(TINY)
    workload = load_workload(scenario.workload, scenario.seed)
    report = check_via_http(scenario, workload, scenario.policies, LOOPBACK)
    assert [c.policy for c in report.checks] == ["binpack", "spread", "balanced"]
    assert report.skipped == ["kube-default", "epc-unaware"]
    for check in report.checks:
        assert check.decisions >= len(workload)
        assert check.http_calls >= check.decisions
        assert check.mismatches == []
    assert report.ok


def test_decisions_stay_equal_while_nodes_come_and_go() -> None:
    scenario, workload = synthetic(
        seed=4,
        count=120,
        rate=8,
        pools=[pool(size=1, max_size=6)],
        autoscaler={
            "interval": "30s",
            "provisionDelay": "1m",
            "scaleDownUnneededTime": "2m",
            "scaleDownDelayAfterAdd": "1m",
        },
    )
    # The same run in-process: the autoscaler grows the pool and later shrinks it.
    run = simulate(scenario, workload, "binpack")
    assert (
        run.metrics["peakNodes"] > 2
        and min(run.nodes[len(run.nodes) // 2 :]) < run.metrics["peakNodes"]
    )
    check = check_policy(scenario, workload, "binpack", LOOPBACK + "/prefix")
    assert check.decisions >= len(workload)
    assert check.mismatches == []


def test_a_differently_configured_extender_is_caught() -> None:
    scenario = load_scenario(TINY)
    workload = load_workload(scenario.workload, scenario.seed)
    check = check_policy(scenario, workload, "binpack", LOOPBACK, strategy="spread")
    assert check.mismatches
    assert check.mismatches[0].in_process != check.mismatches[0].via_http


def test_the_command_reports_the_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["simulate", str(TINY), "--out", str(tmp_path), "--policies", "binpack,kube-default"]
    assert main([*argv, "--via-http", LOOPBACK]) == 0
    out = capsys.readouterr().out
    assert "binpack: 27 placements" in out and "all equal" in out
    assert "skipped: kube-default" in out
    assert main([*argv, "--via-http", "ftp://somewhere"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--via-http: expected http://HOST:PORT" in err


def test_pods_are_sent_in_the_resource_unit() -> None:
    pod = PodInfo("sim", "a", epc={EPC: 3 * 2**20}, cpu_milli=250, memory=2**28)
    legacy = "kubernetes.azure.com/sgx_epc_mem_in_MiB"
    body = pod_json(PodInfo("sim", "b", epc={legacy: 3 * 2**20 + 2**19}), {legacy: 2**20})
    sent = pod_json(pod, {EPC: 1})
    requests = json.loads(json.dumps(sent))["spec"]["containers"][0]["resources"]["requests"]
    assert requests == {EPC: "3145728", "cpu": "250m", "memory": str(2**28)}
    sent_legacy = json.loads(json.dumps(body))["spec"]["containers"][0]["resources"]["requests"]
    assert sent_legacy == {legacy: "3500m"}


def test_a_legacy_mib_resource_decides_the_same(tmp_path: Path) -> None:
    legacy = "kubernetes.azure.com/sgx_epc_mem_in_MiB"
    jobs = [(i * 20, 600, [1024, 3072, 6144][i % 3], 100, 256) for i in range(12)]
    scenario, workload = trace_scenario(
        tmp_path,
        jobs,
        pools=[{"name": "dc2", "sku": "Standard_DC2s_v3", "initialSize": 3, "maxSize": 3}],
        epcResource=legacy,
    )
    assert scenario.pools[0].template.epc_allocatable == {legacy: 8 * GIB}
    run = simulate(scenario, workload, "binpack")
    assert run.metrics["podsCompleted"] == 12 and run.metrics["waitMaxS"] > 0
    check = check_policy(scenario, workload, "binpack", LOOPBACK)
    assert check.decisions >= 12 and check.mismatches == []
