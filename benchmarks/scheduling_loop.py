"""kube-scheduler's scheduling loop against the extender and against a do-nothing extender.

kube-scheduler schedules one pod at a time and waits for each extender call, so what the
extender costs is its time per request, one at a time, while the cluster changes between
requests. This plays kube-scheduler's part, per pod:

1. `NodeNames` = the nodes its own NodeResourcesFit passes, in the order its parallel filter
   reports them: the node list cut into chunks of `min(√n, n/16 + 1)` nodes (the parallelizer's
   chunk size for 16 workers), the chunks in a random order;
2. `POST /filter`; in the base profile (`extender`) then `POST /prioritize` with the list filter
   passed, when more than one did, the best total winning (extender score × weight 5 × 10, ties
   at random as selectHost breaks them); in the high-throughput profile (`high_throughput`,
   manifests/components/high-throughput/) no prioritize, and kube-scheduler's own
   NodeResourcesFit with MostAllocated on EPC picks (whole percent of the node used after
   placement, ties at random);
3. the pod is bound with a `pods/binding` in the fake API server that the extender follows
   with `--kubeconfig`: the binding's watch event reaches it between pods.

The do-nothing extender (plain aiohttp on uvloop: filter echoes `NodeNames`, prioritize answers
`[]`) runs the same loop in the same run against its own copy of the API server; blocks of pods
alternate between all runs (two extenders, two profiles, every node count), so a noisy machine
slows them alike, in a new random order every block, so that no run always follows the same
other one (what a run follows changes its figures). epcsched runs as `epcsched extender`, its
verbs on its own HTTP path (`epcsched/extender/fastpath.py`). Per run it reports the loop's pods/s
(kube-scheduler's part here, the extender calls and the bind: `pods_per_s`, `ratio`) and the
extender round trips alone, which the scheduling cycle waits for (`extender_*`,
`extender_ratio`, `extra_ms_per_pod`), and the extender process's CPU time per pod. A real
kube-scheduler 1.35 adds 2-3 ms of its own work per pod over 1,000 nodes on 2 cores, which this
loop does not have, so both ratios are stricter than a real scheduler's. `--before DIR` adds,
in the base profile, the extender of an older epcsched package (e.g. `git archive <commit>
epcsched | tar -x -C DIR`), so before and after share one run; `--profile DIR` runs epcsched's
extenders under cProfile (slower: for where the time goes, not for the figures). Also timed
in-process: `ExtenderService.filter` and `prioritize` per pod with the previous pod bound into
the snapshot between pods, plus the `refresh` the extender runs after that bind's watch event
(the per-node update requests used to do themselves), the sizes alternating in blocks. The
prioritize the extender answers ahead of its request is timed here as a request, so these are
the work per pod, not only the wait.

Prints one JSON line. Targets (issue 10): ratio to the do-nothing extender >= 0.95 at 1,000 and
5,000 nodes; time per pod (the extender's round trips, p50, base profile) at the largest size
<= 1.5x that at the smallest (`time_per_pod_growth`, with the whole loop's beside it). The
in-process work per pod and its growth (`in_process`, `in_process_growth`) are reported beside
them: they leave out HTTP, which is most of what a pod costs, so they grow faster.

Roles (internal): `--role api` serves a fake API server, `--role noop` the do-nothing extender.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import EPC, node, pod

from epcsched.cli import Parser
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.extender.service import ExtenderService
from epcsched.model import NodeInfo, PodInfo
from epcsched.netutil import free_port
from epcsched.testing.apiserver import kubeconfig
from epcsched.testing.processes import command, cpu_seconds, wait_ready

HERE = Path(__file__).resolve()
NAMESPACE = "enclaves"
NODE_GIB = 32
POD_MIB = (64, 128, 256)
WEIGHT = 5
WORKERS = 16
"""kube-scheduler's default parallelism, which sets the filter's chunk size."""
PROFILES = ("extender", "high_throughput")
"""`extender`: base/, filter then prioritize; `high_throughput`: components/high-throughput/,
filter only, kube-scheduler's NodeResourcesFit (MostAllocated on EPC) picks."""


