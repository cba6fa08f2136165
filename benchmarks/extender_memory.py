"""Peak memory of the extender per megabyte of request body (`make bench`; issue 9 point 6).

The extender sidecar runs under a memory limit (1 Gi in `manifests/base/scheduler`); a body that
makes it exceed the limit gets it OOM-killed and kube-scheduler loses its extender. For each body
shape and size this starts a fresh `epcsched extender` on a 1,000-node snapshot, sends one
request and reads the process's peak resident set (`VmHWM` in /proc) afterwards:

- `names`: a cache-mode filter whose `NodeNames` holds many short names the cache does not know
  (each gets a reason: the most Python objects per byte a client can send);
- `nodes`: a full-mode filter with whole Node objects (what `nodeCacheCapable: false` sends);
- `pod`: one pod whose containers list many resources.

Prints one JSON line: baseline RSS, peak RSS per size and the slope in MB of RSS per MB of body;
`--max-body` bounds the sizes tried (the command's `maxBodyBytes` must be at least as large).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import build, node, pod

from epcsched.netutil import free_port
from epcsched.testing.processes import command, peak_rss, wait_ready

MB = 2**20


def body_of(shape: str, size: int) -> bytes:
    """A well-formed filter body of about `size` bytes."""
    incoming = pod("big", None, 64)
    if shape == "names":
        count = size // 11  # `"u1234567",` is 11 bytes
        names = [f"u{i:07d}" for i in range(count)]
        return orjson.dumps({"Pod": incoming, "Nodes": None, "NodeNames": names})
    if shape == "nodes":
        one = len(orjson.dumps(node("aks-dcsv3-0000000", 16)))
        items = [node(f"aks-dcsv3-{i:07d}", 16) for i in range(max(size // one, 1))]
        return orjson.dumps(
            {"Pod": incoming, "Nodes": {"metadata": {}, "items": items}, "NodeNames": None}
        )
    if shape == "pod":
        resources = incoming["spec"]["containers"][0]["resources"]
        count = size // 40
        resources["limits"].update({f"example.com/r{i:08d}": "1" for i in range(count)})
        return orjson.dumps({"Pod": incoming, "Nodes": None, "NodeNames": ["aks-dcsv3-00000"]})
    raise ValueError(shape)


def measure(snapshot: Path, body: bytes, max_body: int, workdir: Path) -> dict[str, Any]:
    config = workdir / "config.yaml"
    config.write_text(f"extender:\n  maxBodyBytes: {max_body}\n")
    port = free_port()
    proc = subprocess.Popen(
        command(
            "extender", "--snapshot", str(snapshot), "--port", str(port),
            "--config", str(config), "--log-level", "WARNING",
        ),
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(port, proc, timeout=120)
        before = peak_rss(proc.pid)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/filter", data=body)
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                status = response.status
                response.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
        return {"status": status, "baseline": before, "peak": peak_rss(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-body", type=int, default=16, help="largest body tried, in MB")
    parser.add_argument("--shapes", default="names,nodes,pod")
    args = parser.parse_args()
    sizes = [s for s in (1, 4, 16, 64) if s <= args.max_body] or [args.max_body]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        snapshot = workdir / "cluster.json"
        snapshot.write_bytes(orjson.dumps(build(1000, 10000, seed=3)))
        for shape in args.shapes.split(","):
            rows = []
            for size in sizes:
                body = body_of(shape, size * MB)
                result = measure(snapshot, body, len(body) + MB, workdir)
                rows.append(
                    {
                        "body_mb": round(len(body) / MB, 2),
                        "status": result["status"],
                        "baseline_mb": round(result["baseline"] / MB, 1),
                        "peak_mb": round(result["peak"] / MB, 1),
                    }
                )
            first, last = rows[0], rows[-1]
            slope = (last["peak_mb"] - first["peak_mb"]) / max(
                last["body_mb"] - first["body_mb"], 1e-9
            )
            out[shape] = {"runs": rows, "rss_mb_per_body_mb": round(slope, 1)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
