"""A fake Azure Resource Manager for AKS agent pools, over real HTTPS.

The `aks` node-pool provider must be tested with the Azure SDK client it runs with in production,
and no Azure subscription is reachable here. This aiohttp server speaks the part of ARM that the
provider uses, with ARM's semantics: GET and PUT of an agent pool (PUT replaces the pool's
properties wholesale, so a client that does not send back what it read loses it), the machines
list, and `deleteMachines`. PUT and `deleteMachines` are long-running operations: the first answer
carries an `Azure-AsyncOperation` status URL that reports `InProgress` for `in_progress_polls`
polls (or while `held`), then `Succeeded` (the change lands) or `Failed` (it does not). A PUT or
`deleteMachines` while another operation runs on the pool is a 409, as AKS answers.

The SDK sends bearer tokens only over TLS, so the server runs HTTPS with a CA made at start-up
(`TestCertificates`); clients trust it through the CA file, nothing global. `StaticCredential`
is the token credential that matches the server's expected token.

Faults on demand: `conflict_next` answers the next mutating requests with 409
`AnotherOperationInProgress`; `fail_next_operation` makes the next operation end `Failed`.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import json
import logging
import ssl
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken

log = logging.getLogger("epcsched.testing.arm")

PROVIDER = "Microsoft.ContainerService"
LOCATION = "westeurope"
TERMINAL_STATES = ("Succeeded", "Failed", "Canceled")

# Properties the server owns: a PUT body's values for these are ignored, as ARM ignores them.
_READ_ONLY = frozenset({"provisioningState", "currentOrchestratorVersion", "nodeImageVersion"})


# ----- TLS ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TestCertificates:
    """A throw-away CA and a server certificate it signed, for 127.0.0.1 and localhost."""

    __test__ = False  # a pytest collection hint: this is not a test class

    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: str | Path) -> TestCertificates:
        """Write ca.pem, server.pem and server-key.pem into `directory` (EC P-256: fast)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        valid_from, valid_to = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "epcsched fake ARM test CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid_from)
            .not_valid_after(valid_to)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )

        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid_from)
            .not_valid_after(valid_to)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )

        certs = cls(
            ca_file=directory / "ca.pem",
            cert_file=directory / "server.pem",
            key_file=directory / "server-key.pem",
        )
        certs.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        certs.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        certs.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return certs

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


class StaticCredential:
    """An `AsyncTokenCredential` that hands out one fixed bearer token (no identity service)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[str] = []
        """Every scope asked for, so tests can check which audience the client requested."""

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        from azure.core.credentials import AccessToken

        self.scopes.extend(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> StaticCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


# ----- state -------------------------------------------------------------------------------
@dataclass
class FakeAgentPool:
    """One agent pool of one managed cluster; `machines` are its VMSS instances, by name."""

    subscription: str
    resource_group: str
    cluster: str
    name: str
    properties: dict[str, Any]
    machines: list[str] = field(default_factory=list)
    next_instance: int = 0

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{PROVIDER}/managedClusters/{self.cluster}/agentPools/{self.name}"
        )

    @property
    def count(self) -> int:
        return int(self.properties["count"])

    @property
    def provisioning_state(self) -> str:
        return str(self.properties["provisioningState"])

    def machine_name(self, instance: int) -> str:
        # AKS names VMSS instances, and so their Kubernetes nodes,
        # aks-<pool>-<8 digits>-vmss<instance id in 6 base-36 digits>.
        digits = zlib.crc32(f"{self.cluster}/{self.name}".encode()) % 10**8
        suffix = ""
        for _ in range(6):
            instance, digit = divmod(instance, 36)
            suffix = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + suffix
        return f"aks-{self.name}-{digits:08d}-vmss{suffix}"

    def grow_to(self, count: int) -> None:
        while len(self.machines) < count:
            self.machines.append(self.machine_name(self.next_instance))
            self.next_instance += 1
        # VMSS's default scale-in policy removes the highest instance ids first.
        del self.machines[count:]

    def body(self) -> dict[str, Any]:
        return {
            "id": self.resource_id,
            "name": self.name,
            "type": f"{PROVIDER}/managedClusters/agentPools",
            "properties": dict(self.properties),
        }


@dataclass
class FakeOperation:
    """A long-running operation on one pool, as its status URL reports it."""

    id: str
    pool: FakeAgentPool
    kind: str
    """"scale" (a PUT) or "deleteMachines"."""
    polls_left: int
    properties: dict[str, Any] = field(default_factory=dict)
    """For a PUT: the pool's properties once it succeeds."""
    machines: list[str] = field(default_factory=list)
    """For deleteMachines: the machines it removes."""
    error: dict[str, str] | None = None
    """Set when the operation is to fail (its ARM error body)."""
    status: str = "InProgress"

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "name": self.id, "status": self.status}
        if self.status == "Failed" and self.error is not None:
            body["error"] = self.error
        return body


