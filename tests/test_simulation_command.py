"""`epcsched simulate`: writes results.json with exactly the issue's keys, a summary a person
reads and real PNG plots; runs on processes (`--workers`) and on a Dask cluster (`--dask`) with
the same results as in-process; a bad scenario or trace is one line naming the file and the field,
exit code 2, no traceback; the SKU table is bundled in the package; the demo prints the table."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest

from epcsched.cli import main
from epcsched.simulation.demo import run_demo
from epcsched.simulation.scenario import load_scenario
from epcsched.simulation.sweep import DaskUnavailable, plan_tasks, run_tasks
from epcsched.simulation.workload import load_workload
from epcsched.skus import lookup, sku_table
from tests.simulation_helpers import MIB

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "simulations" / "tiny" / "scenario.yaml"
POLICY_KEYS = {
    "podsSubmitted",
    "podsCompleted",
    "podsNeverScheduled",
    "waitP50S",
    "waitP95S",
    "waitMaxS",
    "nodeHours",
    "cost",
    "peakNodes",
    "epcOvercommitPodSeconds",
    "meanEpcUtilization",
}


def test_simulate_writes_results_summary_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", str(TINY), "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"scenario", "seed", "policies", "lowerBound"}
    assert results["scenario"] == "tiny" and results["seed"] == 7
    bound = results["lowerBound"]
    assert set(bound) == {"peakNodes", "method", "nodeHours", "costPerHourAtPeak", "cost"}
    assert bound["method"] == "milp"
    # One pool of $0.192/h nodes: the bound in dollars is its bound in nodes at that price.
    assert bound["costPerHourAtPeak"] == pytest.approx(bound["peakNodes"] * 0.192, abs=1e-4)
    assert bound["cost"] == pytest.approx(bound["nodeHours"] * 0.192, abs=1e-4)
    policies = results["policies"]
    assert list(policies) == ["binpack", "spread", "balanced", "kube-default", "epc-unaware"]
    for metrics in policies.values():
        assert set(metrics) == POLICY_KEYS
    # The tiny scenario's point: binpack keeps nodes free for the 7 GiB enclaves.
    assert policies["binpack"]["waitMaxS"] == 0
    assert policies["spread"]["waitMaxS"] > 0
    assert policies["epc-unaware"]["epcOvercommitPodSeconds"] > 0
    summary = (tmp_path / "summary.md").read_text()
    assert "| policy | peak nodes | bound |" in summary
    assert f"| binpack | 4 | {results['lowerBound']['peakNodes']} | holds |" in summary
    for plot in ("pending.png", "waits.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({plot})" in summary
    # Every policy keeps the 4 nodes throughout (no autoscaling): a sentence, not a flat plot.
    assert not (tmp_path / "nodes.png").exists()
    assert (
        "Every policy kept 4 nodes throughout, so there is no plot of nodes over time." in summary
    )
    out, err = capsys.readouterr()
    assert "binpack" in out and "lower bound" in out
    # stderr is not a terminal here: no progress bar.
    assert "simulating" not in err


def test_policies_flag_selects_a_subset(tmp_path: Path) -> None:
    assert main(["simulate", str(TINY), "--out", str(tmp_path), "--policies", "binpack"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["policies"]) == ["binpack"]


def _sweep_scenario(tmp_path: Path) -> Path:
    shutil.copy(TINY.parent / "jobs.csv", tmp_path / "jobs.csv")
    text = TINY.read_text().replace(
        "policies: [binpack, spread, balanced, kube-default, epc-unaware]",
        "policies: [binpack, spread]\nsweep:\n  seeds: [7, 8]\n  initialSize: {dcsv3: [3, 4]}",
    )
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return path


def test_workers_and_dask_give_the_in_process_results(tmp_path: Path) -> None:
    scenario = load_scenario(_sweep_scenario(tmp_path))
    tasks = plan_tasks(scenario, scenario.policies)
    assert len(tasks) == 2 + 2 * 4
    here = run_tasks(tasks)
    pooled = run_tasks(tasks, workers=2)
    assert [(r.policy, r.variant, r.metrics) for r in pooled] == [
        (r.policy, r.variant, r.metrics) for r in here
    ]
    from distributed import LocalCluster

    with LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        on_dask = run_tasks(tasks, dask_address=cluster.scheduler_address)
        out = tmp_path / "dask-out"
        argv = ["simulate", str(tmp_path / "scenario.yaml"), "--out", str(out)]
        assert main([*argv, "--dask", cluster.scheduler_address]) == 0
    assert len(json.loads((out / "sweep.json").read_text())) == 8
    assert [(r.policy, r.variant, r.metrics) for r in on_dask] == [
        (r.policy, r.variant, r.metrics) for r in here
    ]
    # A smaller pool makes pods wait: the sweep points differ from each other.
    by_point = {(r.variant, r.policy): r.metrics["waitMaxS"] for r in here}
    assert by_point[("seed=7 dcsv3=3", "binpack")] > by_point[("seed=7 dcsv3=4", "binpack")]


def test_sweep_results_are_written_beside_the_base(tmp_path: Path) -> None:
    path = _sweep_scenario(tmp_path)
    assert main(["simulate", str(path), "--workers", "2"]) == 0
    out = tmp_path / "results"
    sweep = json.loads((out / "sweep.json").read_text())
    assert {(s["variant"], s["policy"]) for s in sweep} >= {("seed=8 dcsv3=3", "spread")}
    assert "## Sweep" in (out / "summary.md").read_text()


BAD_CASES = [
    (
        "nodePools:\n  - name: a\n    sku: Standard_DC4s_v3\n    minSize: 3\n    maxSize: 1\n",
        "nodePools[0].maxSize: must be >= minSize",
    ),
    ("nodePools:\n  - name: a\n    sku: Standard_DC99\n", "nodePools[0].sku: unknown SKU"),
    (
        "nodePools:\n  - name: a\n    sku: Standard_DC4s_v3\n    costPerHour: cheap\n",
        "nodePools[0].costPerHour: must be a number",
    ),
    ("horizon: soon\n", "horizon: invalid duration"),
    ("policies: [binpack, fastest]\n", "policies[1]: unknown policy 'fastest'"),
    ("policies: [cluster-autoscaler]\n", "policies[0]: cluster-autoscaler needs the autoscaler"),
    ("autoscaler: {expander: random}\n", "autoscaler.expander: must be one of"),
    ("autoscaler: {provisionDelay: -1}\n", "autoscaler.provisionDelay: invalid duration"),
    (
        "workload: {synthetic: {count: 5, arrivalRatePerMin: 1, durationS: 60, epcMiB: {choice: "
        "[1, 2], weights: [1]}}}\n",
        "workload.synthetic.epcMiB.weights: must be a list as long",
    ),
    ("workload: {trace: missing.csv}\n", "workload.trace: no such file"),
    ("sweep: {seeds: [1, x]}\n", "sweep.seeds[1]: must be an integer"),
    ("colour: blue\n", "colour: unknown key"),
]


@pytest.mark.parametrize(("override", "message"), BAD_CASES)
def test_bad_scenarios_are_one_line_naming_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    shutil.copy(TINY.parent / "jobs.csv", tmp_path / "jobs.csv")
    base = {
        "name": "name: bad\n",
        "horizon": "horizon: 1h\n",
        "nodePools": "nodePools:\n  - name: a\n    sku: Standard_DC4s_v3\n    initialSize: 1\n",
        "workload": "workload: {trace: jobs.csv}\n",
        "policies": "",
        "autoscaler": "",
        "sweep": "",
    }
    key = override.split(":", 1)[0]
    parts = {**base, key: override} if key in base else {**base, "extra": override}
    path = tmp_path / "bad.yaml"
    path.write_text("".join(parts.values()))
    assert main(["simulate", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"epcsched simulate: error: {path}: ")
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("j1,60,600,big,100,256", "line 3: epc_mib: not a number: 'big'"),
        ("j1,60,0,64,100,256", "line 3: duration_s: must be positive"),
        ("j1,60,600,-64,100,256", "line 3: epc_mib: must be non-negative"),
        ("j0,60,600,64,100,256", "id: duplicate job ids"),
    ],
)
def test_bad_traces_name_the_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], row: str, message: str
) -> None:
    trace = tmp_path / "jobs.csv"
    trace.write_text(
        f"id,submit_s,duration_s,epc_mib,cpu_m,memory_mib\nj0,0,600,64,100,256\n{row}\n"
    )
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: t\nhorizon: 1h\nnodePools:\n  - name: a\n    sku: Standard_DC8_v2\n"
        "    initialSize: 1\nworkload: {trace: jobs.csv}\n"
    )
    assert main(["simulate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{trace}: {message}" in err


def test_bad_flags_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", str(TINY), "--policies", "binpack,cluster-autoscaler"]) == 2
    assert "cluster-autoscaler needs autoscaling" in capsys.readouterr().err
    assert main(["simulate", str(TINY), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert main(["simulate", str(TINY), "--dask", "nonsense", "--out", str(tmp_path)]) == 2
    assert "--dask: expected an address" in capsys.readouterr().err


def test_unreachable_dask_scheduler_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
    # The port was free a moment ago and nothing listens on it now: connections are refused.
    # The connect timeout is a parameter, so the test waits half a second, not the default 10.
    address = f"tcp://127.0.0.1:{port}"
    tasks = plan_tasks(load_scenario(TINY), ["binpack"])[:1]
    started = time.monotonic()
    with pytest.raises(DaskUnavailable) as caught:
        run_tasks(tasks, dask_address=address, dask_timeout=0.5)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith(f"cannot reach the Dask scheduler at {address!r}: ")
    assert "\n" not in message
    # The same from the command line, with the timeout as a flag.
    started = time.monotonic()
    argv = ["simulate", str(TINY), "--dask", address, "--dask-timeout", "0.5"]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert err.startswith(
        f"epcsched simulate: error: --dask: cannot reach the Dask scheduler at {address!r}: "
    )
    assert err.count("\n") == 1


def test_the_sku_table_is_bundled_in_the_package() -> None:
    table = sku_table()
    assert lookup("Standard_DC8_v2").epc == 168 * MIB
    assert lookup("Standard_DC4s_v3").epc == 16384 * MIB
    assert lookup("Standard_DC4s_v3").vcpu == 4
    assert {s.series for s in table.values()} == {"DCsv2", "DCsv3", "DCdsv3"}
    # The bundled copy holds the same facts as the team's reference table
    # (shared/data/azure_sgx_skus.csv), of which tests/fixtures keeps a copy so this check runs
    # in any checkout; where the shared table is present, the copy must still equal it.
    bundled = (ROOT / "epcsched" / "data" / "skus.csv").read_text().splitlines()
    reference = (ROOT / "tests" / "fixtures" / "azure_sgx_skus.csv").read_text().splitlines()
    assert bundled == reference
    shared = ROOT.parent / "shared" / "data" / "azure_sgx_skus.csv"
    if shared.exists():
        assert reference == shared.read_text().splitlines()
    for source in (ROOT / "epcsched").rglob("*.py"):
        assert "shared/data" not in source.read_text(), source


def test_demo_prints_the_table_and_where_the_plots_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_demo(tmp_path)
    out = capsys.readouterr().out
    for policy in ("binpack", "spread", "balanced", "kube-default", "epc-unaware"):
        assert policy in out
    assert str(tmp_path) in out and "pending.png" in out
    assert (tmp_path / "results.json").exists()


def test_trace_workload_is_read_in_submission_order(tmp_path: Path) -> None:
    trace = tmp_path / "jobs.csv"
    trace.write_text(
        "submit_s,duration_s,epc_mib,cpu_m,memory_mib\n60,10,93.5,100,256\n0,5,0,50,64\n"
    )
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: t\nhorizon: 1h\nnodePools:\n  - name: a\n    sku: Standard_DC8_v2\n"
        "workload: {trace: jobs.csv}\n"
    )
    scenario = load_scenario(path)
    workload = load_workload(scenario.workload, scenario.seed)
    assert workload.ids == ("job-000001", "job-000000")
    assert workload.epc.tolist() == [0, 98041856]  # 93.5 MiB, in whole bytes
    assert workload.submit.tolist() == [0.0, 60.0]
