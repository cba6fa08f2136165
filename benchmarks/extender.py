"""Extender speed against a bare aiohttp handler, measured in one run (`make bench`).

Builds a 5,000-node, 50,000-pod snapshot, starts `epcsched extender` on it and a bare aiohttp
handler (reads the body, returns a constant) as separate processes, and drives both with
kube-scheduler-shaped `NodeNames` bodies from a separate load-generating process. Also times
full-`Nodes`-mode filters at 1,000 nodes against decoding the same body with orjson, and checks
that a filter costs the same with 5,000 or 50,000 pods in the cluster. Prints one JSON line.

Targets (../shared issue 2): filter ratio_vs_bare >= 0.5 and p99 <= 5 ms at 5,000 nodes in cache
mode; a full-mode filter at 1,000 nodes <= 2x orjson decode; per-request work flat in pods.

`--before DIR` also serves the same snapshot with the epcsched package under DIR (e.g.
`git archive <commit> epcsched | tar -x -C DIR`) and drives it in the same run, verb by verb
right after the current one, so before and after meet the same machine load (`before`).
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
from cluster import EPC, POD_EPC_MIB, build, pod

from epcsched.config import Config
from epcsched.extender.service import ExtenderService
from epcsched.kube.snapshot import load_snapshot
from epcsched.netutil import free_port
from epcsched.testing.processes import command, cpu_seconds, wait_ready

HERE = Path(__file__).resolve().parent


def bodies(snapshot_path: Path, workdir: Path, count: int = 4) -> list[Path]:
    """NodeNames bodies for a few different pods, each listing the nodes kube-scheduler's own
    NodeResourcesFit passes (with `ignoredByScheduler: false` it already checks EPC requests),
    so lists differ a little from pod to pod, as they do between scheduling cycles."""
    snapshot = load_snapshot([snapshot_path], Config())
    names = snapshot.node_names()
    slots = snapshot.slots_of(names)
    free = snapshot.free(EPC, slots).tolist()
    paths = []
    for k in range(count):
        mib = POD_EPC_MIB[(k + 2) % len(POD_EPC_MIB)]
        listed = [n for n, f in zip(names, free, strict=True) if f >= mib * 2**20]
        body = {"Pod": pod(f"pending-{k}", None, mib), "Nodes": None, "NodeNames": listed}
        path = workdir / f"body-{k}.json"
        path.write_bytes(orjson.dumps(body))
        paths.append(path)
    return paths


def load(url: str, paths: list[Path], seconds: float, concurrency: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "loadgen.py"),
            url,
            *map(str, paths),
            "--seconds",
            str(seconds),
            "--concurrency",
            str(concurrency),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def start_extender(snapshot_path: Path, port: int, package: Path | None) -> subprocess.Popen[bytes]:
    """`epcsched extender` on the snapshot; with `package`, the epcsched under that directory
    (`python -m` puts the working directory first on sys.path)."""
    env = dict(os.environ)
    if package is not None:
        env["PYTHONPATH"] = str(package)
    return subprocess.Popen(
        command(
            "extender", "--snapshot", str(snapshot_path), "--port", str(port),
            "--log-level", "WARNING",
        ),
        env=env,
        cwd=package,
    )  # fmt: skip


def drive(port: int, pid: int, verb: str, paths: list[Path], seconds: float) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/{verb}"
    cpu_before = cpu_seconds(pid)
    throughput = load(url, paths, seconds, concurrency=4)
    cpu_used = cpu_seconds(pid) - cpu_before
    latency = load(url, paths, seconds, concurrency=1)
    return {
        "rps": throughput["rps"],
        "p50_ms": latency["p50_ms"],
        "p99_ms": latency["p99_ms"],
        "serial_rps": latency["rps"],
        # What the server itself spends per request, whichever side is the bottleneck.
        "server_cpu_us_per_request": round(cpu_used / throughput["requests"] * 1e6, 1),
        "server_cpu_busy": round(cpu_used / seconds, 2),
    }


def median_seconds(fn: Any, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def full_nodes_mode(workdir: Path, nodes: int = 1000) -> dict[str, Any]:
    cluster = build(nodes, nodes * 10, seed=2)
    path = workdir / "cluster-1000.json"
    path.write_bytes(orjson.dumps(cluster))
    snapshot = load_snapshot([path], Config())
    service = ExtenderService(lambda: snapshot, strategy="binpack")
    items = [i for i in cluster["items"] if i["kind"] == "Node"]
    body = orjson.dumps(
        {
            "Pod": pod("pending", None, 256),
            "Nodes": {"metadata": {}, "items": items},
            "NodeNames": None,
        }
    )
    filter_s = median_seconds(lambda: service.filter(body), 40)
    prioritize_s = median_seconds(lambda: service.prioritize(body), 40)
    decode_s = median_seconds(lambda: orjson.loads(body), 40)
    return {
        "nodes": nodes,
        "body_bytes": len(body),
        "filter_ms": round(filter_s * 1000, 3),
        "prioritize_ms": round(prioritize_s * 1000, 3),
        "orjson_decode_ms": round(decode_s * 1000, 3),
        "filter_vs_orjson": round(filter_s / decode_s, 2),
    }


def pods_scaling(workdir: Path, paths: list[Path], nodes: int, pods: int) -> dict[str, Any]:
    """The same filter with ten times the pods in the cluster should cost the same.

    The extra pods request no EPC, so every decision is unchanged and only the pod count grows.
    """
    out: dict[str, Any] = {}
    body = paths[0].read_bytes()
    base = build(nodes, pods, seed=1)
    node_names = [i["metadata"]["name"] for i in base["items"] if i["kind"] == "Node"]
    for total in (pods, pods * 10):
        items = list(base["items"])
        for j in range(total - pods):
            extra = pod(f"plain-{j:07d}", node_names[j % len(node_names)], 0)
            del extra["spec"]["containers"][0]["resources"]["requests"][EPC]
            del extra["spec"]["containers"][0]["resources"]["limits"][EPC]
            items.append(extra)
        path = workdir / f"scale-{total}.json"
        path.write_bytes(orjson.dumps({"kind": "List", "items": items}))
        snapshot = load_snapshot([path], Config())
        service = ExtenderService(lambda s=snapshot: s, strategy="binpack")  # type: ignore[misc]
        seconds = median_seconds(lambda f=service.filter: f(body), 300)  # type: ignore[misc]
        out[f"filter_us_{len(snapshot.pods)}_pods"] = round(seconds * 1e6, 1)
    first, second = out.values()
    out["ratio"] = round(second / first, 2)
    return out


def with_failures(snapshot_path: Path, nodes: int) -> dict[str, Any]:
    """In-process cost of a filter over every node, where some fail and need reasons."""
    snapshot = load_snapshot([snapshot_path], Config())
    service = ExtenderService(lambda: snapshot, strategy="binpack")
    names = snapshot.node_names()
    body = orjson.dumps({"Pod": pod("big", None, 4096), "Nodes": None, "NodeNames": names})
    reply = orjson.loads(service.filter(body))
    failed = len(reply["FailedNodes"]) + len(reply["FailedAndUnresolvableNodes"])
    seconds = median_seconds(lambda: service.filter(body), 100)
    return {"nodes": nodes, "failed_nodes": failed, "filter_us": round(seconds * 1e6, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=50000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help="also drive the extender of the epcsched package under DIR in the same run",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cluster = build(args.nodes, args.pods)
        snapshot_path = workdir / "cluster.json"
        snapshot_path.write_bytes(orjson.dumps(cluster))
        paths = bodies(snapshot_path, workdir)
        ext_port, bare_port, old_port = free_port(), free_port(), free_port()
        extender = start_extender(snapshot_path, ext_port, None)
        bare = subprocess.Popen([sys.executable, str(HERE / "bare_server.py"), str(bare_port)])
        procs = [extender, bare]
        old = None
        if args.before is not None:
            old = start_extender(snapshot_path, old_port, args.before.resolve())
            procs.append(old)
        try:
            wait_ready(ext_port, extender, timeout=120)
            wait_ready(bare_port, bare, timeout=120)
            if old is not None:
                wait_ready(old_port, old, timeout=120)
            result: dict[str, Any] = {
                "nodes": args.nodes,
                "pods": args.pods,
                "body_bytes": paths[0].stat().st_size,
            }
            bare_stats = drive(bare_port, bare.pid, "filter", paths, args.seconds)
            for verb in ("filter", "prioritize"):
                stats = drive(ext_port, extender.pid, verb, paths, args.seconds)
                stats["bare_rps"] = bare_stats["rps"]
                stats["ratio_vs_bare"] = round(stats["rps"] / bare_stats["rps"], 3)
                stats["cpu_ratio_vs_bare"] = round(
                    bare_stats["server_cpu_us_per_request"] / stats["server_cpu_us_per_request"], 3
                )
                result[verb] = stats
                if old is not None:
                    result.setdefault("before", {})[verb] = drive(
                        old_port, old.pid, verb, paths, args.seconds
                    )
            result["bare"] = bare_stats
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
        result["full_nodes_mode"] = full_nodes_mode(workdir)
        result["pods_scaling"] = pods_scaling(workdir, paths, args.nodes, args.pods)
        result["filter_with_failures"] = with_failures(snapshot_path, args.nodes)
    result["targets_met"] = {
        "filter_ratio_vs_bare>=0.5": result["filter"]["ratio_vs_bare"] >= 0.5,
        "filter_p99<=5ms": result["filter"]["p99_ms"] <= 5.0,
        "full_filter<=2x_orjson": result["full_nodes_mode"]["filter_vs_orjson"] <= 2.0,
        "flat_in_pods(ratio<=1.3)": result["pods_scaling"]["ratio"] <= 1.3,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