class FakeArm:
    """The fake ARM endpoint on a loopback HTTPS port. Use as `async with FakeArm(...) as arm`."""

    def __init__(
        self,
        certificates: TestCertificates,
        *,
        token: str = "fake-arm-token",
        host: str = "127.0.0.1",
        port: int = 0,
        in_progress_polls: int = 1,
        retry_after: int = 0,
    ) -> None:
        self.certificates = certificates
        self.token = token
        self.host = host
        self.port = port
        self.in_progress_polls = in_progress_polls
        """How many status polls report InProgress before an operation ends."""
        self.retry_after = retry_after
        """The Retry-After (seconds) sent with operation answers."""
        self.held = False
        """While True, operations stay InProgress however often they are polled."""
        self.conflict_next = 0
        """Answer this many next PUT/deleteMachines requests with 409, whatever the state."""
        self.failure: dict[str, str] | None = None
        """The error the next operation ends with (see fail_next_operation)."""
        self.requests: list[tuple[str, str]] = []
        """(method, path) of every request served, for tests that count calls."""
        self.put_bodies: list[dict[str, Any]] = []
        """Each PUT body as received."""
        self.delete_machines_bodies: list[dict[str, Any]] = []
        """Each deleteMachines body as received."""
        self.pools: dict[str, FakeAgentPool] = {}
        self.operations: dict[str, FakeOperation] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()

    # --- setup and faults ------------------------------------------------------------------
    def add_pool(
        self,
        subscription: str,
        resource_group: str,
        cluster: str,
        name: str,
        *,
        count: int = 0,
        vm_size: str = "Standard_DC4s_v3",
        enable_auto_scaling: bool = False,
    ) -> FakeAgentPool:
        pool = FakeAgentPool(
            subscription=subscription,
            resource_group=resource_group,
            cluster=cluster,
            name=name,
            properties={
                "count": count,
                "vmSize": vm_size,
                "osType": "Linux",
                "mode": "User",
                "type": "VirtualMachineScaleSets",
                "enableAutoScaling": enable_auto_scaling,
                "orchestratorVersion": "1.33.2",
                "nodeLabels": {"agentpool": name},
                "provisioningState": "Succeeded",
            },
        )
        pool.grow_to(count)
        self.pools[pool.resource_id.lower()] = pool
        return pool

    def fail_next_operation(
        self, message: str = "Scaling failed: allocation failed", code: str = "ScaleVMSSFailed"
    ) -> None:
        self.failure = {"code": code, "message": message}

    def running(self, pool: FakeAgentPool) -> FakeOperation | None:
        for operation in self.operations.values():
            if operation.pool is pool and operation.status == "InProgress":
                return operation
        return None

    def finish(self, operation: FakeOperation) -> None:
        """End an operation now: apply its change, or record its failure."""
        pool = operation.pool
        if operation.error is not None:
            operation.status = "Failed"
            pool.properties["provisioningState"] = "Failed"
            log.info(
                "operation %s on %s failed: %s", operation.id, pool.resource_id, operation.error
            )
            return
        operation.status = "Succeeded"
        if operation.kind == "scale":
            pool.properties = dict(operation.properties)
            pool.grow_to(pool.count)
        else:
            pool.machines = [m for m in pool.machines if m not in operation.machines]
            pool.properties["count"] = len(pool.machines)
        pool.properties["provisioningState"] = "Succeeded"
        log.info("operation %s on %s succeeded", operation.id, pool.resource_id)

    # --- server ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def start(self) -> FakeArm:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, ssl_context=self.certificates.server_context()
        )
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeArm:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        pool_path = (
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService"
            "/managedClusters/{cluster}/agentPools/{pool}"
        )
        ops_path = "/subscriptions/{sub}/providers/Microsoft.ContainerService/locations/{loc}"
        app.router.add_get(pool_path, self._get_pool)
        app.router.add_put(pool_path, self._put_pool)
        app.router.add_get(pool_path + "/machines", self._list_machines)
        app.router.add_post(pool_path + "/deleteMachines", self._delete_machines)
        app.router.add_get(ops_path + "/operations/{op}", self._operation_status)
        app.router.add_get(ops_path + "/operationresults/{op}", self._operation_result)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return ArmError(
                401, "InvalidAuthenticationToken", "The access token is invalid."
            ).response()
        if not request.query.get("api-version"):
            return ArmError(
                400, "MissingApiVersionParameter", "The api-version is required."
            ).response()
        try:
            response: web.StreamResponse = await handler(request)
        except ArmError as exc:
            return exc.response()
        return response

    # --- handlers --------------------------------------------------------------------------
    def _pool(self, request: web.Request) -> FakeAgentPool:
        m = request.match_info
        key = (
            f"/subscriptions/{m['sub']}/resourceGroups/{m['rg']}/providers/{PROVIDER}"
            f"/managedClusters/{m['cluster']}/agentPools/{m['pool']}"
        ).lower()
        pool = self.pools.get(key)
        if pool is None:
            raise ArmError(
                404, "NotFound", f"Agent pool {m['pool']} in cluster {m['cluster']} not found."
            )
        return pool

    async def _get_pool(self, request: web.Request) -> web.Response:
        return web.json_response(self._pool(request).body())

    def _refuse_if_busy(self, pool: FakeAgentPool) -> None:
        if self.conflict_next > 0:
            self.conflict_next -= 1
            raise ArmError(
                409,
                "AnotherOperationInProgress",
                f"Another operation is in progress on agent pool {pool.name}; retry later.",
            )
        running = self.running(pool)
        if running is not None:
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"Operation is not allowed because there's an in progress {running.kind} "
                f"operation on agent pool {pool.name} ({running.id}).",
            )

    def _start(self, request: web.Request, operation: FakeOperation) -> dict[str, str]:
        self.operations[operation.id] = operation
        state = "Scaling" if operation.kind == "scale" else "Deleting"
        operation.pool.properties["provisioningState"] = state
        base = (
            f"{self.url}/subscriptions/{operation.pool.subscription}/providers/{PROVIDER}"
            f"/locations/{LOCATION}"
        )
        version = request.query["api-version"]
        return {
            "Azure-AsyncOperation": f"{base}/operations/{operation.id}?api-version={version}",
            "Location": f"{base}/operationresults/{operation.id}?api-version={version}",
            "Retry-After": str(self.retry_after),
        }

    def _new_operation(self, pool: FakeAgentPool, kind: str) -> FakeOperation:
        operation = FakeOperation(
            id=f"op-{next(self._ids):04d}", pool=pool, kind=kind, polls_left=self.in_progress_polls
        )
        operation.error, self.failure = self.failure, None
        return operation

    async def _put_pool(self, request: web.Request) -> web.Response:
        pool = self._pool(request)
        body = await _json_body(request)
        self.put_bodies.append(body)
        properties = body.get("properties")
        if not isinstance(properties, dict):
            raise ArmError(400, "InvalidParameter", "The request body has no properties object.")
        count = properties.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 1000:
            raise ArmError(400, "InvalidParameter", f"count must be 0..1000, got {count!r}.")
        if properties.get("enableAutoScaling") and count != pool.count:
            raise ArmError(
                400,
                "InvalidParameter",
                "Cannot set count on an agent pool with enableAutoScaling.",
            )
        self._refuse_if_busy(pool)
        operation = self._new_operation(pool, "scale")
        # A PUT replaces the properties: what the body omits is gone once it lands.
        operation.properties = {k: v for k, v in properties.items() if k not in _READ_ONLY}
        headers = self._start(request, operation)
        log.info("PUT %s count=%d as %s", pool.resource_id, count, operation.id)
        return web.json_response(pool.body(), status=201, headers=headers)

    async def _list_machines(self, request: web.Request) -> web.Response:
        pool = self._pool(request)
        value = []
        for index, name in enumerate(pool.machines):
            instance = int(name.rsplit("vmss", 1)[1], 36)
            value.append(
                {
                    "id": f"{pool.resource_id}/machines/{name}",
                    "name": name,
                    "type": f"{PROVIDER}/managedClusters/agentPools/machines",
                    "properties": {
                        "network": {
                            "ipAddresses": [{"family": "IPv4", "ip": f"10.224.0.{index + 4}"}]
                        },
                        "resourceId": (
                            f"/subscriptions/{pool.subscription}/resourceGroups/MC_{pool.cluster}"
                            f"/providers/Microsoft.Compute/virtualMachineScaleSets/"
                            f"{name.rsplit('vmss', 1)[0]}vmss/virtualMachines/{instance}"
                        ),
                    },
                }
            )
        return web.json_response({"value": value})

    async def _delete_machines(self, request: web.Request) -> web.Response:
        pool = self._pool(request)
        body = await _json_body(request)
        self.delete_machines_bodies.append(body)
        names = body.get("machineNames")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ArmError(400, "InvalidParameter", "machineNames must be a non-empty list.")
        unknown = [n for n in names if n not in pool.machines]
        if unknown:
            raise ArmError(
                400,
                "InvalidParameter",
                f"Machines {', '.join(unknown)} are not in agent pool {pool.name}.",
            )
        self._refuse_if_busy(pool)
        operation = self._new_operation(pool, "deleteMachines")
        operation.machines = list(names)
        headers = self._start(request, operation)
        log.info("deleteMachines %s %s as %s", pool.resource_id, names, operation.id)
        return web.Response(status=202, headers=headers)

    def _operation(self, request: web.Request) -> FakeOperation:
        operation = self.operations.get(request.match_info["op"])
        if operation is None:
            raise ArmError(404, "NotFound", f"Operation {request.match_info['op']} not found.")
        return operation

    def _poll(self, operation: FakeOperation) -> None:
        if operation.status != "InProgress" or self.held:
            return
        if operation.polls_left > 0:
            operation.polls_left -= 1
            return
        self.finish(operation)

    async def _operation_status(self, request: web.Request) -> web.Response:
        operation = self._operation(request)
        self._poll(operation)
        headers = {"Retry-After": str(self.retry_after)} if operation.status == "InProgress" else {}
        return web.json_response(operation.body(), headers=headers)

    async def _operation_result(self, request: web.Request) -> web.Response:
        operation = self._operation(request)
        if operation.status == "InProgress":
            return web.Response(status=202, headers={"Retry-After": str(self.retry_after)})
        if operation.status == "Failed" and operation.error is not None:
            raise ArmError(400, operation.error["code"], operation.error["message"])
        return web.Response(status=204)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArmError(400, "InvalidRequestContent", "The request body is not JSON.") from None
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", "The request body must be a JSON object.")
    return body


class ArmError(Exception):
    """An ARM error answer: the handlers raise it, the middleware sends it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message}}
        return web.json_response(body, status=self.status)
