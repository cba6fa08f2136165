"""The autoscaler part of `make demo`: a simulated SGX pool grows for enclave pods, then shrinks.

No cluster and no cloud are needed. The fake API server (`epcsched.testing`) holds one node of
a `simulated` pool, already busy with a long-running enclave; the real autoscaler controller
(`runtime.controller`: informers, Lease, status ConfigMap, Events, drain, loop) runs against it
in this process, with a simulated provider whose new nodes join the API server a second after
they are asked for. A batch Job's enclave pods arrive that the pool cannot hold; the pool grows,
the pods bind, they finish, and the pool shrinks back to its minimum, node by node.

There is no kube-scheduler either, so the demo plays its part in a few lines with the project's
own policy core (`choose_node` on an informer snapshot): it binds a pending pod through the
Binding API when a node fits, and otherwise marks it `PodScheduled=False, reason Unschedulable`
through the status subresource, which is what the autoscaler waits for. Timers are seconds
instead of minutes so that the whole story takes a few seconds; everything else is what a
cluster would run. Each step is printed with its reason: the played scheduler's lines, and the
autoscaler's own log records (its decisions, the provider, the drain) as they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO, cast

import yaml
from kubernetes_asyncio import client

from epcsched.autoscaler.kubeapi import request
from epcsched.autoscaler.loop import Autoscaler
from epcsched.autoscaler.providers.simulated import node_object
from epcsched.autoscaler.runtime import controller, simulated_provider
from epcsched.config import Config, config_from_mapping
from epcsched.core.fit import PodRequest, reasons
from epcsched.core.placement import all_slots, choose_node
from epcsched.core.rules import refusal
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.kube.client import load_configuration
from epcsched.kube.informer import InformerState
from epcsched.model import PodInfo
from epcsched.quantity import format_bytes
from epcsched.testing.apiserver import FakeApiServer

EPC = "sgx.intel.com/epc"
GI = 2**30
POOL = "sgx"
NAMESPACE = "enclaves"
CONTROLLER_NAMESPACE = "epcsched-system"
FIRST_NODE = "sgx-0"
BATCH = 4
"""Enclave pods of the batch Job."""
BATCH_EPC = "3Gi"
SERVICE_EPC = "6Gi"
"""The long-running enclave on the pool's first node: more than `scaleDownUtilization` of its
8 GiB, so that node is needed throughout and the pool's minimum is visibly that node."""
RUN_FOR = 1.0
"""Seconds the batch runs once every pod is bound."""
STEP_TIMEOUT = 20.0
"""Seconds any one step may take before the demo reports that it did not happen."""
SCHEDULER_EVERY = 0.05
"""Seconds between two passes of the played kube-scheduler over the pending pods."""
PROVISIONING_DELAY = 1.0
"""Seconds a simulated node takes from being asked for to joining the API server."""

# The configuration keys of DESIGN.md section 5, with seconds where a cluster would use minutes.
DEMO_CONFIG: dict[str, Any] = {
    "autoscaler": {
        "interval": "0.5s",
        "batchIdle": "0.2s",
        "batchMax": "2s",
        "scaleDownUtilization": 0.5,
        "scaleDownUnneededTime": "2s",
        "scaleDownDelayAfterAdd": "1s",
        "maxNodeProvisionTime": "30s",
        "maxPodEvictionTime": "5s",
        "nodePools": [
            {
                "name": POOL,
                "provider": "simulated",
                "minSize": 1,
                "maxSize": 5,
                "nodeSelector": {"agentpool": POOL},
                "template": {
                    "resources": {EPC: "8Gi", "cpu": "4", "memory": "16Gi", "pods": "110"},
                    "labels": {"agentpool": POOL},
                },
            }
        ],
    }
}

