"""What every node-pool provider offers the autoscaler loop.

The loop only ever sets absolute sizes (idempotent: repeating a call after a crash or a lost
reply changes nothing) and removes nodes it has chosen and drained itself. A provider never
decides anything; it translates these calls to one platform (Cluster API, AKS, in memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from epcsched.config import NodePoolSettings


class ProviderError(Exception):
    """A provider call that failed; the loop backs the pool off and says why (the message).

    `retryable` marks a refusal that is not the pool's fault, such as Azure's 409 while another
    operation on the pool runs: the loop tries again next time without backing off.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class PoolSize:
    """A pool's size as its platform reports it."""

    target: int
    """The size the platform is asked to have (MachineDeployment replicas, agent pool count)."""
    busy: bool = False
    """An operation on the pool is still running (e.g. an Azure long-running operation): the
    loop does not send another until it ends."""


class NodePoolProvider(Protocol):
    """One platform's pools. Every method may raise ProviderError, and nothing else escapes."""

    async def size(self, pool: NodePoolSettings) -> PoolSize:
        """The pool's current target size. Reports (raises ProviderError) a failure of the
        last operation started on this pool, once, so the loop can back the pool off."""
        ...

    async def set_target(self, pool: NodePoolSettings, target: int) -> None:
        """Ask for exactly `target` nodes. May return before the nodes exist (or before a
        long-running operation ends: `size().busy` says so); must not block the loop."""
        ...

    async def remove_node(self, pool: NodePoolSettings, node: str, target: int) -> None:
        """Remove exactly the Kubernetes node `node` (already drained) and leave the pool at
        `target` nodes. A node that is already gone is not an error."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
