"""`--via-http`: check that the extender over HTTP decides every placement as the simulator did.

The simulator places pods with the core in-process. Here the same decisions are also asked of the
real extender app (`epcsched.extender.app.create_app`) through a real HTTP server on loopback,
the way kube-scheduler asks: it runs its own NodeResourcesFit (CPU, memory, pod slots), posts
the survivors as `{"Pod": ..., "Nodes": null, "NodeNames": [...]}` to `/filter`, posts the nodes
that pass to `/prioritize` when more than one does, and binds to the best score (ties to the
first name). The extender answers from its cache, so its cluster state is the simulator's own
`ClusterSnapshot` (a `SnapshotState`); the simulator waits for each reply before it changes the
snapshot again, so the extender never reads it mid-change.

The extender is served in this process at the URL's host and port (port 0 picks a free one) and
with the URL's path as its prefix: an extender elsewhere could not know the simulated pods.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from fractions import Fraction
from urllib.parse import urlsplit

import numpy as np
from aiohttp import web

from epcsched.config import Config, EpcSettings, ExtenderSettings
from epcsched.core.fit import PodRequest
from epcsched.core.placement import all_slots, resources_fit
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.model import PodInfo
from epcsched.simulation.engine import Simulation
from epcsched.simulation.scenario import EPCSCHED_POLICIES, Scenario
from epcsched.simulation.workload import Workload
from epcsched.state import SnapshotState


class LiveCheckError(RuntimeError):
    """The extender could not be started or answered something that is not a reply."""


@dataclass(slots=True)
class Mismatch:
    pod: str
    in_process: str | None
    via_http: str | None


@dataclass(slots=True)
class PolicyCheck:
    policy: str
    decisions: int = 0
    http_calls: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)


@dataclass(slots=True)
class LiveCheck:
    """What `--via-http` found, per policy."""

    url: str
    checks: list[PolicyCheck] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Baselines the extender does not serve (they place pods without it)."""

    @property
    def ok(self) -> bool:
        return all(not c.mismatches for c in self.checks) and bool(self.checks)

    def describe(self) -> str:
        lines = [f"via HTTP ({self.url}):"]
        for c in self.checks:
            verdict = "all equal" if not c.mismatches else f"{len(c.mismatches)} DIFFERENT"
            lines.append(
                f"  {c.policy}: {c.decisions} placements, {c.http_calls} extender calls, {verdict}"
            )
            for m in c.mismatches[:5]:
                lines.append(f"    {m.pod}: in-process {m.in_process}, extender {m.via_http}")
        if self.skipped:
            lines.append(f"  not served by the extender, skipped: {', '.join(self.skipped)}")
        if not self.checks:
            lines.append("  no epcsched policy to check (binpack, spread or balanced)")
        return "\n".join(lines)


def _quantity(amount: int, unit: int) -> str:
    """`amount` bytes as a quantity of a resource whose one count is `unit` bytes."""
    count = Fraction(amount, unit)
    if count.denominator == 1:
        return str(count.numerator)
    milli = count * 1000
    if milli.denominator == 1:
        return f"{milli.numerator}m"
    raise LiveCheckError(f"{amount} bytes is not a whole number of milli-units of {unit} bytes")


def pod_json(pod: PodInfo, epc_resources: dict[str, int]) -> dict[str, object]:
    """The Pod object kube-scheduler would send for a simulated pod."""
    requests: dict[str, str] = {}
    for name, amount in pod.epc.items():
        requests[name] = _quantity(amount, epc_resources[name])
    if pod.cpu_milli:
        requests["cpu"] = f"{pod.cpu_milli}m"
    if pod.memory:
        requests["memory"] = str(pod.memory)
    return {
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid or pod.name},
        "spec": {"containers": [{"name": "job", "resources": {"requests": requests}}]},
        "status": {"phase": "Pending"},
    }


