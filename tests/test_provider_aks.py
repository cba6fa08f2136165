"""The `aks` node-pool provider against a fake ARM endpoint over HTTPS, with the real Azure SDK.

Protects: size() reads the agent pool's count and says busy while an operation runs; set_target
sends the pool back as read with only the count changed, returns before the long-running
operation ends, does nothing when the count is already right, and surfaces a failed operation
once through the next size(); remove_node deletes exactly the named machine (the node name) and
treats a gone node as done; 409s are retryable and every other failure (auth, TLS, unreachable,
unknown pool) is one ProviderError line naming the pool and the ARM resource; settings
validation names the key path; the missing-extra guard gives the install hint.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from epcsched.autoscaler.providers.aks import (
    EXTRA_HINT,
    AksProvider,
    require_sdk,
    validate_aks_settings,
)
from epcsched.autoscaler.providers.base import PoolSize, ProviderError
from epcsched.config import NodePoolSettings
from epcsched.netutil import free_port
from epcsched.testing.arm import FakeAgentPool, FakeArm, StaticCredential, TestCertificates

pytestmark = pytest.mark.timeout(20)

SUB = "6f1c3a52-0d9e-4f7b-9a43-2b8e5c1d7e90"
RG = "rg-enclaves"
CLUSTER = "aks-prod"
RESOURCE = (
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerService"
    f"/managedClusters/{CLUSTER}/agentPools/dcsv3"
)


def aks_pool(agent_pool: str = "dcsv3", **overrides: str) -> NodePoolSettings:
    settings = {
        "subscriptionId": SUB,
        "resourceGroup": RG,
        "cluster": CLUSTER,
        "agentPool": agent_pool,
        **overrides,
    }
    return NodePoolSettings(name=f"pool-{agent_pool}", provider="aks", aks=settings)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return TestCertificates.create(tmp_path_factory.mktemp("arm-tls"))


@pytest.fixture
async def arm(certificates: TestCertificates) -> AsyncIterator[FakeArm]:
    async with FakeArm(certificates, token="token-for-tests", in_progress_polls=2) as server:
        yield server


@pytest.fixture
def dcsv3(arm: FakeArm) -> FakeAgentPool:
    return arm.add_pool(SUB, RG, CLUSTER, "dcsv3", count=2)


def make_provider(
    arm: FakeArm,
    *,
    credential: StaticCredential | None = None,
    base_url: str | None = None,
    connection_verify: bool | str | None = None,
    retry_total: int = 3,
) -> AksProvider:
    return AksProvider(
        credential=credential or StaticCredential(arm.token),
        base_url=base_url or arm.url,
        connection_verify=(
            str(arm.certificates.ca_file) if connection_verify is None else connection_verify
        ),
        polling_interval=0.01,
        timeout=5.0,
        retry_total=retry_total,
    )


@pytest.fixture
async def provider(arm: FakeArm) -> AsyncIterator[AksProvider]:
    aks = make_provider(arm)
    yield aks
    await aks.close()


def mutations(arm: FakeArm) -> list[tuple[str, str]]:
    return [(method, path) for method, path in arm.requests if method in ("PUT", "POST")]


async def test_size_reads_the_agent_pool_count(arm: FakeArm, dcsv3: FakeAgentPool) -> None:
    credential = StaticCredential(arm.token)
    aks = make_provider(arm, credential=credential)
    try:
        assert await aks.size(aks_pool()) == PoolSize(target=2, busy=False)
    finally:
        await aks.close()
    assert arm.requests == [("GET", RESOURCE)]
    # The token is asked for the ARM endpoint it is sent to, not the public cloud's.
    assert credential.scopes == [f"{arm.url}/.default"]


async def test_default_credential_needs_no_setup_to_build() -> None:
    # DefaultAzureCredential finds workload identity etc. only when asked for a token, so a
    # provider builds (and closes) anywhere; which identity it uses is Azure's business.
    aks = AksProvider()
    await aks.close()


async def test_set_target_returns_before_the_operation_ends(
    arm: FakeArm,
    dcsv3: FakeAgentPool,
    provider: AksProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = aks_pool()
    arm.held = True
    with caplog.at_level(logging.INFO, logger="epcsched.autoscaler.aks"):
        await provider.set_target(pool, 4)
    operation = arm.running(dcsv3)
    assert operation is not None and operation.kind == "scale"
    assert any(pool.name in r.message and RESOURCE in r.message for r in caplog.records)
    # Still running: the old count, busy by AKS's provisioningState...
    assert await provider.size(pool) == PoolSize(target=2, busy=True)
    # ...and busy by our own operation even when the state already reads terminal.
    dcsv3.properties["provisioningState"] = "Succeeded"
    assert await provider.size(pool) == PoolSize(target=2, busy=True)

    arm.held = False
    await provider.settle(pool)
    assert await provider.size(pool) == PoolSize(target=4, busy=False)
    assert len(dcsv3.machines) == 4
    # The PUT replaced the pool with what was read, count changed: nothing else was lost.
    (body,) = arm.put_bodies
    assert body["properties"]["count"] == 4
    assert body["properties"]["vmSize"] == "Standard_DC4s_v3"
    assert body["properties"]["nodeLabels"] == {"agentpool": "dcsv3"}
    assert dcsv3.properties["vmSize"] == "Standard_DC4s_v3"


async def test_set_target_is_idempotent(
    arm: FakeArm, dcsv3: FakeAgentPool, provider: AksProvider
) -> None:
    pool = aks_pool()
    await provider.set_target(pool, 2)
    assert mutations(arm) == []

    arm.held = True
    await provider.set_target(pool, 3)
    await provider.set_target(pool, 3)  # the same request while it runs: nothing new sent
    assert mutations(arm) == [("PUT", RESOURCE)]
    with pytest.raises(ProviderError) as refused:
        await provider.set_target(pool, 5)  # a different one must wait for the first
    assert refused.value.retryable
    assert mutations(arm) == [("PUT", RESOURCE)]

    arm.held = False
    await provider.settle(pool)
    await provider.set_target(pool, 3)
    assert mutations(arm) == [("PUT", RESOURCE)]
    assert await provider.size(pool) == PoolSize(target=3, busy=False)


async def test_conflict_while_another_operation_runs_is_retryable(
    arm: FakeArm, dcsv3: FakeAgentPool, provider: AksProvider
) -> None:
    pool = aks_pool()
    other = make_provider(arm)  # another client of the same pool (a person, a pipeline)
    try:
        arm.held = True
        await other.set_target(pool, 3)
        assert await provider.size(pool) == PoolSize(target=2, busy=True)
        with pytest.raises(ProviderError) as conflict:
            await provider.set_target(pool, 5)
        assert conflict.value.retryable
        message = str(conflict.value)
        assert "\n" not in message
        assert message.startswith(f"aks pool {pool.name}: ")
        assert RESOURCE in message and "409 OperationNotAllowed" in message
        with pytest.raises(ProviderError) as removal:
            await provider.remove_node(pool, dcsv3.machines[0], 1)
        assert removal.value.retryable
        arm.held = False
        await other.settle(pool)
    finally:
        await other.close()

    arm.conflict_next = 1
    with pytest.raises(ProviderError) as injected:
        await provider.set_target(pool, 5)
    assert injected.value.retryable
    assert "AnotherOperationInProgress" in str(injected.value)
    await provider.set_target(pool, 5)  # the conflict is over: the same call now goes through
    await provider.settle(pool)
    assert await provider.size(pool) == PoolSize(target=5, busy=False)


async def test_failed_operation_is_reported_once_by_the_next_size(
    arm: FakeArm, dcsv3: FakeAgentPool, provider: AksProvider
) -> None:
    pool = aks_pool()
    arm.fail_next_operation("Allocation failed: no Standard_DC4s_v3 capacity in westeurope")
    await provider.set_target(pool, 4)
    await provider.settle(pool)
    with pytest.raises(ProviderError) as failed:
        await provider.size(pool)
    message = str(failed.value)
    assert not failed.value.retryable
    assert message == (
        f"aks pool {pool.name}: scale from 2 to 4 ({RESOURCE}) failed: "
        "ScaleVMSSFailed: Allocation failed: no Standard_DC4s_v3 capacity in westeurope"
    )
    # Reported once; the pool kept its count and AKS says Failed, which is not busy.
    assert await provider.size(pool) == PoolSize(target=2, busy=False)
    assert dcsv3.provisioning_state == "Failed"


async def test_remove_node_deletes_exactly_that_machine(
    arm: FakeArm, provider: AksProvider
) -> None:
    fake = arm.add_pool(SUB, RG, CLUSTER, "dcsv3", count=3)
    first, second, third = fake.machines
    assert second.startswith("aks-dcsv3-") and second.endswith("-vmss000001")
    pool = aks_pool()
    arm.held = True
    await provider.remove_node(pool, second, 2)
    assert (await provider.size(pool)).busy
    arm.held = False
    await provider.settle(pool)
    assert arm.delete_machines_bodies == [{"machineNames": [second]}]
    assert fake.machines == [first, third]
    assert await provider.size(pool) == PoolSize(target=2, busy=False)


async def test_remove_node_that_is_gone_is_not_an_error(
    arm: FakeArm, dcsv3: FakeAgentPool, provider: AksProvider
) -> None:
    pool = aks_pool()
    gone = dcsv3.machine_name(7)
    assert gone not in dcsv3.machines
    await provider.remove_node(pool, gone, 2)
    assert mutations(arm) == []
    assert await provider.size(pool) == PoolSize(target=2, busy=False)


async def test_a_pool_scaled_by_aks_itself_is_refused(arm: FakeArm, provider: AksProvider) -> None:
    arm.add_pool(SUB, RG, CLUSTER, "dcsv3", count=2, enable_auto_scaling=True)
    with pytest.raises(ProviderError, match="enableAutoScaling") as refused:
        await provider.set_target(aks_pool(), 3)
    assert not refused.value.retryable
    assert mutations(arm) == []


async def test_failures_are_one_line_naming_pool_and_resource(
    arm: FakeArm, dcsv3: FakeAgentPool, provider: AksProvider
) -> None:
    async def failure(aks: AksProvider, pool: NodePoolSettings) -> str:
        with pytest.raises(ProviderError) as caught:
            await aks.size(pool)
        message = str(caught.value)
        assert not caught.value.retryable
        assert "\n" not in message
        assert message.startswith(f"aks pool {pool.name}: read (/subscriptions/{SUB}/")
        return message

    missing = aks_pool("nosuch")
    assert "HTTP 404 NotFound: Agent pool nosuch" in await failure(provider, missing)

    wrong_token = make_provider(arm, credential=StaticCredential("expired"))
    untrusted = make_provider(arm, connection_verify=True, retry_total=0)
    closed_port = make_provider(arm, base_url=f"https://127.0.0.1:{free_port()}", retry_total=0)
    try:
        assert "HTTP 401 InvalidAuthenticationToken" in await failure(wrong_token, aks_pool())
        assert "CERTIFICATE_VERIFY_FAILED" in await failure(untrusted, aks_pool())
        assert "cannot reach the ARM endpoint" in await failure(closed_port, aks_pool())
    finally:
        for aks in (wrong_token, untrusted, closed_port):
            await aks.close()


async def test_close_stops_watching_but_leaves_the_operation_to_azure(
    arm: FakeArm, dcsv3: FakeAgentPool
) -> None:
    aks = make_provider(arm)
    arm.held = True
    await aks.set_target(aks_pool(), 3)
    await aks.close()
    operation = arm.running(dcsv3)
    assert operation is not None and operation.status == "InProgress"


def test_missing_extra_gives_the_install_hint() -> None:
    require_sdk()  # installed here (the test extra includes it)
    with pytest.raises(ProviderError) as missing:
        require_sdk(("azure.mgmt.containerservice.aio", "azure.mgmt.no_such_module_for_tests"))
    message = str(missing.value)
    assert message.startswith(EXTRA_HINT)
    assert "azure.mgmt.no_such_module_for_tests" in message
    assert EXTRA_HINT == "the aks provider needs `pip install epcsched[aks]`"


def test_settings_validation_names_the_key_path() -> None:
    assert validate_aks_settings(aks_pool(), index=0) == []
    pool = NodePoolSettings(
        name="dcsv3",
        provider="aks",
        aks={
            "subscriptionId": "not-a-uuid",
            "resourceGroup": "rg.",
            "clusterName": "aks-prod",
            "agentPool": "DCsv3",
        },
    )
    where = "autoscaler.nodePools[2].aks"
    assert validate_aks_settings(pool, index=2) == [
        f"{where}.clusterName: unknown key (known: agentPool, cluster, resourceGroup, "
        "subscriptionId)",
        f"{where}.subscriptionId: must be a subscription UUID, got 'not-a-uuid'",
        f"{where}.resourceGroup: must be 1-90 letters, digits, '_', '-', '.', '(' or ')', "
        "not ending in '.', got 'rg.'",
        f"{where}.cluster: required",
        f"{where}.agentPool: must be 1-12 lowercase letters or digits, starting with a letter, "
        "got 'DCsv3'",
    ]
    assert validate_aks_settings(NodePoolSettings(name="x", provider="aks"), index=1) == [
        f"autoscaler.nodePools[1].aks.{key}: required"
        for key in ("subscriptionId", "resourceGroup", "cluster", "agentPool")
    ]


async def test_invalid_settings_fail_before_any_request(
    arm: FakeArm, provider: AksProvider
) -> None:
    pool = aks_pool(cluster="")
    with pytest.raises(ProviderError) as invalid:
        await provider.size(pool)
    assert str(invalid.value) == (
        f"aks pool {pool.name}: autoscaler.nodePools[{pool.name}].aks.cluster: required"
    )
    assert arm.requests == []
