"""`POST /bind` with EPC reservations: closes the race between filter and bind.

When kube-scheduler ignores the EPC resource (`ignoredByScheduler: true`), the extender is the
only EPC check, and two pods filtered against the same free EPC could both be bound to a node
that holds only one. Only bind learns which node was chosen, so bind re-checks the fit against
the live cache under a lock, reserves the pod's EPC on the node, and only then asks the API for
the Binding. The reservation stands in for the pod until the watch shows it bound (the snapshot
then releases it) or `reservationTtl` passes; a refused or failed Binding releases it at once.
Every refusal is an `Error` that names the pod, the node and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import cast

import aiohttp
import msgspec
from aiohttp import web
from kubernetes_asyncio import client

from epcsched.core.fit import PodRequest, fit_masks, reasons
from epcsched.extender.app import add_verb
from epcsched.extender.wire import BadRequest, BindArgs, decode_bind, error_reply
from epcsched.kube.client import api_client
from epcsched.model import PodInfo
from epcsched.objects import ObjectError, Pod, pod_info
from epcsched.state import ClusterState

log = logging.getLogger("epcsched.extender.bind")


class _Status(msgspec.Struct):
    code: int = 0
    reason: str = ""
    message: str = ""


_status_decoder = msgspec.json.Decoder(_Status)
_pod_decoder = msgspec.json.Decoder(Pod)


def _api_message(status: int, body: bytes) -> str:
    try:
        decoded = _status_decoder.decode(body)
    except msgspec.DecodeError:
        return f"{status}: {body[:200].decode('utf-8', 'replace')}"
    return f"{status} {decoded.reason}: {decoded.message}".strip()


class Binder:
    """Binds pods through the API, holding their EPC on the node until the watch catches up."""

    def __init__(
        self,
        configuration: client.Configuration,
        state: ClusterState,
        *,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        request_timeout: float = 10.0,
    ) -> None:
        self.configuration = configuration
        self.state = state
        self.ttl = ttl
        self.clock = clock
        self.request_timeout = request_timeout
        self._lock = asyncio.Lock()
        self._api: client.ApiClient | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.bound = 0
        self.refused = 0
        self.expired = 0

    async def start(self) -> None:
        if self._api is None:
            self._api = api_client(self.configuration)
            self._sweeper = asyncio.create_task(self._sweep(), name="bind-reservation-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def _sweep(self) -> None:
        # Filters read free EPC without expiring anything, so expiry must also run on its own.
        interval = max(min(self.ttl / 4, 5.0), 0.05)
        while True:
            await asyncio.sleep(interval)
            self._expire()

    def _expire(self) -> None:
        expired = self.state.snapshot.expire_reservations(self.clock())
        if expired:
            self.expired += len(expired)
            log.warning(
                "reservations expired without the pod showing up bound: %s", ", ".join(expired)
            )

    def _core(self) -> client.CoreV1Api:
        if self._api is None:
            raise RuntimeError("Binder.start() was not called")
        return client.CoreV1Api(self._api)

    async def _fetch(self, namespace: str, name: str) -> PodInfo | str:
        """The pod from the API, for a bind that arrives before the watch showed the pod."""
        try:
            response = cast(
                aiohttp.ClientResponse,
                await self._core().read_namespaced_pod(
                    name, namespace, _preload_content=False, _request_timeout=self.request_timeout
                ),
            )
            try:
                body = await response.read()
            finally:
                response.release()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"cannot read pod {namespace}/{name} from the API server: {exc}"
        if response.status != 200:
            return f"cannot read pod {namespace}/{name}: {_api_message(response.status, body)}"
        try:
            return pod_info(_pod_decoder.decode(body), self.state.snapshot.epc_resources)
        except (msgspec.DecodeError, ObjectError) as exc:
            return f"cannot read pod {namespace}/{name}: {exc}"

    async def bind(self, args: BindArgs) -> str:
        """Bind and return "" or say why not; never raises for a refusal."""
        key = f"{args.pod_namespace}/{args.pod_name}"
        node = args.node
        pod = self.state.snapshot.pods.get(key)
        if pod is None:
            fetched = await self._fetch(args.pod_namespace, args.pod_name)
            if isinstance(fetched, str):
                return self._refuse(fetched)
            pod = fetched
        async with self._lock:
            snapshot = self.state.snapshot
            self._expire()
            # The watch may have moved on while the pod was fetched; prefer what it says now.
            pod = snapshot.pods.get(key, pod)
            if args.pod_uid and pod.uid and args.pod_uid != pod.uid:
                return self._refuse(
                    f"pod {key} has UID {pod.uid}, not {args.pod_uid}: it was deleted and "
                    "created again"
                )
            if pod.node_name is not None:
                return self._refuse(f"pod {key} is already bound to node {pod.node_name}")
            held = snapshot.reservations.get(key)
            if held is not None:
                return self._refuse(f"pod {key} is already being bound to node {held.node}")
            if node not in snapshot.slots:
                return self._refuse(
                    f"cannot bind pod {key}: node {node} is not in epcsched's cluster cache"
                )
            request = PodRequest.of(pod)
            slots = snapshot.slots_of([node])
            if not bool(fit_masks(snapshot, request, slots).ok[0]):
                why = reasons(snapshot, request, slots)[0]
                return self._refuse(f"pod {key} no longer fits node {node}: {why}")
            # Held even with no EPC asked for: it marks the bind in flight against duplicates.
            snapshot.reserve(key, node, pod.epc, expires_at=self.clock() + self.ttl)
        error = await self._create_binding(args, key)
        if error:
            # Nothing was bound: give the EPC back unless the reservation is already gone.
            held = self.state.snapshot.reservations.get(key)
            if held is not None and held.node == node:
                self.state.snapshot.release(key)
            return self._refuse(error)
        self.bound += 1
        return ""

    async def _create_binding(self, args: BindArgs, key: str) -> str:
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(
                name=args.pod_name, namespace=args.pod_namespace, uid=args.pod_uid or None
            ),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=args.node),
        )
        try:
            response = cast(
                aiohttp.ClientResponse,
                await self._core().create_namespaced_pod_binding(
                    args.pod_name,
                    args.pod_namespace,
                    body,
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                ),
            )
            try:
                raw = await response.read()
            finally:
                response.release()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"binding pod {key} to node {args.node} failed: API server unreachable: {exc}"
        if response.status not in (200, 201):
            return (
                f"the API server refused binding pod {key} to node {args.node}: "
                f"{_api_message(response.status, raw)}"
            )
        return ""

    def _refuse(self, message: str) -> str:
        self.refused += 1
        log.info("bind refused: %s", message)
        return message

    def detail(self) -> dict[str, object]:
        return {
            "bound": self.bound,
            "refused": self.refused,
            "expired": self.expired,
            "reservations": len(self.state.snapshot.reservations),
        }


BINDER = web.AppKey("binder", Binder)


async def handle_bind(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        args = decode_bind(body)
    except BadRequest as exc:
        return web.Response(status=400, body=error_reply(str(exc)), content_type="application/json")
    error = await request.app[BINDER].bind(args)
    return web.Response(body=error_reply(error), content_type="application/json")


async def _run_binder(app: web.Application) -> AsyncIterator[None]:
    binder = app[BINDER]
    await binder.start()
    try:
        yield
    finally:
        await binder.stop()


def install(app: web.Application, binder: Binder) -> None:
    """Serve `POST {extender.prefix}/bind` from `binder`, started and stopped with the app."""
    app[BINDER] = binder
    add_verb(app, "bind", handle_bind)
    app.cleanup_ctx.append(_run_binder)
