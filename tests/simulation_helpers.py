"""Builders for scenarios and traces shared by the simulation and planner tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from epcsched.simulation.scenario import Scenario, parse_scenario
from epcsched.simulation.workload import Workload, load_workload

EPC = "sgx.intel.com/epc"
GIB = 2**30
MIB = 2**20


def pool(
    name: str = "p",
    *,
    epc: str = "8Gi",
    cpu: str = "4",
    memory: str = "16Gi",
    size: int = 1,
    min_size: int = 0,
    max_size: int = 10,
    cost: float = 1.0,
    priority: int = 0,
) -> dict[str, Any]:
    return {
        "name": name,
        "template": {"resources": {EPC: epc, "cpu": cpu, "memory": memory, "pods": "110"}},
        "initialSize": size,
        "minSize": min_size,
        "maxSize": max_size,
        "costPerHour": cost,
        "priority": priority,
    }


def write_trace(path: Path, jobs: Sequence[tuple[float, float, float, int, int]]) -> Path:
    """Jobs are (submit_s, duration_s, epc_mib, cpu_m, memory_mib), named j0, j1, ..."""
    lines = ["id,submit_s,duration_s,epc_mib,cpu_m,memory_mib"]
    lines += [f"j{i},{s},{d},{e},{c},{m}" for i, (s, d, e, c, m) in enumerate(jobs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def trace_scenario(
    tmp_path: Path,
    jobs: Sequence[tuple[float, float, float, int, int]],
    *,
    pools: list[dict[str, Any]] | None = None,
    horizon: str = "2h",
    autoscaler: dict[str, Any] | None = None,
    policies: list[str] | None = None,
    **extra: Any,
) -> tuple[Scenario, Workload]:
    write_trace(tmp_path / "jobs.csv", jobs)
    data: dict[str, Any] = {
        "name": "test",
        "seed": 1,
        "horizon": horizon,
        "nodePools": pools or [pool()],
        "workload": {"trace": "jobs.csv"},
        "autoscaler": autoscaler or {"enabled": False},
        **extra,
    }
    if policies is not None:
        data["policies"] = policies
    scenario = parse_scenario(data, base=tmp_path)
    return scenario, load_workload(scenario.workload, scenario.seed)


def synthetic(
    *,
    seed: int = 1,
    count: int = 200,
    rate: float = 10.0,
    pools: list[dict[str, Any]] | None = None,
    horizon: str = "2h",
    autoscaler: dict[str, Any] | None = None,
    epc_mib: list[int] | None = None,
) -> tuple[Scenario, Workload]:
    data: dict[str, Any] = {
        "name": "synthetic",
        "seed": seed,
        "horizon": horizon,
        "nodePools": pools or [pool(size=3)],
        "workload": {
            "synthetic": {
                "count": count,
                "arrivalRatePerMin": rate,
                "durationS": {"lognormal": {"median": 300, "sigma": 0.8}},
                "epcMiB": {"choice": epc_mib or [0, 256, 1024, 2048, 4096]},
                "cpuM": {"choice": [100, 250]},
                "memoryMiB": {"choice": [256, 512]},
            }
        },
        "autoscaler": autoscaler or {"enabled": False},
    }
    scenario = parse_scenario(data, base=Path("."))
    return scenario, load_workload(scenario.workload, scenario.seed)