# The autoscaler's loggers whose INFO records tell the story; the Lease, the status ConfigMap
# and the Event recorder only speak up here when something goes wrong.
STORY_LOGGERS = {
    "epcsched.autoscaler": "autoscaler",
    "epcsched.autoscaler.drain": "autoscaler",
    "epcsched.autoscaler.simulated": "cloud (sim)",
}
QUIET_LOGGERS = (
    "epcsched.autoscaler.leader",
    "epcsched.autoscaler.status",
    "epcsched.autoscaler.events",
)


def demo_config() -> Config:
    return config_from_mapping(DEMO_CONFIG, source="the autoscaler demo")


class Narrator:
    """Prints each step with the seconds since the demo started and who acted."""

    def __init__(self, out: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.clock = clock
        self.started = clock()
        self.quiet = False
        """Once the story is told: only errors are printed (shutting down is not a step)."""

    def say(self, who: str, text: str) -> None:
        print(f"  {self.clock() - self.started:5.1f}s  {who:<14} {text}", file=self.out)


class _StoryHandler(logging.Handler):
    """Hands the autoscaler's log records to the narrator as they are emitted."""

    def __init__(self, narrator: Narrator) -> None:
        super().__init__(logging.INFO)
        self.narrator = narrator

    def emit(self, record: logging.LogRecord) -> None:
        quiet = record.name in QUIET_LOGGERS and record.levelno < logging.WARNING
        if self.narrator.quiet and record.levelno < logging.ERROR:
            return
        who = STORY_LOGGERS.get(record.name)
        if quiet or (who is None and record.levelno < logging.WARNING):
            return
        prefix = "" if record.levelno < logging.WARNING else f"{record.levelname}: "
        self.narrator.say(who or "autoscaler", prefix + record.getMessage())


@contextlib.contextmanager
def _autoscaler_logs(narrator: Narrator) -> Iterator[None]:
    """Route the `epcsched.autoscaler` records to the narrator for the demo's duration."""
    logger = logging.getLogger("epcsched.autoscaler")
    handler = _StoryHandler(narrator)
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.level, logger.propagate = saved


# ----- the cluster's objects -----------------------------------------------------------------
def _pod(
    name: str,
    epc: str,
    owner: tuple[str, str, str],
    *,
    node: str | None = None,
    phase: str = "Pending",
) -> dict[str, Any]:
    kind, owner_name, api_version = owner
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "enclave",
                "image": "enclave:1",
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {EPC: epc}},
            }
        ]
    }
    if node is not None:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            # A controller owner: evictable, recreated elsewhere, so it never blocks a drain.
            "ownerReferences": [
                {
                    "apiVersion": api_version,
                    "kind": kind,
                    "name": owner_name,
                    "uid": f"00000000-0000-4000-8000-{len(owner_name):012d}",
                    "controller": True,
                }
            ],
        },
        "spec": spec,
        "status": {"phase": phase},
    }


def _initial_objects(config: Config) -> list[dict[str, Any]]:
    pool = config.autoscaler.node_pools[0]
    service = _pod(
        "attestation-0",
        SERVICE_EPC,
        ("ReplicaSet", "attestation-5d8f", "apps/v1"),
        node=FIRST_NODE,
        phase="Running",
    )
    return [node_object(pool, FIRST_NODE), service]


def _batch_pods() -> list[dict[str, Any]]:
    return [_pod(f"batch-{i}", BATCH_EPC, ("Job", "batch", "batch/v1")) for i in range(BATCH)]


# ----- kube-scheduler, played --------------------------------------------------------------
def why_unschedulable(snapshot: ClusterSnapshot, request: PodRequest) -> str:
    """kube-scheduler's message for a pod no node takes, per node in the core's words."""
    names, slots = all_slots(snapshot)
    per_node = reasons(snapshot, request, slots)
    parts = []
    for name, epc_reason in zip(names, per_node, strict=True):
        info = snapshot.node(name)
        rule = refusal(request.constraints, info) if info is not None else None
        parts.append(f"{name}: {rule or (epc_reason if epc_reason != 'fits' else 'cpu/memory')}")
    return f"0/{len(names)} nodes are available: " + "; ".join(parts)


