"""`epcsched explain`: why an enclave pod stays Pending, node by node.

Runs the same fit and scores the extender serves, plus kube-scheduler's own CPU, memory and
pod-count check, over a snapshot, and prints one row per node.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, TextIO

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
from epcsched.lookalike import describe, pod_lookalikes
from epcsched.objects import ObjectError, Pod, pod_info
from epcsched.quantity import format_bytes
from epcsched.yamlfile import FileFormatError, load_document


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
    try:
        data = load_document(path)
    except FileFormatError as exc:
        raise CommandError(str(exc)) from None
    if not isinstance(data, dict) or data.get("kind", "Pod") != "Pod":
        raise CommandError(f"{path}: expected a Pod object")
    try:
        pod = msgspec.convert(data, Pod)
    except msgspec.ValidationError as exc:
        raise CommandError(f"{path}: {exc}") from None
    try:
        return pod, PodRequest.of(pod_info(pod, config.epc.resources))
    except ObjectError as exc:
        raise CommandError(f"{path}: {exc}") from None


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
    parser.add_argument("pod", metavar="POD_FILE", help="the pod (YAML or JSON)")
    parser.add_argument(
        "--snapshot", action="append", required=True, metavar="FILE", help="cluster snapshot"
    )
    parser.add_argument("--config", metavar="FILE", help="epcsched YAML configuration")
    parser.add_argument("--strategy", choices=STRATEGIES, help="scoring strategy")
    logs.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from epcsched.kube.snapshot import load_snapshot

    config = load_config(args.config)
    strategy = args.strategy or config.extender.strategy
    snapshot = load_snapshot(args.snapshot, config)
    if len(snapshot) == 0:
        raise CommandError(
            f"--snapshot: no Node in {', '.join(args.snapshot)} (give the cluster's nodes, "
            "e.g. `kubectl get nodes,pods -A -o json`)"
        )
    pod, request = load_pod(args.pod, config)
    rows = explain(snapshot, request, strategy, prefer_non_sgx=config.extender.prefer_non_sgx)
    render(rows, sys.stdout)
    fitting = sum(r.fits for r in rows)
    print(f"\n{fitting} of {len(rows)} nodes fit (strategy {strategy}).")
    print(headroom_note(snapshot.headroom))
    for name, nearest in pod_lookalikes(pod, config.epc.resources):
        print(f"warning: the pod {describe(name, nearest)}.")
    return 0
