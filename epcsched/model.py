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
    owner_kind: str | None = None
    """Kind of the controlling owner (DaemonSet pods are not moved by scale-down)."""

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