class PlayedScheduler:
    """kube-scheduler's part: bind what fits, mark the rest Unschedulable, retry on changes.

    It decides on its own informer's snapshot with `choose_node`, the policy the extender
    serves. A pod it has bound counts on its node until its informer shows the binding
    (kube-scheduler's "assumed" pods), so two pods never take the same free EPC.
    """

    def __init__(
        self, state: InformerState, core: client.CoreV1Api, narrator: Narrator, strategy: str
    ) -> None:
        self.state = state
        self.core = core
        self.narrator = narrator
        self.strategy = strategy
        self.assumed: dict[str, PodInfo] = {}
        self.marked: set[str] = set()
        self.bound: dict[str, str] = {}
        """Every binding made, pod key to node, in order."""

    async def run(self) -> None:
        while True:
            await self.schedule_pending()
            await asyncio.sleep(SCHEDULER_EVERY)

    async def schedule_pending(self) -> None:
        snapshot = self.state.snapshot
        pending = sorted(snapshot.pending_pods(), key=lambda p: p.key)
        for key in list(self.assumed):
            seen = snapshot.pods.get(key)
            if seen is None or seen.node_name is not None:
                del self.assumed[key]
        if not pending:
            return
        fork = snapshot.fork()
        for pod in self.assumed.values():
            fork.upsert_pod(pod)
        for pod in pending:
            if pod.key in self.assumed:
                continue
            request = PodRequest.of(pod)
            node = choose_node(fork, request, self.strategy)
            if node is None:
                if not pod.marked_unschedulable and pod.key not in self.marked:
                    await self._mark(pod, why_unschedulable(fork, request))
                continue
            placed = dataclasses.replace(pod, node_name=node, phase="Running")
            fork.upsert_pod(placed)
            self.assumed[pod.key] = placed
            await self._bind(pod, node, fork)

    async def _bind(self, pod: PodInfo, node: str, fork: ClusterSnapshot) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        # The API answers a binding with a Status, which the client cannot read as a V1Binding
        # (kubernetes-client/python#547): read the raw answer instead.
        await request(
            self.core.create_namespaced_binding(
                pod.namespace, cast(Any, body), _preload_content=False
            )
        )
        self.marked.discard(pod.key)
        self.bound[pod.key] = node
        free = int(fork.free(EPC, fork.slots_of([node]))[0])
        self.narrator.say(
            "kube-scheduler",
            f"bound {pod.key} to {node} ({format_bytes(pod.epc_total)} EPC; "
            f"{format_bytes(free)} left free there)",
        )

    async def _mark(self, pod: PodInfo, message: str) -> None:
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
        }
        await self.core.patch_namespaced_pod_status(
            pod.name, pod.namespace, cast(Any, {"status": {"conditions": [condition]}})
        )
        self.marked.add(pod.key)
        self.narrator.say("kube-scheduler", f"{pod.key} Unschedulable: {message}")


# ----- the demo ----------------------------------------------------------------------------
async def _until(
    what: str,
    check: Callable[[], bool],
    timeout: float = STEP_TIMEOUT,
    *,
    alongside: Sequence[asyncio.Task[Any]] = (),
) -> None:
    """Wait for `check`; a task of `alongside` that ended (it failed) ends the wait with it."""
    deadline = time.monotonic() + timeout
    while not check():
        for task in alongside:
            if task.done():
                task.result()
                raise RuntimeError(f"autoscaler demo: {task.get_name()} stopped early")
        if time.monotonic() > deadline:
            raise RuntimeError(f"autoscaler demo: {what} did not happen within {timeout:.0f}s")
        await asyncio.sleep(0.02)


def pool_nodes(snapshot: ClusterSnapshot) -> list[str]:
    return sorted(n.name for n in snapshot.nodes() if n.labels.get("agentpool") == POOL)


def _settled(scaler: Autoscaler, size: int) -> bool:
    """The autoscaler's last loop found the pool at `size` with nothing to do."""
    decision = scaler.last_decision
    if decision is None:
        return False
    pool = decision.pool(POOL)
    return pool.current_size == size and pool.action == "none" and pool.in_flight == 0


