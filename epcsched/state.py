"""The interface between whatever keeps cluster state and the programs that read it.

A snapshot file (`SnapshotState`) and a watch-fed informer cache both implement `ClusterState`:
they own a `ClusterSnapshot`, say whether it is ready, and describe their health for `/readyz`.
The extender never knows which one it has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from epcsched.core.snapshot import ClusterSnapshot


class ClusterState(Protocol):
    """Cluster state as the extender and the autoscaler consume it."""

    @property
    def snapshot(self) -> ClusterSnapshot:
        """The current snapshot; mutated only by the state's owner, on the event loop."""
        ...

    change_listeners: list[Callable[[], None]]
    """Called on the event loop after the owner changed the snapshot (watch events applied,
    a list replaced); each must be quick, as the next event waits for it."""

    def ready(self) -> bool:
        """True once the state reflects the cluster (first list done, file loaded)."""
        ...

    def detail(self) -> dict[str, object]:
        """Health facts for `/readyz` (sources, degraded telemetry, counts)."""
        ...

    async def start(self) -> None:
        """Begin feeding the snapshot (watches, polls); returns once started."""
        ...

    async def stop(self) -> None:
        """Stop feeding; idempotent."""
        ...


class SnapshotState:
    """State whose owner feeds the snapshot directly (files loaded once, a simulated clock):
    always ready, nothing to start."""

    def __init__(
        self,
        snapshot: ClusterSnapshot,
        *,
        sources: list[str] | None = None,
        source: str = "snapshot",
    ) -> None:
        self._snapshot = snapshot
        self._sources = list(sources or [])
        self._source = source
        self.change_listeners: list[Callable[[], None]] = []
        """Never called here: whoever feeds the snapshot directly calls them if it wants."""

    @property
    def snapshot(self) -> ClusterSnapshot:
        return self._snapshot

    def ready(self) -> bool:
        return True

    def detail(self) -> dict[str, object]:
        detail: dict[str, object] = {"source": self._source}
        if self._sources:
            detail["files"] = self._sources
        detail.update(nodes=len(self._snapshot), pods=len(self._snapshot.pods))
        return detail

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