# ----- roles run as their own processes ----------------------------------------------------
class _NoopArgs(msgspec.Struct):
    NodeNames: msgspec.Raw = msgspec.Raw(b"null")


def serve_api(port: int, token: str, load: Path) -> None:
    from epcsched.testing.apiserver import FakeApiServer

    async def main() -> None:
        api = FakeApiServer(port=port, token=token, bookmark_interval=1.0)
        api.store.load_many(orjson.loads(load.read_bytes())["items"])
        await api.start()
        await asyncio.Event().wait()

    import uvloop

    uvloop.run(main())


def serve_noop(port: int) -> None:
    """The cheapest correct extender: filter echoes `NodeNames`, prioritize answers `[]`."""
    import uvloop
    from aiohttp import web

    decoder = msgspec.json.Decoder(_NoopArgs)

    async def filter_(request: web.Request) -> web.Response:
        names = bytes(decoder.decode(await request.read()).NodeNames)
        return web.Response(body=b'{"NodeNames":' + names + b"}", content_type="application/json")

    async def prioritize(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"[]", content_type="application/json")

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post("/filter", filter_)
    app.router.add_post("/prioritize", prioritize)
    app.router.add_get("/readyz", ready)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        loop=uvloop.new_event_loop(),
        print=None,
        access_log=None,
    )


