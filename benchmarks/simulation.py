"""Simulator throughput: 100,000 pods on 1,000 nodes under one policy, printed as pods/s.

The target is under 60 s for the whole run (issue 4). Prints one JSON line so results can be
collected by scripts: `{"benchmark": "simulation", "pods": ..., "nodes": ..., "seconds": ...,
"podsPerSecond": ...}`. Run: `.venv/bin/python benchmarks/simulation.py [--policy binpack]`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from epcsched.simulation.engine import simulate
from epcsched.simulation.scenario import parse_scenario
from epcsched.simulation.workload import load_workload


def scenario_data(pods: int, nodes: int) -> dict[str, object]:
    # About 4,000 pods run at once: a busy cluster, but one where arrivals rarely wait.
    return {
        "name": "benchmark",
        "seed": 1,
        "horizon": "12h",
        "nodePools": [
            {
                "name": "dcsv3",
                "sku": "Standard_DC8s_v3",
                "initialSize": nodes,
                "minSize": 0,
                "maxSize": nodes,
            }
        ],
        "workload": {
            "synthetic": {
                "count": pods,
                "arrivalRatePerMin": pods / 600,
                "durationS": {"lognormal": {"median": 1200, "sigma": 0.8, "max": 14400}},
                "epcMiB": {"choice": [0, 256, 512, 1024, 4096], "weights": [3, 3, 2, 1, 1]},
                "cpuM": {"choice": [100, 250, 500]},
                "memoryMiB": {"choice": [256, 512, 1024]},
            }
        },
        "autoscaler": {"enabled": False},
        "policies": ["binpack"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="binpack")
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=1_000)
    args = parser.parse_args()
    scenario = parse_scenario(scenario_data(args.pods, args.nodes), base=Path("."))
    workload = load_workload(scenario.workload, scenario.seed)
    start = time.perf_counter()
    result = simulate(scenario, workload, args.policy)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "benchmark": "simulation",
                "policy": args.policy,
                "pods": len(workload),
                "nodes": args.nodes,
                "seconds": round(seconds, 2),
                "podsPerSecond": round(len(workload) / seconds, 1),
                "podsCompleted": result.metrics["podsCompleted"],
                "podsWaited": result.metrics["podsWaited"],
                "peakNodes": result.metrics["peakNodes"],
            }
        )
    )


if __name__ == "__main__":
    main()
