"""Plain records of the cluster that every program shares: one node, one pod, one node pool.

These are what the policy core reasons about. They are built from Kubernetes objects (see
`epcsched.objects`) or from simulated workloads, and they never refer back to the API.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, slots=True)
class Taint:
    """A node taint, as kube-scheduler's TaintToleration plugin reads it."""

    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True, slots=True)
class Toleration:
    """A pod toleration. `operator` is `Equal` or `Exists`; an empty `effect` matches every effect
    and an empty `key` (with `Exists`) matches every taint."""

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""


@dataclass(frozen=True, slots=True)
class NodeSelectorRequirement:
    """One expression of a required node affinity term: `In`, `NotIn`, `Exists`, `DoesNotExist`,
    `Gt` or `Lt` over a node label (or, with `field`, over the node's `metadata.name`)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()
    field: bool = False
    """A `matchFields` requirement: `key` is `metadata.name` and it reads the node's name."""


NodeSelectorTerm = tuple[NodeSelectorRequirement, ...]
"""Requirements that must all hold (ANDed). A term with none matches no node."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What placement needs to know about one node; EPC in bytes per advertised resource name."""

    name: str
    epc_allocatable: dict[str, int] = field(default_factory=dict)
    """Allocatable EPC in bytes, keyed by the resource name the node advertises."""
    cpu_milli: int = 0
    """Allocatable CPU in millicores."""
    memory: int = 0
    """Allocatable memory in bytes."""
    pods: int = 110
    """Allocatable pod slots."""
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False
    ready: bool = True

    @property
    def epc_total(self) -> int:
        """All EPC the node advertises, in bytes, whatever the names."""
        return sum(self.epc_allocatable.values())


@dataclass(frozen=True, slots=True)
class PodInfo:
    """One pod's effective requests (Kubernetes' rule) and where it is bound, if anywhere."""

    namespace: str
    name: str
    uid: str = ""
    node_name: str | None = None
    phase: str = "Pending"
    epc: dict[str, int] = field(default_factory=dict)
    """Effective EPC request in bytes, keyed by the resource name the pod asks for."""
    cpu_milli: int = 0
    memory: int = 0
    node_selector: dict[str, str] = field(default_factory=dict)
    node_affinity: tuple[NodeSelectorTerm, ...] = ()
    """Required node affinity terms, ORed; empty means no constraint."""
    tolerations: tuple[Toleration, ...] = ()
    owner_kind: str | None = None
    """Kind of the controlling owner; None for a pod no controller would recreate."""
    marked_unschedulable: bool = False
    """kube-scheduler gave up on it for now: condition PodScheduled=False, reason Unschedulable."""
    safe_to_evict: bool | None = None
    """Annotation `cluster-autoscaler.kubernetes.io/safe-to-evict` ("true"/"false"), else None."""
    mirror: bool = False
    """A static pod's mirror (annotation `kubernetes.io/config.mirror`): the kubelet owns it."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def terminal(self) -> bool:
        """Succeeded and Failed pods hold no resources."""
        return self.phase in TERMINAL_PHASES

    @property
    def epc_total(self) -> int:
        return sum(self.epc.values())

    @property
    def node_bound(self) -> bool:
        """DaemonSet and mirror pods belong to their node: a drain neither moves them nor is
        blocked by them."""
        return self.mirror or self.owner_kind == "DaemonSet"

    @property
    def blocks_drain(self) -> bool:
        """Whether this pod keeps its node from being drained (cluster-autoscaler's rule): it is
        marked not safe to evict, or nothing would recreate it and it is not marked safe."""
        if self.terminal or self.node_bound:
            return False
        if self.safe_to_evict is not None:
            return not self.safe_to_evict
        return self.owner_kind is None