# ----- the loop ----------------------------------------------------------------------------
def chunk_size(n: int) -> int:
    """kube-scheduler's `chunkSizeFor(n, parallelism)`."""
    size = max(1, math.isqrt(n))
    return min(size, n // WORKERS + 1)


def pod_sizes(count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.choice(POD_MIB) for _ in range(count)]


def cluster_objects(nodes: int, sizes: list[int]) -> dict[str, Any]:
    items: list[dict[str, Any]] = [node(f"aks-dcsv3-{i:05d}", NODE_GIB) for i in range(nodes)]
    items += [
        pod(f"pending-{j:05d}", None, mib, namespace=NAMESPACE) for j, mib in enumerate(sizes)
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


@dataclass
class Scheduler:
    """kube-scheduler's side of one run: its node order, its own fit, its choice of host."""

    names: list[str]
    seed: int

    def __post_init__(self) -> None:
        self.free = np.full(len(self.names), NODE_GIB * 2**30, dtype=np.int64)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.encoded = [orjson.dumps(n) for n in self.names]
        self.rng = random.Random(self.seed)
        self.size = chunk_size(len(self.names))
        self.chunks = [
            range(s, min(s + self.size, len(self.names)))
            for s in range(0, len(self.names), self.size)
        ]
        # The driver's own work must stay small beside the extender's: each chunk's JSON is
        # built once per pod size and again only when a bind changes one of its nodes.
        self.chunk_json: dict[tuple[int, int], bytes] = {}

    def node_names(self, need: int) -> bytes:
        """The `NodeNames` array for a pod needing `need` bytes, chunks in a random order."""
        order = list(range(len(self.chunks)))
        self.rng.shuffle(order)
        parts = []
        for k in order:
            part = self.chunk_json.get((k, need))
            if part is None:
                chunk = self.chunks[k]
                fits = (self.free[chunk.start : chunk.stop] >= need).tolist()
                part = b",".join([self.encoded[i] for i, ok in zip(chunk, fits, strict=True) if ok])
                self.chunk_json[k, need] = part
            if part:
                parts.append(part)
        return b"[" + b",".join(parts) + b"]"

    def bound(self, host: str, need: int) -> None:
        i = self.index[host]
        self.free[i] -= need
        k = i // self.size
        for key in [key for key in self.chunk_json if key[0] == k]:
            del self.chunk_json[key]

    def most_allocated(self, need: int, passing: list[str]) -> str:
        """kube-scheduler's NodeResourcesFit with MostAllocated on EPC: the node most used
        after placement, in whole percent, ties at random."""
        fits = self.free >= need
        if int(fits.sum()) != len(passing):
            raise RuntimeError("the extender failed nodes the benchmark expects to pass")
        allocatable = NODE_GIB * 2**30
        score = np.where(fits, (allocatable - self.free + need) * 100 // allocatable, -1)
        best = np.flatnonzero(score == score.max())
        return self.names[int(best[self.rng.randrange(best.shape[0])])]

    def choose(self, passing: list[str], scores: dict[str, int]) -> str:
        """The best total (extender score × weight × 10), ties at random; a host the extender
        did not list scores 0."""
        best = max(scores.values(), default=0)
        if best <= 0:
            return self.rng.choice(passing)
        return self.rng.choice(sorted(h for h, score in scores.items() if score == best))


def body(pod_raw: bytes, names: bytes) -> bytes:
    return b'{"Pod":' + pod_raw + b',"Nodes":null,"NodeNames":' + names + b"}"


class Connection:
    """One keep-alive HTTP/1.1 connection, as kube-scheduler keeps to its extender."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Content-Type": "application/json", **(headers or {})}

    def post(self, path: str, payload: bytes) -> tuple[int, bytes, float]:
        started = time.perf_counter()
        self.conn.request("POST", path, body=payload, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, data, time.perf_counter() - started


@dataclass
class Run:
    """One extender under the loop in one profile: its connections, kube-scheduler's view,
    the timings."""

    name: str
    prioritize: bool
    """The base profile asks filter then prioritize; high-throughput asks filter only and lets
    kube-scheduler's own MostAllocated scoring pick."""
    extender: Connection
    api: Connection
    scheduler: Scheduler
    per_pod: list[float] = field(default_factory=list)
    """Per pod, the extender round trips: what the scheduling cycle waits for."""
    bind: list[float] = field(default_factory=list)
    loop: list[float] = field(default_factory=list)
    """Per pod, the whole loop: kube-scheduler's part, the extender calls and the bind."""
    prioritize_calls: int = 0
    hosts: set[str] = field(default_factory=set)
    pid: int = 0
    """The extender's process, whose CPU time is read around the timed pods."""
    cpu: float = 0.0

    def schedule(self, index: int, need_mib: int, *, timed: bool) -> None:
        began = time.perf_counter()
        name = f"pending-{index:05d}"
        pod_raw = orjson.dumps(pod(name, None, need_mib, namespace=NAMESPACE))
        need = need_mib * 2**20
        names = self.scheduler.node_names(need)
        status, data, took = self.extender.post("/filter", body(pod_raw, names))
        if status != 200:
            raise RuntimeError(f"{self.name} /filter: HTTP {status}: {data[:200]!r}")
        passing: list[str] = orjson.loads(data)["NodeNames"] or []
        if not passing:
            raise RuntimeError(f"{self.name}: no node passed for {name}")
        if not self.prioritize:
            host = self.scheduler.most_allocated(need, passing)
        elif len(passing) > 1:
            status, data, more = self.extender.post(
                "/prioritize", body(pod_raw, orjson.dumps(passing))
            )
            if status != 200:
                raise RuntimeError(f"{self.name} /prioritize: HTTP {status}: {data[:200]!r}")
            took += more
            self.prioritize_calls += 1
            host = self.scheduler.choose(
                passing, {e["Host"]: e["Score"] for e in orjson.loads(data)}
            )
        else:
            host = passing[0]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "uid": f"uid-{name}"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": host},
        }
        status, data, bind_took = self.api.post(
            f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/binding", orjson.dumps(binding)
        )
        if status != 201:
            raise RuntimeError(f"{self.name} bind {name}: HTTP {status}: {data[:200]!r}")
        self.scheduler.bound(host, need)
        self.hosts.add(host)
        if timed:
            self.per_pod.append(took)
            self.bind.append(bind_took)
            self.loop.append(time.perf_counter() - began)

    def stats(self) -> dict[str, Any]:
        calls = sorted(self.per_pod)
        return {
            "pods_per_s": round(len(self.loop) / sum(self.loop), 1),
            "loop_p50_ms": round(statistics.median(self.loop) * 1000, 3),
            "extender_pods_per_s": round(len(calls) / sum(calls), 1),
            "extender_p50_ms": round(calls[len(calls) // 2] * 1000, 3),
            "extender_p99_ms": round(calls[min(len(calls) - 1, int(0.99 * len(calls)))] * 1000, 3),
            "bind_p50_ms": round(statistics.median(self.bind) * 1000, 3),
            # What the extender process itself spends per pod (watch events included),
            # whichever process the machine happens to be slowed by.
            "extender_cpu_ms_per_pod": round(self.cpu / len(self.loop) * 1000, 3),
            "prioritize_calls": self.prioritize_calls,
            "nodes_used": len(self.hosts),
        }


def start(args: list[str], *, pythonpath: Path | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBERNETES_SERVICE_HOST": ""}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    # `python -m` puts the working directory first on sys.path: run from `pythonpath` so that
    # its package, not the checkout's, is the one imported.
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=pythonpath,
    )


def serve(
    kind: str,
    profile: str,
    scheduler: Scheduler,
    load: Path,
    workdir: Path,
    procs: list[subprocess.Popen[bytes]],
    *,
    before: Path | None = None,
    profile_to: Path | None = None,
) -> Run:
    """A fake API server holding `load` and, following it or not, the extender of `kind`
    (`before`: epcsched's extender from the package under that directory; `profile_to`: run
    it under cProfile, the statistics written there when it stops)."""
    api_port, ext_port, token = free_port(), free_port(), secrets.token_hex(8)
    api = start([str(HERE), "--role", "api", "--port", str(api_port), "--token", token,
                 "--load", str(load)])  # fmt: skip
    procs.append(api)
    wait_ready(api_port, api, path="/healthz", timeout=300)
    if kind in ("epcsched", "before"):
        path = workdir / f"kubeconfig-{api_port}"
        path.write_text(json.dumps(kubeconfig(f"http://127.0.0.1:{api_port}", token)))
        profiler = [] if profile_to is None else ["-m", "cProfile", "-o", str(profile_to)]
        # `start` puts the interpreter (and the profiler) in front of `-m epcsched ...`.
        _, *program = command(
            "extender", "--kubeconfig", str(path), "--port", str(ext_port), "--log-level", "WARNING"
        )
        extender = start([*profiler, *program], pythonpath=before if kind == "before" else None)
    else:
        extender = start([str(HERE), "--role", "noop", "--port", str(ext_port)])
    procs.append(extender)
    wait_ready(ext_port, extender, timeout=300)
    auth = {"Authorization": f"Bearer {token}"}
    prioritize = profile == "extender"
    run = Run(kind, prioritize, Connection(ext_port), Connection(api_port, auth), scheduler)
    run.pid = extender.pid
    return run


def loop(
    sizes: list[int],
    pods: int,
    warmup: int,
    block: int,
    workdir: Path,
    before: Path | None = None,
    profile_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Both extenders in both profiles at each node count, blocks of pods alternating between
    all of them (sizes too, so that time per pod at one size compares with another's in one
    run); with `before`, an older extender too, in the base profile; with `profile_dir`,
    epcsched's extenders run under cProfile (`extender-<nodes>-<profile>.prof` there)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        runs: dict[tuple[int, str, str], Run] = {}
        mibs: dict[int, list[int]] = {}
        for nodes in sizes:
            mibs[nodes] = pod_sizes(warmup + pods, seed=nodes)
            load = workdir / f"cluster-{nodes}.json"
            load.write_bytes(orjson.dumps(cluster_objects(nodes, mibs[nodes])))
            names = [f"aks-dcsv3-{i:05d}" for i in range(nodes)]
            for profile in PROFILES:
                for kind in ("epcsched", "do_nothing"):
                    scheduler = Scheduler(names, seed=nodes)
                    profile_to = None
                    if profile_dir is not None and kind == "epcsched":
                        profile_to = profile_dir.resolve() / f"extender-{nodes}-{profile}.prof"
                    runs[nodes, profile, kind] = serve(
                        kind, profile, scheduler, load, workdir, procs, profile_to=profile_to
                    )
            if before is not None:
                scheduler = Scheduler(names, seed=nodes)
                runs[nodes, "extender", "before"] = serve(
                    "before", "extender", scheduler, load, workdir, procs, before=before
                )
        for (nodes, _, _), run in runs.items():
            for i in range(warmup):
                run.schedule(i, mibs[nodes][i], timed=False)
        order = list(runs.items())
        shuffle = random.Random(sum(sizes)).shuffle
        for first in range(warmup, warmup + pods, block):
            # A run is slowed by the one before it (the same extender code measured 0.04-0.06
            # of ratio apart, depending on which run preceded it): a new order every block.
            shuffle(order)
            for (nodes, _, _), run in order:
                cpu = cpu_seconds(run.pid)
                for i in range(first, min(first + block, warmup + pods)):
                    run.schedule(i, mibs[nodes][i], timed=True)
                run.cpu += cpu_seconds(run.pid) - cpu
        return [_result(nodes, pods, runs) for nodes in sizes]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _result(nodes: int, pods: int, runs: dict[tuple[int, str, str], Run]) -> dict[str, Any]:
    """The figures of the runs at `nodes` nodes, each profile's against its do-nothing run."""
    result: dict[str, Any] = {"nodes": nodes, "pods": pods, "chunk": chunk_size(nodes)}
    for profile in PROFILES:
        ours, floor = (
            runs[nodes, profile, "epcsched"].stats(),
            runs[nodes, profile, "do_nothing"].stats(),
        )
        result[profile] = {
            "epcsched": ours,
            "do_nothing": floor,
            "ratio": round(ours["pods_per_s"] / floor["pods_per_s"], 3),
            "extender_ratio": round(ours["extender_pods_per_s"] / floor["extender_pods_per_s"], 3),
            "extra_ms_per_pod": round(
                1000 / ours["extender_pods_per_s"] - 1000 / floor["extender_pods_per_s"], 3
            ),
        }
    if (nodes, "extender", "before") in runs:
        old, floor = runs[nodes, "extender", "before"].stats(), result["extender"]["do_nothing"]
        result["extender"]["before"] = old
        result["extender"]["before_ratio"] = round(old["pods_per_s"] / floor["pods_per_s"], 3)
        result["extender"]["before_extender_ratio"] = round(
            old["extender_pods_per_s"] / floor["extender_pods_per_s"], 3
        )
    return result


class InProcess:
    """`ExtenderService` over a snapshot of `nodes` nodes, driven as the loop drives it, with
    each pod bound into the snapshot before the next (what a watch event would do)."""

    def __init__(self, nodes: int) -> None:
        self.snapshot = ClusterSnapshot({EPC: 1})
        names = [f"aks-dcsv3-{i:05d}" for i in range(nodes)]
        for name in names:
            self.snapshot.upsert_node(
                NodeInfo(name, {EPC: NODE_GIB * 2**30}, cpu_milli=8000, memory=64 * 2**30)
            )
        snapshot = self.snapshot
        self.service = ExtenderService(lambda: snapshot, strategy="binpack")
        self.scheduler = Scheduler(names, seed=nodes)
        self.nodes = nodes
        self.filter: list[float] = []
        self.refresh: list[float] = []
        self.both: list[float] = []
        """Per pod, filter + prioritize + the refresh after its bind."""

    def step(self, index: int, mib: int, *, timed: bool) -> None:
        name = f"pending-{index:05d}"
        pod_raw = orjson.dumps(pod(name, None, mib, namespace=NAMESPACE))
        need = mib * 2**20
        request = body(pod_raw, self.scheduler.node_names(need))
        started = time.perf_counter()
        reply = self.service.filter(request)
        filtered = time.perf_counter() - started
        passing = orjson.loads(reply)["NodeNames"]
        second = body(pod_raw, orjson.dumps(passing))
        started = time.perf_counter()
        scored = self.service.prioritize(second)
        prioritized = time.perf_counter() - started
        scores = {e["Host"]: e["Score"] for e in orjson.loads(scored)}
        host = self.scheduler.choose(passing, scores)
        self.scheduler.bound(host, need)
        self.snapshot.upsert_pod(
            PodInfo(NAMESPACE, name, f"uid-{name}", node_name=host, phase="Running",
                    epc={EPC: need}, cpu_milli=100, memory=256 * 2**20)
        )  # fmt: skip
        # What the extender does after the bind's watch event, before the next request: the
        # update that requests used to do themselves, so it counts as work per pod.
        started = time.perf_counter()
        self.service.refresh()
        refreshed = time.perf_counter() - started
        if timed:
            self.filter.append(filtered)
            self.refresh.append(refreshed)
            self.both.append(filtered + prioritized + refreshed)

    def stats(self) -> dict[str, Any]:
        both = sorted(self.both)
        return {
            "nodes": self.nodes,
            "p50_us": round(statistics.median(both) * 1e6, 1),
            "p99_us": round(both[int(0.99 * len(both))] * 1e6, 1),
            "filter_p50_us": round(statistics.median(self.filter) * 1e6, 1),
            "refresh_p50_us": round(statistics.median(self.refresh) * 1e6, 1),
        }


def in_process(sizes: list[int], pods: int, warmup: int, block: int) -> list[dict[str, Any]]:
    """Per-pod filter + prioritize time in-process at each size, blocks alternating."""
    states = [InProcess(n) for n in sizes]
    mibs = pod_sizes(warmup + pods, seed=0)
    for state in states:
        for i in range(warmup):
            state.step(i, mibs[i], timed=False)
    for first in range(warmup, warmup + pods, block):
        for state in states:
            for i in range(first, min(first + block, warmup + pods)):
                state.step(i, mibs[i], timed=True)
    return [state.stats() for state in states]


def _count(least: int) -> Any:
    """An argparse type: a whole number of at least `least`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is less than {least}")
        return value

    return parse


def _sizes(text: str) -> list[int]:
    """Node counts, comma-separated, each at least 2 (a list to chunk and a choice to make)."""
    parse = _count(2)
    return [parse(part) for part in text.split(",")]


def _package(text: str) -> Path:
    """A directory holding an epcsched package, for `--before`."""
    path = Path(text)
    if not (path / "epcsched" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(
            f"{text}: no epcsched package there (git archive <commit> epcsched | tar -x -C {text})"
        )
    return path


def main() -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=_sizes, default=[1000, 5000], help="node counts, comma-separated"
    )
    parser.add_argument(
        "--pods", type=_count(1), default=1000, help="timed pods per extender and size"
    )
    parser.add_argument("--warmup", type=_count(1), default=50)
    parser.add_argument("--block", type=_count(1), default=50, help="pods per alternating block")
    parser.add_argument(
        "--before",
        type=_package,
        metavar="DIR",
        help="also run the extender of the epcsched package under DIR, in the base profile "
        "(e.g. `git archive <commit> epcsched | tar -x -C DIR`): before and after in one run",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run epcsched's extenders under cProfile and write their statistics to DIR "
        "(read with `python -m pstats`); slows them, so the figures are not comparable",
    )
    parser.add_argument("--role", choices=["api", "noop"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--load", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "api":
        serve_api(args.port, args.token, args.load)
        return 0
    if args.role == "noop":
        serve_noop(args.port)
        return 0
    sizes: list[int] = args.sizes
    if args.profile is not None:
        try:
            args.profile.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"--profile: cannot create {args.profile}: {exc.strerror or exc}")
    with tempfile.TemporaryDirectory() as tmp:
        result: dict[str, Any] = {
            "loop": loop(
                sizes, args.pods, args.warmup, args.block, Path(tmp), args.before, args.profile
            )
        }
    result["in_process"] = in_process(sizes, args.pods, args.warmup, args.block)
    per_pod = [r["p50_us"] for r in result["in_process"]]
    result["in_process_growth"] = round(per_pod[-1] / per_pod[0], 2)
    smallest, largest = result["loop"][0]["extender"], result["loop"][-1]["extender"]
    result["time_per_pod_growth"] = {
        key: round(largest["epcsched"][key] / smallest["epcsched"][key], 2)
        for key in ("extender_p50_ms", "loop_p50_ms")
    }
    result["targets_met"] = {
        "ratio>=0.95": all(r["extender"]["ratio"] >= 0.95 for r in result["loop"]),
        "extender_ratio>=0.95": all(
            r["extender"]["extender_ratio"] >= 0.95 for r in result["loop"]
        ),
        "time_per_pod_growth<=1.5": result["time_per_pod_growth"]["extender_p50_ms"] <= 1.5,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
