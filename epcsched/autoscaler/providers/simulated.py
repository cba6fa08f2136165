"""The `simulated` provider: node pools in memory, whose nodes appear after a delay.

It is what the demo and the fault tests run the real autoscaler loop against: asking for nodes
starts a timer per node, and when it fires the node is registered through `register` (the demo
and the tests create a Node object in the fake API server, as a cloud's node would join the
cluster). Removing a node calls `unregister`. Faults are injected per pool (`fail_next`), and a
pool can be told that its nodes join without EPC (`epc=False`): a device plugin that never
registers, which the autoscaler must give up on after maxNodeProvisionTime.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from epcsched.autoscaler.providers.base import PoolSize, ProviderError
from epcsched.config import NodePoolSettings

log = logging.getLogger("epcsched.autoscaler.simulated")

NodeHook = Callable[[NodePoolSettings, str], Awaitable[None]]


def node_object(pool: NodePoolSettings, name: str, *, epc: bool = True) -> dict[str, Any]:
    """A Ready Node of `pool`'s template, as the API would show it once it joined."""
    template = pool.template
    resources = {str(k): str(v) for k, v in (template.resources if template else {}).items()}
    if not epc:
        resources = {k: v for k, v in resources.items() if "epc" not in k.lower()}
    labels = {**pool.node_selector, **(template.labels if template else {})}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": [dict(t) for t in template.taints]} if template else {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


class SimulatedProvider:
    """In-memory pools: `set_target` starts nodes that register `delay` seconds later."""

    def __init__(
        self,
        *,
        delay: float = 2.0,
        register: NodeHook | None = None,
        unregister: NodeHook | None = None,
        initial: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.delay = delay
        self._register = register
        self._unregister = unregister
        self.nodes: dict[str, list[str]] = {k: list(v) for k, v in (initial or {}).items()}
        """Registered nodes per pool."""
        self.booting: dict[str, dict[str, asyncio.Task[None]]] = {}
        self.created: dict[str, int] = {}
        self.calls: list[tuple[str, str, int]] = []
        """(method, pool, target) of every change asked for, for tests and the demo."""
        self._fail: dict[str, list[str]] = {}
        self._fail_reads: dict[str, list[str]] = {}
        self.epc: dict[str, bool] = {}
        """Pools whose nodes join without EPC allocatable (False)."""

    def fail_next(self, pool: str, message: str, count: int = 1, *, reads: bool = False) -> None:
        """The next `count` changes asked of `pool` (or reads of its size, with `reads`) fail
        with `message`, as a cloud out of quota refuses to scale but still answers reads."""
        faults = self._fail_reads if reads else self._fail
        faults.setdefault(pool, []).extend([message] * count)

    def clear_faults(self) -> None:
        self._fail.clear()
        self._fail_reads.clear()

    def _check(self, pool: NodePoolSettings, *, read: bool = False) -> None:
        pending = (self._fail_reads if read else self._fail).get(pool.name)
        if pending:
            raise ProviderError(f"simulated pool {pool.name}: {pending.pop(0)}")

    def target(self, pool: str) -> int:
        return len(self.nodes.get(pool, ())) + len(self.booting.get(pool, {}))

    async def size(self, pool: NodePoolSettings) -> PoolSize:
        self._check(pool, read=True)
        return PoolSize(target=self.target(pool.name))

    async def set_target(self, pool: NodePoolSettings, target: int) -> None:
        self._check(pool)
        self.calls.append(("set_target", pool.name, target))
        current = self.target(pool.name)
        booting = self.booting.setdefault(pool.name, {})
        for _ in range(target - current):
            number = self.created.get(pool.name, 0)
            self.created[pool.name] = number + 1
            name = f"{pool.name}-sim-{number:05d}"
            booting[name] = asyncio.create_task(self._boot(pool, name), name=f"boot-{name}")
            log.info(
                "simulated pool %s: node %s asked for, joins in %.1fs", pool.name, name, self.delay
            )
        for _ in range(current - target):
            # Nodes not yet joined go first, then the newest: as a cloud pool shrinks.
            if booting:
                name, task = booting.popitem()
                task.cancel()
            else:
                name = self.nodes[pool.name].pop()
                await self._gone(pool, name)

    async def remove_node(self, pool: NodePoolSettings, node: str, target: int) -> None:
        self._check(pool)
        self.calls.append(("remove_node", pool.name, target))
        nodes = self.nodes.setdefault(pool.name, [])
        if node in nodes:
            nodes.remove(node)
            await self._gone(pool, node)
        elif node in self.booting.get(pool.name, {}):
            self.booting[pool.name].pop(node).cancel()
        if self.target(pool.name) != target:
            await self.set_target(pool, target)

    async def close(self) -> None:
        for tasks in self.booting.values():
            for task in tasks.values():
                task.cancel()
        self.booting.clear()

    async def _boot(self, pool: NodePoolSettings, name: str) -> None:
        await asyncio.sleep(self.delay)
        self.booting.get(pool.name, {}).pop(name, None)
        self.nodes.setdefault(pool.name, []).append(name)
        log.info("simulated pool %s: node %s joined", pool.name, name)
        if self._register is not None:
            try:
                await self._register(pool, name)
            except Exception as exc:  # a hook error must not kill the pool's bookkeeping
                log.warning(
                    "simulated pool %s: registering node %s failed: %s", pool.name, name, exc
                )

    async def _gone(self, pool: NodePoolSettings, name: str) -> None:
        log.info("simulated pool %s: node %s removed", pool.name, name)
        if self._unregister is not None:
            try:
                await self._unregister(pool, name)
            except Exception as exc:
                log.warning("simulated pool %s: removing node %s failed: %s", pool.name, name, exc)