async def autoscaler_demo(out: TextIO = sys.stdout) -> None:
    """Run the autoscaler demo, printing what happens to `out`."""
    config = demo_config()
    narrator = Narrator(out)
    print(
        f"\n== autoscaler: a simulated SGX pool {POOL!r} grows for enclave pods and shrinks back",
        file=out,
    )
    with tempfile.TemporaryDirectory(prefix="epcsched-autoscaler-demo-") as tmp:
        async with FakeApiServer(bookmark_interval=0.2) as api:
            api.store.load_many(_initial_objects(config))
            configuration = await load_configuration(api.write_kubeconfig(Path(tmp) / "kubecfg"))
            await _run(config, configuration, api, narrator, out)


async def _run(
    config: Config,
    configuration: client.Configuration,
    api: FakeApiServer,
    narrator: Narrator,
    out: TextIO,
) -> None:
    settings = config.autoscaler
    pool = settings.node_pools[0]
    template = pool.template.resources if pool.template else {}
    print(
        f"fake API server on {api.url}: node {FIRST_NODE} of pool {POOL} ({template[EPC]} EPC) "
        f"runs {NAMESPACE}/attestation-0 ({SERVICE_EPC} EPC)",
        file=out,
    )
    print(
        f"pool {POOL}: provider simulated (nodes join {PROVISIONING_DELAY:g}s after they are "
        f"asked for), minSize {pool.min_size}, maxSize {pool.max_size}, new nodes "
        f"{template[EPC]} EPC",
        file=out,
    )
    print(
        f"timers shortened for the demo: interval {settings.interval:g}s, batchIdle "
        f"{settings.batch_idle:g}s, scaleDownUnneededTime {settings.scale_down_unneeded_time:g}s, "
        f"scaleDownDelayAfterAdd {settings.scale_down_delay_after_add:g}s (a cluster uses "
        "minutes)",
        file=out,
    )
    print(
        "there is no kube-scheduler here: the demo plays it with epcsched's own placement "
        "(bind what fits, else mark the pod Unschedulable)\n",
        file=out,
    )
    scheduler_state = InformerState(configuration, config)
    k8s = client.ApiClient(configuration)
    stop = asyncio.Event()
    started: asyncio.Future[Autoscaler] = asyncio.get_running_loop().create_future()
    tasks: list[asyncio.Task[Any]] = []
    provider = None
    with _autoscaler_logs(narrator):
        try:
            await scheduler_state.start()
            await scheduler_state.wait_synced(timeout=STEP_TIMEOUT)
            provider = simulated_provider(
                config, k8s, scheduler_state.snapshot, delay=PROVISIONING_DELAY
            )
            tasks.append(
                asyncio.create_task(
                    controller(
                        config,
                        configuration,
                        namespace=CONTROLLER_NAMESPACE,
                        identity="autoscaler-demo",
                        host="127.0.0.1",
                        port=0,
                        providers={"simulated": provider},
                        stop=stop,
                        started=started,
                    ),
                    name="autoscaler-controller",
                )
            )
            await _until("the controller starting", started.done, alongside=tasks)
            scaler = started.result()
            await _until("leading the Lease", scaler.acting, alongside=tasks)
            await _until("a first decision", lambda: _settled(scaler, 1), alongside=tasks)
            core = client.CoreV1Api(k8s)
            scheduler = PlayedScheduler(scheduler_state, core, narrator, config.extender.strategy)
            tasks.append(asyncio.create_task(scheduler.run(), name="played-kube-scheduler"))
            await _story(config, core, scheduler, scheduler_state, scaler, narrator, tasks)
            narrator.quiet = True
            stop.set()
            await tasks[0]
            await _epilogue(core, scheduler_state, out)
        finally:
            stop.set()
            for task in reversed(tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if provider is not None:
                await provider.close()
            await scheduler_state.stop()
            await k8s.close()


async def _story(
    config: Config,
    core: client.CoreV1Api,
    scheduler: PlayedScheduler,
    state: InformerState,
    scaler: Autoscaler,
    narrator: Narrator,
    tasks: Sequence[asyncio.Task[Any]],
) -> None:
    pool = config.autoscaler.node_pools[0]
    pods = _batch_pods()
    narrator.say(
        "job-controller",
        f"Job {NAMESPACE}/batch creates {len(pods)} enclave pods of {BATCH_EPC} EPC each",
    )
    for pod in pods:
        await core.create_namespaced_pod(NAMESPACE, cast(Any, pod))
    keys = {f"{NAMESPACE}/{p['metadata']['name']}" for p in pods}
    await _until("binding every batch pod", lambda: keys <= set(scheduler.bound), alongside=tasks)
    grown = len(pool_nodes(state.snapshot))
    narrator.say("demo", f"all {len(keys)} batch pods run; pool {POOL} has {grown} nodes")
    await asyncio.sleep(RUN_FOR)
    for key in sorted(keys):
        _, name = key.split("/", 1)
        await core.patch_namespaced_pod_status(
            name, NAMESPACE, cast(Any, {"status": {"phase": "Succeeded"}})
        )
    narrator.say("kubelet", f"the batch finished: {len(keys)} pods Succeeded")
    await _until(
        f"pool {POOL} shrinking back to minSize {pool.min_size}",
        lambda: (
            len(pool_nodes(state.snapshot)) == pool.min_size and _settled(scaler, pool.min_size)
        ),
        alongside=tasks,
    )
    # The decision is visible before its loop has written the status ConfigMap: let that loop
    # (and so its write) finish before the controller is stopped.
    loops = scaler.loops
    await _until("the autoscaler finishing its loop", lambda: scaler.loops > loops, alongside=tasks)
    last = scaler.last_decision.pool(POOL) if scaler.last_decision else None
    narrator.say(
        "demo",
        f"pool {POOL} is back at minSize {pool.min_size}; the autoscaler's last loop: "
        f"{last.current_size if last else '?'} -> {last.target_size if last else '?'}, "
        f"{last.reason if last else 'no decision'}",
    )


async def _epilogue(core: client.CoreV1Api, state: InformerState, out: TextIO) -> None:
    snapshot = state.snapshot
    print("\nfinal nodes:", file=out)
    for name in snapshot.node_names():
        used = sum(p.epc_total for p in snapshot.pods_on(name))
        info = snapshot.node(name)
        total = info.epc_total if info is not None else 0
        print(f"  {name:<16} {format_bytes(used)} of {format_bytes(total)} EPC requested", file=out)
    events = await core.list_event_for_all_namespaces()
    print("\nEvents the autoscaler wrote (kubectl get events -A):", file=out)
    for event in sorted(
        events.items, key=lambda e: (str(e.first_timestamp), e.metadata.name or "")
    ):
        obj = event.involved_object
        where = f"{obj.namespace}/{obj.name}" if obj.namespace else obj.name
        print(
            f"  {obj.kind:<5} {where:<22} {event.type:<7} {event.reason:<17} {event.message}",
            file=out,
        )
    status = await core.read_namespaced_config_map(
        "epcsched-autoscaler-status", CONTROLLER_NAMESPACE
    )
    body = yaml.safe_load((status.data or {}).get("status") or "{}") or {}
    print(
        f"\nConfigMap {CONTROLLER_NAMESPACE}/epcsched-autoscaler-status, pools (trimmed):",
        file=out,
    )
    pools = body.get("pools") or {}
    for name, entry in sorted(pools.items()):
        shown = (
            f"{key} {entry[key]}"
            for key in ("current", "target", "inFlight", "lastScaleUp", "lastScaleDown")
            if key in entry
        )
        print(f"  {name}: {', '.join(shown)}", file=out)


def main() -> int:
    asyncio.run(autoscaler_demo())
    return 0


if __name__ == "__main__":
    sys.exit(main())
