"""What the extender's INFO decision log costs a filter (`make bench`; issue 9 point 1).

The decision log writes one line per pod whose filter failed nodes, so its cost is zero on a
filter that passes every node and largest on one that fails thousands. Measures both, on the
filter benchmark's cluster (5,000 nodes, 50,000 pods):

- in process: the median of `ExtenderService.filter` alone against `filter_and_failures`
  followed by the decision log (as the handler runs them), called by turns, with the log at
  INFO written to a file (text and JSON formats);
- at the process boundary: `epcsched extender` at `--log-level WARNING` and at INFO (stderr to
  a file, as a container runtime keeps it), one request at a time as kube-scheduler sends them,
  runs alternated so a busy machine affects both alike; server CPU per request is the steadier
  figure where other work shares the cores.

Prints one JSON line; `ratio` is INFO over WARNING (target: under 1.05).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import EPC, build, pod

from epcsched import logs
from epcsched.config import Config
from epcsched.extender.decisions import log_failures
from epcsched.extender.service import ExtenderService
from epcsched.kube.snapshot import load_snapshot
from epcsched.netutil import free_port
from epcsched.testing.processes import command, cpu_seconds, wait_ready

HERE = Path(__file__).resolve().parent


def make_bodies(snapshot_path: Path, workdir: Path) -> dict[str, Path]:
    """`passing`: the nodes kube-scheduler's own fit check leaves (all fit); `failing`: every
    node, for a pod too large for most of them."""
    snapshot = load_snapshot([snapshot_path], Config())
    names = snapshot.node_names()
    free = snapshot.free(EPC, snapshot.slots_of(names)).tolist()
    listed = [n for n, f in zip(names, free, strict=True) if f >= 256 * 2**20]
    out = {}
    for kind, mib, nodes in (("passing", 256, listed), ("failing", 4096, names)):
        body = {"Pod": pod(f"pending-{kind}", None, mib), "Nodes": None, "NodeNames": nodes}
        body["Pod"]["metadata"]["uid"] = f"uid-{kind}"
        path = workdir / f"{kind}.json"
        path.write_bytes(orjson.dumps(body))
        out[kind] = path
    return out


def median_seconds(first: Any, second: Any, repeat: int) -> tuple[float, float]:
    """Medians of `first` and `second`, called by turns so that load from other work on the
    machine falls on both alike."""
    first()
    second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, into in ((first, times[0]), (second, times[1])):
            started = time.perf_counter()
            fn()
            into.append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def in_process(snapshot_path: Path, bodies: dict[str, Path], repeat: int) -> dict[str, Any]:
    snapshot = load_snapshot([snapshot_path], Config())
    service = ExtenderService(lambda: snapshot, strategy="binpack")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as devnull:
        for kind, path in bodies.items():
            body = path.read_bytes()
            reply = orjson.loads(service.filter(body))
            failed = len(reply["FailedNodes"]) + len(reply["FailedAndUnresolvableNodes"])
            row: dict[str, Any] = {"failed_nodes": failed}
            for fmt in ("text", "json"):
                with open(Path(tmp) / f"log.{fmt}", "w") as stream:
                    logs.setup("INFO", fmt, stream=stream)

                    def logged(b: bytes = body) -> None:
                        _, failures = service.filter_and_failures(b)
                        if failures is not None:
                            log_failures(failures)

                    bare, seconds = median_seconds(lambda b=body: service.filter(b), logged, repeat)
                row.setdefault("filter_us", round(bare * 1e6, 1))
                row[f"with_info_{fmt}_us"] = round(seconds * 1e6, 1)
                row[f"ratio_{fmt}"] = round(seconds / bare, 3)
            out[kind] = row
        logs.setup("WARNING", "text", stream=devnull)
    return out


def start(snapshot_path: Path, level: str, log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        command(
            "extender", "--snapshot", str(snapshot_path), "--port", str(port),
            "--log-level", level,
        ),
        stderr=log_path.open("wb"),
    )  # fmt: skip
    wait_ready(port, proc, timeout=180)
    return proc, port


def serial(port: int, pid: int, body: Path, seconds: float) -> dict[str, float]:
    before = cpu_seconds(pid)
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "loadgen.py"),
            f"http://127.0.0.1:{port}/filter",
            str(body),
            "--seconds",
            str(seconds),
            "--concurrency",
            "1",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    result["cpu_us"] = (cpu_seconds(pid) - before) / result["requests"] * 1e6
    return result


def over_http(
    snapshot_path: Path, bodies: dict[str, Path], workdir: Path, seconds: float, rounds: int
) -> dict[str, Any]:
    servers = {
        level: start(snapshot_path, level, workdir / f"extender-{level}.log")
        for level in ("WARNING", "INFO")
    }
    try:
        out: dict[str, Any] = {}
        for kind, body in bodies.items():
            runs: dict[str, list[dict[str, float]]] = {"WARNING": [], "INFO": []}
            for _ in range(rounds):
                for level, (proc, port) in servers.items():
                    runs[level].append(serial(port, proc.pid, body, seconds))
            row: dict[str, Any] = {}
            for level, results in runs.items():
                row[f"{level.lower()}_p50_ms"] = statistics.median(r["p50_ms"] for r in results)
                row[f"{level.lower()}_cpu_us"] = round(
                    statistics.median(r["cpu_us"] for r in results), 1
                )
            row["ratio_p50"] = round(row["info_p50_ms"] / row["warning_p50_ms"], 3)
            row["ratio_cpu"] = round(row["info_cpu_us"] / row["warning_cpu_us"], 3)
            out[kind] = row
        out["info_log_lines"] = sum(
            1 for _ in (workdir / "extender-INFO.log").open() if "decisions" in _
        )
        return out
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=50000)
    parser.add_argument("--seconds", type=float, default=2.0, help="per serial run")
    parser.add_argument("--rounds", type=int, default=3, help="alternated runs per level")
    parser.add_argument("--repeat", type=int, default=200, help="in-process calls per median")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        snapshot_path = workdir / "cluster.json"
        snapshot_path.write_bytes(orjson.dumps(build(args.nodes, args.pods, seed=1)))
        bodies = make_bodies(snapshot_path, workdir)
        result = {
            "nodes": args.nodes,
            "pods": args.pods,
            "in_process": in_process(snapshot_path, bodies, args.repeat),
            "http_serial": over_http(snapshot_path, bodies, workdir, args.seconds, args.rounds),
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
