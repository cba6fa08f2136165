"""The HPA in the simulator: a Deployment whose replicas share a load curve of EPC, scaled by a
fixed count, a CPU HPA or an HPA on `sgx_epc_usage_ratio`, with the node-pool autoscaler.

Protects issue 8 point 6: the HPA controller's replica rule as kube-controller-manager computes
it (tolerance, its float64 boundaries, pending and sample-less pods, scale-down stabilization,
the default scale-up limit, min/max), the load curve's exact integrals, the paging-free minimum,
a tiny Deployment whose replica counts, enclave-seconds over the limit, waits and node-hours are
worked out by hand, one-line errors for bad deployment keys, and the committed `hpa-epc`
scenario, in which the EPC HPA pages less than the fixed count and the CPU HPA.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from epcsched.cli import main
from epcsched.config import ConfigError
from epcsched.metricsapi.hpa import (
    Behavior,
    NoMetrics,
    replicas_for_pods_metric,
    replicas_for_utilization,
)
from epcsched.simulation.deployment import LoadCurve, paging_free_minimum
from epcsched.simulation.engine import RunResult, simulate
from epcsched.simulation.scenario import Scenario, load_scenario, parse_scenario
from epcsched.simulation.workload import load_workload
from tests.simulation_helpers import pool

ROOT = Path(__file__).resolve().parents[1]
HPA_EPC = ROOT / "simulations" / "hpa-epc" / "scenario.yaml"


# ----- the replica rule -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # 950/800 = 1.1875, ceil(3 * 1.1875) = ceil(3.5625) = 4
        ([950, 950, 950], 4),
        # 500/800 = 0.625, ceil(3 * 0.625) = ceil(1.875) = 2
        ([500, 500, 500], 2),
        # 870/800 = 1.0875: within 10 %, keep 3
        ([870, 870, 870], 3),
        # 880/800 = 1.1, in float64 |1 - 1.1| = 0.10000000000000009 > 0.1: ceil(3.3...) = 4
        ([880, 880, 880], 4),
        # 720/800 = 0.9, in float64 |1 - 0.9| = 0.09999999999999998 <= 0.1: keep 3
        ([720, 720, 720], 3),
        # the average is truncated to an integer: 2401 // 3 = 800, exactly the target
        ([800, 800, 801], 3),
        # (1000 + 1300 + 1700) // 3 = 1333: 1.66625, ceil(3 * 1.66625) = ceil(4.99875) = 5
        ([1000, 1300, 1700], 5),
    ],
)
def test_pods_metric_rule(values: list[int], expected: int) -> None:
    assert replicas_for_pods_metric(3, values, 800) == expected


def test_pending_pods_count_as_idle_on_a_scale_up() -> None:
    # 2 ready at 2000m, 1 pending: ratio 2.5; with the pending pod at 0: 4000 // 3 = 1333,
    # 1.66625, ceil(3 * 1.66625) = 5 (the ready pods alone would say ceil(2 * 2.5) = 5 too).
    assert replicas_for_pods_metric(3, [2000, 2000], 800, unready=1) == 5
    # 2 ready at 1200m, 2 pending: ratio 1.5 but 2400 // 4 = 600 is 0.75, the other direction:
    # keep 4.
    assert replicas_for_pods_metric(4, [1200, 1200], 800, unready=2) == 4
    # On a scale-down pending pods are left out: 400/800 = 0.5, ceil(2 * 0.5) = 1.
    assert replicas_for_pods_metric(4, [400, 400], 800, unready=2) == 1


def test_pods_without_a_sample_sit_at_the_target_on_a_scale_down() -> None:
    # 2 ready at 400m, 1 without a sample counted at 800m: 1600 // 3 = 533, 0.66625,
    # ceil(3 * 0.66625) = ceil(1.99875) = 2 (the sampled pods alone would say 1).
    assert replicas_for_pods_metric(3, [400, 400], 800, missing=1) == 2


def test_no_ready_pod_is_no_metrics() -> None:
    with pytest.raises(NoMetrics):
        replicas_for_pods_metric(2, [], 800, unready=2)


def test_utilization_rule_in_whole_percent() -> None:
    # (450 + 450) * 100 // 1000 = 90 %, 90/70 = 1.2857, ceil(2 * 1.2857) = 3
    assert replicas_for_utilization(2, [450, 450], [500, 500], 70) == 3
    # 337 * 100 // 500 = 67 %, 67/70 = 0.957: within 10 %, keep 2
    assert replicas_for_utilization(2, [337, 337], [500, 500], 70) == 2
    # 2 ready at 600m of 500m (120 %) and one pending of 500m: 1200 * 100 // 1500 = 80 %,
    # 80/70 = 1.142857, ceil(3 * 1.142857) = ceil(3.43) = 4
    assert replicas_for_utilization(3, [600, 600], [500, 500], 70, unready_requests=[500]) == 4


def test_behavior_limits_a_scale_up_to_double_or_four_more_and_to_max() -> None:
    behavior = Behavior(min_replicas=2, max_replicas=25)
    assert behavior.next_replicas(2, 10, 0.0)[0] == 6  # max(2 * 2, 2 + 4)
    assert behavior.next_replicas(10, 30, 0.0)[0] == 20  # max(2 * 10, 10 + 4)
    assert behavior.next_replicas(20, 30, 0.0)[0] == 25  # maxReplicas
    assert behavior.next_replicas(3, 1, 0.0)[0] == 2  # minReplicas


def test_scale_down_waits_for_the_highest_recommendation_to_leave_the_window() -> None:
    behavior = Behavior(min_replicas=1, max_replicas=10, scale_down_window=300.0)
    count, history = behavior.next_replicas(6, 6, 0.0)
    assert count == 6
    # At 100 s and 299 s the rule says 3, but 6 (at 0 s) is still within 300 s.
    count, history = behavior.next_replicas(count, 3, 100.0, history)
    assert count == 6
    count, history = behavior.next_replicas(count, 3, 299.0, history)
    assert count == 6
    # At 301 s the recommendation of 0 s has left the window: 3.
    count, history = behavior.next_replicas(count, 3, 301.0, history)
    assert count == 3
    assert history == ((100.0, 3), (299.0, 3), (301.0, 3))
    # A scale-up is not stabilized (window 0): 3 -> 5 at once.
    assert behavior.next_replicas(3, 5, 302.0, history)[0] == 5


# ----- the load curve ---------------------------------------------------------------------
CURVE = LoadCurve(((0.0, 0.0), (100.0, 100.0), (200.0, 100.0), (300.0, 0.0)))


def test_load_curve_values_and_time_above() -> None:
    assert [CURVE.at(t) for t in (-5.0, 50.0, 150.0, 250.0, 400.0)] == [0, 50, 100, 50, 0]
    # Above 60 from 60 s (rising) to 240 s (falling): 180 s.
    assert CURVE.seconds_above(0.0, 300.0, 60.0) == pytest.approx(180.0)
    # Within [150, 260]: above 60 until 240 s: 90 s.
    assert CURVE.seconds_above(150.0, 260.0, 60.0) == pytest.approx(90.0)
    # Never strictly above its own maximum.
    assert CURVE.seconds_above(0.0, 300.0, 100.0) == 0.0
    assert CURVE.peak(0.0, 50.0) == 50.0 and CURVE.peak(120.0, 400.0) == 100.0


def test_integral_of_steps_is_exact() -> None:
    # max(1, ceil(L / 40)): rising 0..100 over 100 s, u = L/40 goes 0 -> 2.5: 40 s at 1,
    # 40 s at 2, 20 s at 3 = 40 + 80 + 60 = 180; flat at 100 for 100 s: 300; falling back:
    # 180. Total 660.
    assert CURVE.integral_of_steps(0.0, 300.0, 40.0) == pytest.approx(660.0)


def test_paging_free_minimum_of_the_committed_scenario() -> None:
    """Load 2 GiB, up to 24 GiB from 30 min to 1 h, held to 2 h, down to 6 GiB at 2 h 30 and
    2 GiB at 3 h 30, to 4 h; replicas hold 1.5 GiB of load each, 8 replicas per DC4s_v3 node,
    so a node per 12 GiB: 1800 s at 1 node; the ramp (u = L/12 from 1/6 to 2) gives
    1800 * (3 - 1/6) / (2 - 1/6) = 2781.8 s; 3600 s at 2; the fall from 2 to 0.5 gives
    1800 * (3 - 0.5) / 1.5 = 3000 s; 3600 s and 1800 s at 1. 20181.8 s = 5.606 node-hours;
    24 GiB / 1.5 GiB = 16 replicas, 2 nodes at the peak."""
    scenario = load_scenario(HPA_EPC)
    spec = scenario.deployment
    assert spec is not None
    floor = paging_free_minimum(spec, scenario.horizon, [("dc4", 8)])
    assert (floor.peak_replicas, floor.peak_nodes) == (16, 2)
    assert floor.node_hours == pytest.approx(20181.818 / 3600, abs=1e-5)


# ----- a tiny Deployment, by hand ---------------------------------------------------------
def deployment(**extra: Any) -> dict[str, Any]:
    """Replicas of 1 GiB EPC (none held idle), 500m CPU using 100m + 100m per GiB of load;
    the load is 1 GiB until 50 s and 4 GiB after."""
    return {
        "name": "kv",
        "epcLimitMiB": 1024,
        "epcBaseMiB": 0,
        "cpuM": 500,
        "cpuBaseM": 100,
        "cpuPerGiBM": 100,
        "memoryMiB": 256,
        "load": [[0, 1024], [50, 1024], [50, 4096]],
        "scalers": [
            {"name": "fixed-2", "replicas": 2},
            {"name": "cpu", "metric": "cpu", "averageUtilization": 70, "minReplicas": 2},
            {
                "name": "epc",
                "metric": "sgx_epc_usage_ratio",
                "averageValue": "800m",
                "minReplicas": 2,
            },
        ],
        **extra,
    }


def scenario_of(
    *, epc: str = "8Gi", size: int = 2, autoscaler: dict[str, Any] | None = None
) -> Scenario:
    data = {
        "name": "tiny-hpa",
        "horizon": "300s",
        "nodePools": [pool("p", epc=epc, size=size, min_size=1, max_size=4, cost=3.6)],
        "workload": {"deployment": deployment()},
        "autoscaler": autoscaler or {"enabled": False},
    }
    return parse_scenario(data, base=Path("."))


def run(scenario: Scenario, scaler: str) -> RunResult:
    return simulate(scenario, load_workload(scenario.workload, scenario.seed), scaler)


def test_fixed_count_pages_from_the_load_step_on() -> None:
    """2 replicas: 512 MiB each until 50 s, then 2 GiB each, twice the limit, for 250 s:
    2 * 250 = 500 enclave-seconds over the limit, half of 2 * 300 replica-seconds."""
    m = run(scenario_of(), "fixed-2").metrics
    assert m["enclaveSecondsOverLimit"] == 500.0
    assert m["overLimitShare"] == pytest.approx(500 / 600, abs=1e-4)
    assert m["peakUsageRatio"] == 2.0
    assert (m["peakReplicas"], m["meanReplicas"], m["replicaPodsCreated"]) == (2, 2.0, 2)
    assert m["nodeHours"] == pytest.approx(2 * 300 / 3600, abs=1e-4)


def test_cpu_hpa_does_not_see_the_epc_load() -> None:
    """CPU: 100m + 100m * 2 GiB = 300m of 500m after the step, 60 % of the request against a
    70 % target: 60/70 = 0.857, ceil(2 * 0.857) = 2, so it never grows and pages as much as the
    fixed count."""
    m = run(scenario_of(), "cpu").metrics
    assert m["peakReplicas"] == 2
    assert m["enclaveSecondsOverLimit"] == 500.0


def test_epc_hpa_grows_at_the_first_sync_after_the_step() -> None:
    """Syncs every 15 s. At 15, 30, 45 s each replica holds 512 MiB = 500m: 0.625, ceil(1.25) =
    2. At 60 s each holds 2 GiB = 2000m: 2.5, ceil(2 * 2.5) = 5 (the scale-up limit allows
    max(4, 6)); the 3 new pods fit at once. Then 4 GiB / 5 = 819.2 MiB = 800m: within
    tolerance. Over the limit: 2 replicas from 50 to 60 s = 20 enclave-seconds; mean replicas
    (2 * 60 + 5 * 240) / 300 = 4.4."""
    m = run(scenario_of(), "epc").metrics
    assert (m["peakReplicas"], m["replicaPodsCreated"]) == (5, 5)
    assert m["meanReplicas"] == pytest.approx(4.4)
    assert m["enclaveSecondsOverLimit"] == pytest.approx(20.0)
    assert m["peakUsageRatio"] == 2.0
    assert m["podsWaited"] == 0


def test_epc_hpa_with_the_node_autoscaler() -> None:
    """One node of 4 GiB EPC holds 4 replicas. At 60 s the HPA asks for 5: 2 more start, one
    waits. At 75 s: 4 ready at 1000m and one pending: 1.25, but with the pending one at 0,
    4000 // 5 = 800: keep 5. The autoscaler (ticks every 30 s, after the HPA's events of the same
    moment only at its next tick) sees the pending replica at 90 s, asks for a node, which is
    Ready 60 s later, at 150 s: the replica waited 90 s. 4 GiB / 4 = 1 GiB is exactly the
    limit, not over it, so only the 20 enclave-seconds of 50-60 s page. Node-hours: 300 s +
    (300 - 90) s = 510 s."""
    autoscaler = {
        "interval": "30s",
        "provisionDelay": "60s",
        "targetUtilization": 1.0,
        "scaleDownUnneededTime": "10m",
    }
    m = run(scenario_of(epc="4Gi", size=1, autoscaler=autoscaler), "epc").metrics
    assert (m["peakReplicas"], m["podsWaited"], m["waitMaxS"]) == (5, 1, 90.0)
    assert m["enclaveSecondsOverLimit"] == pytest.approx(20.0)
    assert m["nodeHours"] == pytest.approx(510 / 3600, abs=1e-4)
    assert m["peakNodes"] == 2
    assert m["cost"] == pytest.approx(3.6 * 510 / 3600, abs=1e-4)


# ----- scenario errors --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"epcBaseMiB": 2048}, "workload.deployment.epcBaseMiB: must be below epcLimitMiB"),
        ({"load": [[60, 1], [30, 2]]}, "workload.deployment.load[1][0]: times must not go"),
        ({"load": [[0, "lots"]]}, "workload.deployment.load[0][1]: must be a number"),
        ({"scalers": []}, "workload.deployment.scalers: must be a non-empty list"),
        ({"scalers": [{"name": "x", "metric": "memory"}]}, "scalers[0].metric: must be one of"),
        (
            {"scalers": [{"name": "x", "metric": "cpu", "averageValue": "800m"}]},
            "scalers[0].averageUtilization: required for cpu",
        ),
        (
            {"scalers": [{"name": "x", "metric": "sgx_epc_usage_ratio", "averageValue": "lots"}]},
            "scalers[0].averageValue: invalid quantity 'lots'",
        ),
        (
            {"scalers": [{"name": "x", "replicas": 2}, {"name": "x", "replicas": 3}]},
            "scalers[1].name: duplicate scaler name 'x'",
        ),
        ({"speed": 3}, "workload.deployment.speed: unknown key"),
    ],
)
def test_bad_deployment_is_one_line_naming_the_key(change: dict[str, Any], where: str) -> None:
    data = {
        "name": "bad",
        "horizon": "1h",
        "nodePools": [pool()],
        "workload": {"deployment": {**deployment(), **change}},
    }
    with pytest.raises(ConfigError) as caught:
        parse_scenario(data, base=Path("."))
    message = str(caught.value)
    assert where in message and "\n" not in message


def test_a_deployment_scenario_names_one_placement_policy() -> None:
    data = {
        "name": "bad",
        "horizon": "1h",
        "nodePools": [pool()],
        "workload": {"deployment": deployment()},
        "policies": ["binpack", "spread"],
    }
    with pytest.raises(ConfigError, match=r"^policies: a deployment workload compares"):
        parse_scenario(data, base=Path("."))


# ----- the committed scenario -------------------------------------------------------------
def test_hpa_epc_scenario_runs_and_the_epc_hpa_pages_least(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", str(HPA_EPC), "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"scenario", "deployment", "policy", "runs", "pagingFreeMinimum"}
    runs = results["runs"]
    assert list(runs) == ["fixed-8", "fixed-16", "cpu-hpa", "epc-hpa"]
    over = {name: m["enclaveSecondsOverLimit"] for name, m in runs.items()}
    assert over["epc-hpa"] < over["fixed-8"] and over["epc-hpa"] < over["cpu-hpa"]
    assert over["fixed-16"] == 0  # 16 replicas hold the peak exactly at their limit
    # The EPC HPA follows the load: fewer node-hours than the count sized for the peak, and
    # never fewer than the paging-free minimum.
    floor = results["pagingFreeMinimum"]["nodeHours"]
    assert floor <= runs["epc-hpa"]["nodeHours"] < runs["fixed-16"]["nodeHours"]
    assert runs["epc-hpa"]["peakReplicas"] > runs["cpu-hpa"]["peakReplicas"]
    summary = (tmp_path / "summary.md").read_text()
    assert "| epc-hpa | HPA on sgx_epc_usage_ratio, averageValue 800m" in summary
    assert (tmp_path / "replicas.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "epc-hpa" in out and "paging-free minimum: 16 replicas on 2 nodes" in out
    # The scalers are what --policies selects in a deployment scenario.
    assert main(["simulate", str(HPA_EPC), "--out", str(tmp_path), "--policies", "epc-hpa"]) == 0
    assert list(json.loads((tmp_path / "results.json").read_text())["runs"]) == ["epc-hpa"]
    assert main(["simulate", str(HPA_EPC), "--out", str(tmp_path), "--policies", "binpack"]) == 2
    assert "has no scaler 'binpack'" in capsys.readouterr().err