class SchedulerClient:
    """Plays kube-scheduler's part of the extender protocol over one keep-alive connection."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise LiveCheckError(f"--via-http: expected http://HOST:PORT[/prefix], got {url!r}")
        self.prefix = parts.path.rstrip("/")
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.calls = 0

    def close(self) -> None:
        self.connection.close()

    def _post(self, verb: str, body: dict[str, object]) -> object:
        payload = json.dumps(body).encode()
        self.connection.request(
            "POST",
            f"{self.prefix}/{verb}",
            body=payload,
            headers={"Content-Type": "application/json"},
        )
        response = self.connection.getresponse()
        data = response.read()
        self.calls += 1
        if response.status != 200:
            raise LiveCheckError(f"/{verb}: HTTP {response.status}: {data[:200]!r}")
        return json.loads(data)

    def decide(self, snapshot: ClusterSnapshot, pod: PodInfo, request: PodRequest) -> str | None:
        """The node kube-scheduler with this extender would bind `pod` to."""
        names, slots = all_slots(snapshot)
        if not names:
            return None
        # kube-scheduler's own filters run first; only their survivors reach the extender.
        feasible = [names[i] for i in np.flatnonzero(resources_fit(snapshot, request, slots))]
        if not feasible:
            return None
        body: dict[str, object] = {
            "Pod": pod_json(pod, snapshot.epc_resources),
            "Nodes": None,
            "NodeNames": feasible,
        }
        reply = self._post("filter", body)
        if not isinstance(reply, dict) or reply.get("Error"):
            raise LiveCheckError(f"/filter: unexpected reply {str(reply)[:200]}")
        passing = reply.get("NodeNames") or []
        if not isinstance(passing, list):
            raise LiveCheckError("/filter: NodeNames is not a list")
        if len(passing) <= 1:
            # kube-scheduler does not call prioritize when only one node is feasible.
            return str(passing[0]) if passing else None
        body["NodeNames"] = passing
        scores = self._post("prioritize", body)
        if not isinstance(scores, list):
            raise LiveCheckError("/prioritize: expected a list of host scores")
        by_host = {str(s["Host"]): int(s["Score"]) for s in scores}
        best = max(by_host.get(str(n), 0) for n in passing)
        return min(str(n) for n in passing if by_host.get(str(n), 0) == best)


@contextmanager
def serve_extender(
    snapshot: ClusterSnapshot, scenario: Scenario, strategy: str, url: str
) -> Iterator[str]:
    """Serve the extender app over `snapshot` at `url` in a background thread; yields its URL."""
    from epcsched.extender.app import create_app

    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise LiveCheckError(f"--via-http: expected http://HOST:PORT[/prefix], got {url!r}")
    config = Config(
        epc=EpcSettings(resources=scenario.epc_resources, headroom=scenario.headroom),
        extender=replace(ExtenderSettings(), strategy=strategy, prefix=parts.path.rstrip("/")),
    )
    app = create_app(config, SnapshotState(snapshot, source="simulation"))
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stopping: asyncio.Event | None = None
    bound: list[str] = []
    failure: list[BaseException] = []

    async def main() -> None:
        nonlocal stopping
        stopping = asyncio.Event()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, parts.hostname, parts.port or 0)
            await site.start()
            port = runner.addresses[0][1]
            bound.append(f"http://{parts.hostname}:{port}{parts.path.rstrip('/')}")
            started.set()
            await stopping.wait()
        finally:
            await runner.cleanup()

    def thread_main() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:
            failure.append(exc)
            started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=thread_main, name="epcsched-extender", daemon=True)
    thread.start()
    started.wait(timeout=30)
    if failure or not bound:
        thread.join(timeout=5)
        reason = failure[0] if failure else "timed out"
        raise LiveCheckError(f"--via-http: cannot serve the extender at {url}: {reason}")
    try:
        yield bound[0]
    finally:
        if stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=30)


def check_policy(
    scenario: Scenario, workload: Workload, policy: str, url: str, *, strategy: str | None = None
) -> PolicyCheck:
    """Run `policy` with every decision also asked of an extender served at `url`.

    `strategy` (default: the policy's own) is what the extender is configured with.
    """
    snapshot = ClusterSnapshot(scenario.epc_resources, headroom=scenario.headroom, capacity=128)
    check = PolicyCheck(policy)
    with serve_extender(snapshot, scenario, strategy or policy, url) as served:
        client = SchedulerClient(served)

        def observe(
            snap: ClusterSnapshot, pod: PodInfo, request: PodRequest, node: str | None
        ) -> None:
            remote = client.decide(snap, pod, request)
            check.decisions += 1
            if remote != node:
                check.mismatches.append(Mismatch(pod.name, node, remote))

        try:
            Simulation(scenario, workload, policy, observer=observe, snapshot=snapshot).run()
        finally:
            check.http_calls = client.calls
            client.close()
    return check


def check_via_http(
    scenario: Scenario, workload: Workload, policies: Sequence[str], url: str
) -> LiveCheck:
    """Check every epcsched policy among `policies`; baselines are listed as skipped."""
    report = LiveCheck(url)
    for policy in policies:
        if policy in EPCSCHED_POLICIES:
            report.checks.append(check_policy(scenario, workload, policy, url))
        else:
            report.skipped.append(policy)
    return report
