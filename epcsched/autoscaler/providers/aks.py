"""The `aks` node-pool provider: an AKS agent pool's size through the Azure Resource Manager.

AKS pools are sized by the agent pool's `count`; changing it, or deleting chosen machines, is an
ARM long-running operation that takes minutes. The autoscaler loop must never wait for one, so
each operation this provider starts is polled by a background task per pool: `size().busy` is
true while it (or any other operation AKS reports through the pool's provisioningState) runs, and
its failure is raised once by the pool's next `size()`, which is how the loop learns to back off.

The Azure SDK is an optional extra (`pip install epcsched[aks]`): it is imported only when a
provider is built, so every other program works without it. Authentication is
`DefaultAzureCredential` (in AKS: workload identity through AZURE_CLIENT_ID, AZURE_TENANT_ID and
AZURE_FEDERATED_TOKEN_FILE); tests and sovereign clouds inject a credential, the ARM endpoint
(`base_url`) and the CA to trust (`connection_verify`), never through process-wide settings.

Every failure leaves as ProviderError with one line naming the pool and the ARM resource; a 409
(another operation on the pool) or 429 (throttled) is `retryable`, since it is not the pool's
fault.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from epcsched.autoscaler.providers.base import PoolSize, ProviderError
from epcsched.config import NodePoolSettings

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.core.polling import AsyncLROPoller
    from azure.mgmt.containerservice.aio import ContainerServiceClient

log = logging.getLogger("epcsched.autoscaler.aks")

EXTRA_HINT = "the aks provider needs `pip install epcsched[aks]`"
SDK_MODULES = (
    "azure.core.exceptions",
    "azure.mgmt.containerservice.aio",
    "azure.identity.aio",
)
"""What the provider imports; `require_sdk` checks them before anything else is done."""

SETTINGS_KEYS = ("subscriptionId", "resourceGroup", "cluster", "agentPool")
TERMINAL_STATES = frozenset({"succeeded", "failed", "canceled"})
RETRYABLE_STATUS = frozenset({409, 429})

# Azure's naming rules, so a typo is a config error at start-up instead of a 404 at scale time.
_NAME_RULES = {
    "resourceGroup": (
        re.compile(r"[-\w.()]{0,89}[-\w()]"),
        "1-90 letters, digits, '_', '-', '.', '(' or ')', not ending in '.'",
    ),
    "cluster": (
        re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"),
        "1-63 letters, digits, '_' or '-', starting and ending with a letter or digit",
    ),
    "agentPool": (
        re.compile(r"[a-z][a-z0-9]{0,11}"),
        "1-12 lowercase letters or digits, starting with a letter",
    ),
}


def require_sdk(modules: Sequence[str] = SDK_MODULES) -> None:
    """Raise ProviderError with the install hint unless every module of the extra imports."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ProviderError(f"{EXTRA_HINT} (cannot import {name}: {exc})") from None


def validate_aks_settings(pool: NodePoolSettings, *, index: int | None = None) -> list[str]:
    """The problems with an `aks` pool's `aks:` map, each one line naming its key path.

    `index` is the pool's position in `autoscaler.nodePools`; without it the path names the pool.
    """
    where = f"autoscaler.nodePools[{index if index is not None else pool.name}].aks"
    settings = pool.aks
    problems = [
        f"{where}.{key}: unknown key (known: {', '.join(sorted(SETTINGS_KEYS))})"
        for key in settings
        if key not in SETTINGS_KEYS
    ]
    for key in SETTINGS_KEYS:
        value = settings.get(key)
        if not value:
            problems.append(f"{where}.{key}: required")
            continue
        if key == "subscriptionId":
            try:
                uuid.UUID(value)
            except ValueError:
                problems.append(f"{where}.{key}: must be a subscription UUID, got {value!r}")
            continue
        rule, meaning = _NAME_RULES[key]
        if not rule.fullmatch(value):
            problems.append(f"{where}.{key}: must be {meaning}, got {value!r}")
    return problems


