"""kube-scheduler's placement rules that read only the pod and the node, with its wording.

The planner and the simulator decide where pods would go; kube-scheduler decides where they do go.
When the two disagree, an autoscaler adds nodes that no pod can use (a pod whose nodeSelector names
another pool) or removes a node whose pods have nowhere to go. So the rules here are the default
filter plugins' semantics, read from the pod and node records alone, in the scheduler's order:
NodeUnschedulable, TaintToleration, NodeAffinity (nodeSelector plus required node affinity). The
rules that depend on what already runs on the node (CPU, memory, pod slots, EPC) are vectorised in
`core.placement` and `core.fit`. Each rule returns None when it admits the node and otherwise the
reason kube-scheduler would give, so a report reads like `kubectl describe pod`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from epcsched.model import (
    NodeInfo,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    PodInfo,
    Taint,
    Toleration,
)

NODE_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
TOLERATION_OPERATORS = ("Equal", "Exists")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
#: The taint a cordoned node is treated as having (NodeUnschedulable plugin).
UNSCHEDULABLE_TAINT = Taint("node.kubernetes.io/unschedulable", "", "NoSchedule")
#: Effects that keep a new pod off a node; PreferNoSchedule only lowers the node's score.
FILTERED_EFFECTS = frozenset({"NoSchedule", "NoExecute"})

REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_NOT_READY = "node(s) were not ready"
REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_TOO_MANY_PODS = "Too many pods"

_INT64 = re.compile(r"[+-]?[0-9]+")


def parse_int64(text: str) -> int | None:
    """`text` as Go's strconv.ParseInt(text, 10, 64) reads it, or None where that fails."""
    if not _INT64.fullmatch(text):
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


@dataclass(frozen=True, slots=True)
class Constraints:
    """The parts of a pod that the node rules read, hashable so verdicts can be cached on it."""

    node_selector: tuple[tuple[str, str], ...] = ()
    """Labels the node must carry with exactly these values, sorted by key."""
    node_affinity: tuple[NodeSelectorTerm, ...] = ()
    """Required node affinity terms (ORed; a term's requirements are ANDed); () = none."""
    tolerations: tuple[Toleration, ...] = ()

    @classmethod
    def of(cls, pod: PodInfo) -> Constraints:
        if not (pod.node_selector or pod.node_affinity or pod.tolerations):
            return NO_CONSTRAINTS
        return cls(tuple(sorted(pod.node_selector.items())), pod.node_affinity, pod.tolerations)

    @property
    def reads_node_name(self) -> bool:
        """Whether a verdict depends on the node's name (a `matchFields` requirement), not only
        on its labels and taints."""
        return any(r.field for term in self.node_affinity for r in term)


NO_CONSTRAINTS = Constraints()


# ----- TaintToleration ----------------------------------------------------------------------
def tolerates(toleration: Toleration, taint: Taint) -> bool:
    """Whether `toleration` tolerates `taint` (Toleration.ToleratesTaint in k8s.io/api)."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator == "Exists":
        return True
    if toleration.operator in ("", "Equal"):
        return toleration.value == taint.value
    return False


def untolerated_taint(tolerations: Iterable[Toleration], taints: Iterable[Taint]) -> Taint | None:
    """The first NoSchedule/NoExecute taint no toleration tolerates, or None."""
    held = tuple(tolerations)
    for taint in taints:
        if taint.effect in FILTERED_EFFECTS and not any(tolerates(t, taint) for t in held):
            return taint
    return None


def taint_toleration(constraints: Constraints, node: NodeInfo) -> str | None:
    taint = untolerated_taint(constraints.tolerations, node.taints)
    if taint is None:
        return None
    return f"node(s) had untolerated taint {{{taint.key}: {taint.value}}}"


# ----- NodeUnschedulable --------------------------------------------------------------------
def node_unschedulable(constraints: Constraints, node: NodeInfo) -> str | None:
    """A cordoned node admits only pods that tolerate `node.kubernetes.io/unschedulable`."""
    if not node.unschedulable:
        return None
    if any(tolerates(t, UNSCHEDULABLE_TAINT) for t in constraints.tolerations):
        return None
    return REASON_UNSCHEDULABLE


# ----- NodeAffinity -------------------------------------------------------------------------
def requirement_matches(
    requirement: NodeSelectorRequirement, labels: Mapping[str, str], name: str
) -> bool:
    """One node selector requirement against a node's labels (or its name, for matchFields)."""
    op = requirement.operator
    if requirement.field:
        present, value = True, name
    else:
        found = labels.get(requirement.key)
        present, value = found is not None, found or ""
    if op == "In":
        return present and value in requirement.values
    if op == "NotIn":
        return not present or value not in requirement.values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(requirement.values) == 1:
        # Both sides must read as integers; a label that does not simply fails to match.
        have = parse_int64(value)
        bound = parse_int64(requirement.values[0])
        if have is None or bound is None:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


def term_matches(term: NodeSelectorTerm, labels: Mapping[str, str], name: str) -> bool:
    """All of a term's requirements hold; a term with none matches nothing (kube-scheduler)."""
    return bool(term) and all(requirement_matches(r, labels, name) for r in term)


def node_affinity(constraints: Constraints, node: NodeInfo) -> str | None:
    """The pod's nodeSelector (every label equal) and required node affinity (any term)."""
    labels = node.labels
    if any(labels.get(key) != value for key, value in constraints.node_selector):
        return REASON_AFFINITY
    terms = constraints.node_affinity
    if terms and not any(term_matches(term, labels, node.name) for term in terms):
        return REASON_AFFINITY
    return None


# ----- all of them --------------------------------------------------------------------------
def refusal(constraints: Constraints, node: NodeInfo) -> str | None:
    """Why kube-scheduler's pod-and-node filters refuse `node`, or None when they admit it.

    A node that is not Ready takes no pod: the node lifecycle controller would have tainted it,
    and a node still booting is counted by the planner separately.
    """
    if not node.ready:
        return REASON_NOT_READY
    return (
        node_unschedulable(constraints, node)
        or taint_toleration(constraints, node)
        or node_affinity(constraints, node)
    )


def pod_count(pods_on_node: int, node: NodeInfo) -> str | None:
    """NodeResourcesFit on pod slots: a node holds at most `pods` pods."""
    return REASON_TOO_MANY_PODS if pods_on_node + 1 > node.pods else None
