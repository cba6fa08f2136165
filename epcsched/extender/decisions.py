"""One log line per pod the extender turned nodes away for, grouped by reason.

An operator asking "why is my enclave Pending?" greps the extender's log for the pod. A line per
failed node would be thousands of lines per scheduling attempt; one line per pod, with how many
nodes failed and the distinct reasons with their counts, is what can be read and kept. Reasons
that differ only in figures (free EPC differs from node to node) count as one reason, shown with
the figures of one node as an example: the figures come after the words that say what is
wrong, so reasons are grouped by their text up to the first digit.

The service hands over the failures it computed (`FilterFailures`: names, reasons and the pod's
own JSON) only when it failed a node, so a filter that passes every node costs nothing here and
nothing is read back out of the reply. The handler runs it after the reply has been handed to
the socket, so kube-scheduler does not wait for it.
"""

from __future__ import annotations

import logging
import re
from itertools import repeat

import msgspec

from epcsched.extender.service import FilterFailures

log = logging.getLogger("epcsched.extender.decisions")

_WORDS = re.compile(r"[^0-9]*")
"""A reason up to its first figure."""
_GROUP_LIMIT = 20_000
"""Failed nodes beyond which reasons are counted, not grouped: kube-scheduler sends at most
5,000 nodes, so only an absurd request (names the cache does not know) gets here."""
_MAX_REASONS = 5
_MAX_GROUPS = 20
"""Distinct reasons spelled out in the message; the JSON fields carry them all."""


class _Meta(msgspec.Struct):
    name: str = ""
    namespace: str | None = None
    uid: str = ""


class _PodMeta(msgspec.Struct):
    metadata: _Meta | None = None


_meta_decoder = msgspec.json.Decoder(_PodMeta)


def group_reasons(reasons: list[str]) -> list[tuple[str, int]]:
    """Distinct reasons (figures aside) with how many nodes gave each, most common first; each
    shown as the first text of its group.

    Reasons for one pod fall into a few groups, so each group is counted in one pass of C-level
    string comparisons over the reasons left, instead of Python work per node.
    """
    grouped: list[tuple[str, int]] = []
    rest = reasons
    while rest and len(grouped) < _MAX_GROUPS:
        first = rest[0]
        match = _WORDS.match(first)
        words = match.group() if match else first
        if len(words) == len(first):  # no figures: the text is the reason
            count = rest.count(first)
            rest = [r for r in rest if r != first] if count < len(rest) else []
        else:
            count = sum(map(str.startswith, rest, repeat(words)))
            rest = [r for r in rest if not r.startswith(words)] if count < len(rest) else []
        grouped.append((first, count))
    grouped.sort(key=lambda g: (-g[1], g[0]))
    if rest:
        grouped.append(("other reasons", len(rest)))
    return grouped


def pod_identity(pod_raw: bytes) -> tuple[str, str]:
    """`namespace/name` and uid of a pod's JSON ("" where it has none)."""
    try:
        pod = _meta_decoder.decode(pod_raw)
    except msgspec.DecodeError:
        return "", ""
    meta = pod.metadata or _Meta()
    return f"{meta.namespace or 'default'}/{meta.name}", meta.uid


def log_failures(failures: FilterFailures) -> None:
    """Log the pod's failed nodes at INFO, one line with the reasons grouped."""
    if not log.isEnabledFor(logging.INFO):
        return
    failed_count, unresolvable_count = len(failures.failed), len(failures.unresolvable)
    if not failed_count and not unresolvable_count:
        return
    if failed_count + unresolvable_count > _GROUP_LIMIT:
        grouped = [
            ("reasons not grouped: too many failed nodes", failed_count + unresolvable_count)
        ]
    else:
        grouped = group_reasons([*failures.failed.values(), *failures.unresolvable.values()])
    pod, uid = pod_identity(failures.pod_raw)
    shown = "; ".join(f"{count}× {text}" for text, count in grouped[:_MAX_REASONS])
    if len(grouped) > _MAX_REASONS:
        shown += f"; and {len(grouped) - _MAX_REASONS} other reasons"
    log.info(
        "pod %s (uid %s): failed %d nodes (%d where preemption could help, %d where it cannot): %s",
        pod,
        uid or "none",
        failed_count + unresolvable_count,
        failed_count,
        unresolvable_count,
        shown,
        extra={
            "pod": pod,
            "uid": uid,
            "failedNodes": failed_count,
            "unresolvableNodes": unresolvable_count,
            "reasons": dict(grouped),
        },
    )
