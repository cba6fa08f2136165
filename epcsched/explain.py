"""`epcsched explain`: why an enclave pod stays Pending, node by node.

Runs the same fit and scores the extender serves, plus kube-scheduler's own CPU, memory and
pod-count check, over a snapshot, and prints one row per node.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from typing import Any, TextIO, cast

import aiohttp
import msgspec
import numpy as np

from epcsched import logs
from epcsched.cli import CommandError
from epcsched.config import STRATEGIES, Config, load_config
from epcsched.core.fit import PodRequest, fit_masks, reasons
from epcsched.core.placement import all_slots, resources_fit
from epcsched.core.rules import refusal
from epcsched.core.score import score
from epcsched.core.snapshot import ClusterSnapshot, Headroom
from epcsched.kube.client import add_api_arguments
from epcsched.lookalike import describe, pod_lookalikes
from epcsched.objects import ObjectError, Pod, pod_info
from epcsched.quantity import format_bytes
from epcsched.yamlfile import FileFormatError, load_document, parse_documents


@dataclass(frozen=True, slots=True)
class Row:
    node: str
    fits: bool
    score: int | None
    epc: str
    reason: str


def explain(
    snapshot: ClusterSnapshot, request: PodRequest, strategy: str, *, prefer_non_sgx: bool = True
) -> list[Row]:
    """One row per node, in name order: fit, score among the fitting nodes, and why not."""
    names, slots = all_slots(snapshot)
    if not names:
        return []
    masks = fit_masks(snapshot, request, slots)
    kube_ok = resources_fit(snapshot, request, slots)
    feasible = masks.ok & kube_ok
    scores = np.zeros(len(names), dtype=np.int64)
    if feasible.any():
        scores[feasible] = score(
            snapshot, request, slots[feasible], strategy, prefer_non_sgx=prefer_non_sgx
        )
    texts = reasons(snapshot, request, slots)
    rows = []
    for i, name in enumerate(names):
        why = [] if masks.ok[i] else [texts[i]]
        if not kube_ok[i]:
            why.append("kube-scheduler: " + _kube_reason(snapshot, request, int(slots[i])))
        rows.append(
            Row(
                node=name,
                fits=bool(feasible[i]),
                score=int(scores[i]) if feasible[i] else None,
                epc=_epc_summary(snapshot, int(slots[i])),
                reason="; ".join(why),
            )
        )
    return rows


def _epc_summary(snapshot: ClusterSnapshot, slot: int) -> str:
    parts = []
    one = np.array([slot], dtype=np.int64)
    for name, column in snapshot.epc.items():
        if column.has[slot]:
            free = format_bytes(max(int(snapshot.free(name, one)[0]), 0))
            allocatable = format_bytes(int(column.allocatable[slot]))
            kept = int(column.headroom[slot])
            after = f" after {format_bytes(kept)} headroom" if kept else ""
            parts.append(f"{free} free of {allocatable} {name}{after}")
    return ", ".join(parts) or "no EPC"


def _kube_reason(snapshot: ClusterSnapshot, request: PodRequest, slot: int) -> str:
    info = snapshot.infos[slot]
    if info is None:
        return "unknown node"
    # Readiness, cordons, taints and node affinity/selector, in kube-scheduler's words.
    refused = refusal(request.constraints, info)
    if refused is not None:
        return refused
    out = []
    if request.cpu_milli and snapshot.cpu_requested[slot] + request.cpu_milli > info.cpu_milli:
        out.append("insufficient cpu")
    if request.memory and snapshot.memory_requested[slot] + request.memory > info.memory:
        out.append("insufficient memory")
    if snapshot.pod_count[slot] >= info.pods:
        out.append("too many pods")
    return ", ".join(out)


def render(rows: list[Row], out: TextIO) -> None:
    header = ("NODE", "FITS", "SCORE", "EPC", "REASON")
    table = [header] + [
        (
            r.node,
            "yes" if r.fits else "no",
            "-" if r.score is None else str(r.score),
            r.epc,
            r.reason,
        )
        for r in rows
    ]
    widths = [max(len(row[c]) for row in table) for c in range(len(header) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")


def load_pod(path: str, config: Config) -> tuple[Pod, PodRequest]:
    """The pod in a file, or on standard input for `-` (`kubectl get pod x -o yaml | ...`)."""
    try:
        if path == "-":
            documents = parse_documents(sys.stdin.buffer.read(), "<stdin>")
            if len(documents) != 1:
                raise FileFormatError(
                    f"<stdin>: expected one Pod, found {len(documents)} documents"
                )
            data = documents[0]
        else:
            data = load_document(path)
    except FileFormatError as exc:
        raise CommandError(str(exc)) from None
    where = "<stdin>" if path == "-" else path
    if not isinstance(data, dict) or data.get("kind", "Pod") != "Pod":
        raise CommandError(f"{where}: expected a Pod object")
    try:
        pod = msgspec.convert(data, Pod)
    except msgspec.ValidationError as exc:
        raise CommandError(f"{where}: {exc}") from None
    return pod, pod_request(pod, config, where)


def pod_request(pod: Pod, config: Config, where: str) -> PodRequest:
    try:
        return PodRequest.of(pod_info(pod, config.epc.resources))
    except ObjectError as exc:
        raise CommandError(f"{where}: {exc}") from None


async def from_cluster(config: Config, args: argparse.Namespace) -> tuple[ClusterSnapshot, Pod]:
    """The cluster's nodes and pods, and the pod `NAMESPACE/NAME` (or `NAME` in default), from
    the API server; the pod itself is left out of the snapshot if it is already bound, so its
    own EPC does not count against it."""
    from kubernetes_asyncio import client

    from epcsched.kube.client import KubeConfigError, api_client, load_from_args
    from epcsched.kube.informer import InformerState

    namespace, _, name = args.pod.rpartition("/")
    namespace = namespace or "default"
    if not name or "/" in namespace:
        raise CommandError(f"POD: expected NAMESPACE/NAME with --kubeconfig, got {args.pod!r}")
    try:
        configuration = await load_from_args(args)
    except KubeConfigError as exc:
        raise CommandError(f"--kubeconfig: {exc}") from None
    async with api_client(configuration) as api:
        try:
            response = cast(
                aiohttp.ClientResponse,
                await client.CoreV1Api(api).read_namespaced_pod(
                    name, namespace, _preload_content=False, _request_timeout=30
                ),
            )
            try:
                raw = await response.read()
            finally:
                response.release()
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            raise CommandError(
                f"--kubeconfig: cannot reach the API server at {configuration.host}: "
                f"{str(exc) or type(exc).__name__}"
            ) from None
    if response.status == 404:
        raise CommandError(f"POD: no pod {namespace}/{name} in the cluster")
    if response.status != 200:
        raise CommandError(
            f"--kubeconfig: the API server answered {response.status} {response.reason} reading "
            f"pod {namespace}/{name}"
        )
    try:
        pod = msgspec.json.decode(raw, type=Pod)
    except msgspec.DecodeError as exc:
        raise CommandError(f"POD: the API server's pod {namespace}/{name}: {exc}") from None
    state = InformerState(configuration, config)
    await state.start()
    try:
        await state.wait_synced(timeout=60)
    except TimeoutError:
        raise CommandError(
            f"--kubeconfig: could not list nodes and pods from {configuration.host} in 60 s"
        ) from None
    finally:
        await state.stop()
    snapshot = state.snapshot
    key = f"{namespace}/{name}"
    if key in snapshot.pods:
        snapshot.remove_pod(key)
    return snapshot, pod


def headroom_note(headroom: Headroom) -> str:
    """What `epc.headroom` keeps free on each node, in words."""
    parts = []
    if headroom.fraction:
        parts.append(f"{float(headroom.fraction) * 100:g}% of each node's EPC")
    if headroom.bytes:
        parts.append(format_bytes(headroom.bytes))
    if not parts:
        return "No EPC headroom kept (epc.headroom: 0)."
    return f"Headroom kept free and subtracted above: {' + '.join(parts)} (epc.headroom)."


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "explain",
        help="show, node by node, whether a pod's EPC fits and how each node scores",
        description="Explain the extender's decision for one pod over a cluster snapshot.",
    )
    parser.add_argument(
        "pod",
        metavar="POD",
        help="the pod: a YAML or JSON file, - for standard input, or NAMESPACE/NAME in the "
        "cluster with --kubeconfig",
    )
    parser.add_argument(
        "--snapshot",
        action="append",
        default=[],
        metavar="FILE",
        help="cluster snapshot from `kubectl get nodes,pods -A -o json`; repeatable",
    )
    parser.add_argument(
        "--kubeconfig", metavar="FILE", help="read the cluster and the pod from this API server"
    )
    add_api_arguments(parser)
    parser.add_argument("--config", metavar="FILE", help="epcsched YAML configuration")
    parser.add_argument("--strategy", choices=STRATEGIES, help="scoring strategy")
    logs.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from epcsched.kube.snapshot import load_snapshot

    config = load_config(args.config)
    strategy = args.strategy or config.extender.strategy
    if args.snapshot and args.kubeconfig:
        raise CommandError("--snapshot and --kubeconfig: give one source of cluster state")
    if args.kubeconfig:
        snapshot, pod = asyncio.run(from_cluster(config, args))
        request = pod_request(pod, config, args.pod)
        empty = f"--kubeconfig: no Node in the API server of {args.kubeconfig}"
    elif args.snapshot:
        snapshot = load_snapshot(args.snapshot, config)
        pod, request = load_pod(args.pod, config)
        empty = f"--snapshot: no Node in {', '.join(args.snapshot)}"
    else:
        raise CommandError("--snapshot or --kubeconfig: give a cluster snapshot or an API server")
    if len(snapshot) == 0:
        raise CommandError(
            f"{empty} (explain needs the cluster's nodes: `kubectl get nodes,pods -A -o json`)"
        )
    rows = explain(snapshot, request, strategy, prefer_non_sgx=config.extender.prefer_non_sgx)
    render(rows, sys.stdout)
    fitting = sum(r.fits for r in rows)
    print(f"\n{fitting} of {len(rows)} nodes fit (strategy {strategy}).")
    print(headroom_note(snapshot.headroom))
    bound = pod.spec.nodeName if pod.spec else None
    if bound:
        print(f"note: the pod is already bound to {bound}; shown as if it were placed again.")
    for name, nearest in pod_lookalikes(pod, config.epc.resources):
        print(f"warning: the pod {describe(name, nearest)}.")
    return 0