@dataclass(frozen=True, slots=True)
class AgentPoolRef:
    """Where one pool lives in ARM."""

    subscription_id: str
    resource_group: str
    cluster: str
    agent_pool: str

    @classmethod
    def of(cls, pool: NodePoolSettings) -> AgentPoolRef:
        problems = validate_aks_settings(pool)
        if problems:
            raise ProviderError(f"aks pool {pool.name}: {'; '.join(problems)}")
        s = pool.aks
        return cls(s["subscriptionId"], s["resourceGroup"], s["cluster"], s["agentPool"])

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ContainerService/managedClusters/{self.cluster}"
            f"/agentPools/{self.agent_pool}"
        )


@dataclass
class _Operation:
    """A long-running operation this provider started and is still watching."""

    what: str
    """For logs and errors: "scale to 3", "remove node aks-…"."""
    target: int | None
    """The count a scale operation sets (None for a node removal)."""
    task: asyncio.Task[None]


class AksProvider:
    """AKS agent pools as autoscaler node pools (see the module docstring)."""

    def __init__(
        self,
        *,
        credential: AsyncTokenCredential | None = None,
        base_url: str | None = None,
        connection_verify: bool | str = True,
        polling_interval: float = 30.0,
        timeout: float = 30.0,
        retry_total: int = 3,
    ) -> None:
        """`credential`: the token source (default DefaultAzureCredential, closed by close();
        an injected one is the caller's to close). `base_url`: the ARM endpoint (default the
        public cloud's; its `/.default` scope is requested). `connection_verify`: False, True or
        a CA bundle file to trust. `polling_interval`: seconds between operation polls when ARM
        sends no Retry-After. `timeout`: seconds to connect and to read each answer.
        `retry_total`: the SDK's retries of throttled/unavailable answers within one call."""
        require_sdk()
        if credential is None:
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential()
            self._owns_credential = True
        else:
            self._owns_credential = False
        self._credential = credential
        self._base_url = base_url.rstrip("/") if base_url else None
        self._client_options: dict[str, Any] = {
            "connection_verify": connection_verify,
            "connection_timeout": timeout,
            "read_timeout": timeout,
            "retry_total": retry_total,
            "polling_interval": polling_interval,
        }
        if self._base_url:
            self._client_options["credential_scopes"] = [f"{self._base_url}/.default"]
        self._clients: dict[str, ContainerServiceClient] = {}
        self._operations: dict[str, _Operation] = {}
        self._failures: dict[str, str] = {}

    # --- the NodePoolProvider interface ----------------------------------------------------
    async def size(self, pool: NodePoolSettings) -> PoolSize:
        ref = AgentPoolRef.of(pool)
        failure = self._failures.pop(pool.name, None)
        if failure is not None:
            raise ProviderError(failure)
        agent_pool = await self._call(pool, ref, "read", self._get(ref))
        count = agent_pool.count
        if count is None:
            raise ProviderError(f"aks pool {pool.name}: {ref.resource_id} reports no node count")
        state = agent_pool.provisioning_state or ""
        ours = self._running(pool)
        busy = state.lower() not in TERMINAL_STATES or ours is not None
        log.debug(
            "aks pool %s: %s count=%d provisioningState=%s%s",
            pool.name,
            ref.resource_id,
            count,
            state,
            f" ({ours.what} running)" if ours else "",
        )
        return PoolSize(target=int(count), busy=busy)

    async def set_target(self, pool: NodePoolSettings, target: int) -> None:
        ref = AgentPoolRef.of(pool)
        if target < 0:
            raise ProviderError(f"aks pool {pool.name}: target {target} must be >= 0")
        ours = self._running(pool)
        if ours is not None:
            if ours.target == target:
                log.info(
                    "aks pool %s: %s already running on %s", pool.name, ours.what, ref.resource_id
                )
                return
            raise ProviderError(
                f"aks pool {pool.name}: {ours.what} still running on {ref.resource_id}",
                retryable=True,
            )
        agent_pool = await self._call(pool, ref, "read", self._get(ref))
        if agent_pool.enable_auto_scaling:
            raise ProviderError(
                f"aks pool {pool.name}: {ref.resource_id} has AKS's own autoscaler enabled "
                "(enableAutoScaling); turn it off for pools epcsched scales"
            )
        if agent_pool.count == target:
            log.info("aks pool %s: %s already has count %d", pool.name, ref.resource_id, target)
            return
        what = f"scale from {agent_pool.count} to {target}"
        # A PUT replaces the whole agent pool: send it back as read, with only the count changed.
        agent_pool.count = target
        client = self._client(ref.subscription_id)
        poller = await self._call(
            pool,
            ref,
            what,
            client.agent_pools.begin_create_or_update(
                ref.resource_group, ref.cluster, ref.agent_pool, agent_pool
            ),
        )
        self._watch(pool, ref, what, target, poller)

    async def remove_node(self, pool: NodePoolSettings, node: str, target: int) -> None:
        """Delete the machine behind Kubernetes node `node` with the pool's deleteMachines.

        AKS names an agent pool's machines after their virtual machines, and each node's kubelet
        registers under its VM's host name, which is that same name: in a VirtualMachineScaleSets
        pool `aks-<pool>-<8 digits>-vmss<6 base-36 digits>` (`aks-dcsv3-12345678-vmss00000a`),
        in a VirtualMachines pool the VM's name. So the node name is the machine name; AKS's own
        guide removes chosen nodes by passing the names `kubectl get nodes` prints to
        `az aks nodepool delete-machines --machine-names`. The pool's machines are listed first
        (and matched ignoring case): a node that is not among them is already gone, which is
        not an error, and no name that is not this pool's machine is ever sent for deletion.
        deleteMachines lowers the count by one, to `target` when the loop's view was current.
        """
        ref = AgentPoolRef.of(pool)
        ours = self._running(pool)
        if ours is not None:
            raise ProviderError(
                f"aks pool {pool.name}: {ours.what} still running on {ref.resource_id}",
                retryable=True,
            )
        machines = await self._call(pool, ref, "list machines", self._machine_names(ref))
        machine = next((m for m in machines if m.lower() == node.lower()), None)
        if machine is None:
            log.info(
                "aks pool %s: node %s is not a machine of %s any more; nothing to remove",
                pool.name,
                node,
                ref.resource_id,
            )
            return
        from azure.mgmt.containerservice.models import AgentPoolDeleteMachinesParameter

        what = f"remove node {node}"
        client = self._client(ref.subscription_id)
        poller = await self._call(
            pool,
            ref,
            what,
            client.agent_pools.begin_delete_machines(
                ref.resource_group,
                ref.cluster,
                ref.agent_pool,
                AgentPoolDeleteMachinesParameter(machine_names=[machine]),
            ),
        )
        log.info("aks pool %s: target after removing node %s is %d", pool.name, node, target)
        self._watch(pool, ref, what, None, poller)

    async def close(self) -> None:
        """Stop watching running operations (they go on in Azure) and release connections."""
        tasks = [op.task for op in self._operations.values() if not op.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._operations.clear()
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        if self._owns_credential:
            await self._credential.close()

    # --- beyond the interface ----------------------------------------------------------------
    async def settle(self, pool: NodePoolSettings) -> None:
        """Wait until the operation this provider runs on `pool` (if any) has ended; its
        outcome is still reported by the next size(). For shutdown and tests."""
        operation = self._operations.get(pool.name)
        if operation is not None:
            await asyncio.wait({operation.task})

    # --- internals ---------------------------------------------------------------------------
    def _client(self, subscription_id: str) -> ContainerServiceClient:
        client = self._clients.get(subscription_id)
        if client is None:
            from azure.mgmt.containerservice.aio import ContainerServiceClient

            client = ContainerServiceClient(
                self._credential, subscription_id, self._base_url, **self._client_options
            )
            self._clients[subscription_id] = client
        return client

    async def _get(self, ref: AgentPoolRef) -> Any:
        client = self._client(ref.subscription_id)
        return await client.agent_pools.get(ref.resource_group, ref.cluster, ref.agent_pool)

    async def _machine_names(self, ref: AgentPoolRef) -> list[str]:
        client = self._client(ref.subscription_id)
        pages = client.machines.list(ref.resource_group, ref.cluster, ref.agent_pool)
        return [machine.name async for machine in pages if machine.name]

    def _running(self, pool: NodePoolSettings) -> _Operation | None:
        operation = self._operations.get(pool.name)
        return operation if operation is not None and not operation.task.done() else None

    async def _call(self, pool: NodePoolSettings, ref: AgentPoolRef, what: str, call: Any) -> Any:
        """Await one ARM call; whatever fails leaves as a one-line ProviderError."""
        # Reads happen every loop for every pool; changes are what an operator looks for.
        level = logging.DEBUG if what in ("read", "list machines") else logging.INFO
        log.log(level, "aks pool %s: %s (%s)", pool.name, what, ref.resource_id)
        try:
            return await call
        except Exception as exc:  # the provider contract: nothing but ProviderError escapes
            message, retryable = describe_error(exc)
            raise ProviderError(
                f"aks pool {pool.name}: {what} ({ref.resource_id}) failed: {message}",
                retryable=retryable,
            ) from None

    def _watch(
        self,
        pool: NodePoolSettings,
        ref: AgentPoolRef,
        what: str,
        target: int | None,
        poller: AsyncLROPoller[Any],
    ) -> None:
        self._failures.pop(pool.name, None)
        task = asyncio.create_task(
            self._follow(pool.name, ref, what, poller), name=f"aks {pool.name}: {what}"
        )
        self._operations[pool.name] = _Operation(what=what, target=target, task=task)

    async def _follow(
        self, name: str, ref: AgentPoolRef, what: str, poller: AsyncLROPoller[Any]
    ) -> None:
        """Poll one operation to its end; a failure waits in `_failures` for the next size()."""
        try:
            await poller.result()
        except asyncio.CancelledError:
            log.info("aks pool %s: stopped watching %s on %s", name, what, ref.resource_id)
            raise
        except Exception as exc:
            message, _ = describe_error(exc)
            failure = f"aks pool {name}: {what} ({ref.resource_id}) failed: {message}"
            log.warning("%s", failure)
            self._failures[name] = failure
        else:
            log.info("aks pool %s: %s on %s done", name, what, ref.resource_id)


def describe_error(exc: BaseException) -> tuple[str, bool]:
    """One line for an Azure SDK (or other) failure, and whether retrying later may succeed."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
    )

    status = getattr(exc, "status_code", None) if isinstance(exc, HttpResponseError) else None
    if isinstance(exc, HttpResponseError) and status is not None and 200 <= status < 300:
        # A long-running operation that ended Failed: the poll itself succeeded, and ARM's
        # error is the one in the operation's status body.
        error = exc.error
        text = f"{error.code}: {error.message}" if error is not None else exc.message
        retryable = False
    elif isinstance(exc, HttpResponseError) and status is not None:
        error = exc.error
        code = getattr(error, "code", None)
        detail = getattr(error, "message", None) or exc.reason or exc.message
        text = f"HTTP {status}{f' {code}' if code else ''}: {detail}"
        retryable = status in RETRYABLE_STATUS
    elif isinstance(exc, ClientAuthenticationError):
        text, retryable = f"authentication failed: {exc.message}", False
    elif isinstance(exc, ServiceRequestError):
        text, retryable = f"cannot reach the ARM endpoint: {exc.message}", False
    else:
        text, retryable = f"{type(exc).__name__}: {exc}", False
    line = " ".join(text.split())
    return (line if len(line) <= 400 else line[:399] + "…"), retryable
