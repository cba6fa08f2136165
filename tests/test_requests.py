"""A pod's effective EPC request follows Kubernetes' rule (sidecars, init containers, overhead)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from epcsched.core.requests import ContainerRequests, pod_requests
from epcsched.objects import ObjectError, Pod, pod_info
from epcsched.quantity import DEFAULT_EPC_RESOURCES, MIB

EPC = "sgx.intel.com/epc"


def container(epc: str | None = None, *, limit: str | None = None, sidecar: bool = False) -> Any:
    resources: dict[str, Any] = {}
    if epc is not None:
        resources["requests"] = {EPC: epc}
    if limit is not None:
        resources["limits"] = {EPC: limit}
    out: dict[str, Any] = {"name": "c", "resources": resources}
    if sidecar:
        out["restartPolicy"] = "Always"
    return out


def epc_of(spec: dict[str, Any]) -> int:
    info = pod_info(
        msgspec.convert({"metadata": {"name": "p"}, "spec": spec}, Pod), DEFAULT_EPC_RESOURCES
    )
    return info.epc.get(EPC, 0)


def test_app_containers_add_up() -> None:
    assert epc_of({"containers": [container("10Mi"), container("20Mi")]}) == 30 * MIB


def test_limit_without_request_implies_request() -> None:
    assert epc_of({"containers": [container(limit="64Mi")]}) == 64 * MIB


def test_request_wins_over_limit_when_both_given() -> None:
    assert epc_of({"containers": [container("16Mi", limit="64Mi")]}) == 16 * MIB


def test_plain_init_container_runs_alone() -> None:
    spec = {"containers": [container("10Mi")], "initContainers": [container("50Mi")]}
    assert epc_of(spec) == 50 * MIB
    spec = {"containers": [container("80Mi")], "initContainers": [container("50Mi")]}
    assert epc_of(spec) == 80 * MIB


def test_sidecars_add_to_apps_and_to_later_init_containers() -> None:
    spec = {
        "containers": [container("10Mi")],
        "initContainers": [
            container("5Mi", sidecar=True),
            container("40Mi"),
            container("3Mi", sidecar=True),
        ],
    }
    # Apps + sidecars = 18Mi; the plain init runs beside the first sidecar only: 45Mi.
    assert epc_of(spec) == 45 * MIB


def test_init_container_before_sidecar_does_not_count_it() -> None:
    spec = {
        "containers": [container("1Mi")],
        "initContainers": [container("30Mi"), container("20Mi", sidecar=True)],
    }
    assert epc_of(spec) == 30 * MIB


def test_overhead_is_added() -> None:
    spec = {"containers": [container("10Mi")], "overhead": {EPC: "2Mi"}}
    assert epc_of(spec) == 12 * MIB


def test_mib_named_resources_count_mib() -> None:
    spec = {
        "containers": [
            {
                "name": "c",
                "resources": {"requests": {"kubernetes.azure.com/sgx_epc_mem_in_MiB": "10"}},
            }
        ]
    }
    info = pod_info(
        msgspec.convert({"metadata": {"name": "p"}, "spec": spec}, Pod), DEFAULT_EPC_RESOURCES
    )
    assert info.epc == {"kubernetes.azure.com/sgx_epc_mem_in_MiB": 10 * MIB}


def test_pod_without_epc_requests_none() -> None:
    assert epc_of({"containers": [{"name": "c"}]}) == 0


def test_invalid_quantity_names_the_field() -> None:
    with pytest.raises(ObjectError, match=r"spec\.initContainers\[0\]\.resources\.limits"):
        epc_of({"containers": [], "initContainers": [container(limit="lots")]})


def test_negative_quantity_is_refused() -> None:
    with pytest.raises(ObjectError, match="negative"):
        epc_of({"containers": [container("-1Mi")]})


amounts = st.integers(min_value=0, max_value=2**40).map(Fraction)
containers = st.builds(
    lambda r, sidecar: ContainerRequests(requests={EPC: r}, limits={}, restartable=sidecar),
    amounts,
    st.booleans(),
)


@given(
    st.lists(containers.filter(lambda c: not c.restartable), max_size=5),
    st.lists(containers, max_size=5),
)
def test_effective_request_bounds(
    apps: list[ContainerRequests], inits: list[ContainerRequests]
) -> None:
    total = pod_requests(apps, inits).get(EPC, Fraction(0))
    app_sum = sum((c.requests[EPC] for c in apps), Fraction(0))
    sidecar_sum = sum((c.requests[EPC] for c in inits if c.restartable), Fraction(0))
    # Never less than what runs at steady state, nor than any single init container.
    assert total >= app_sum + sidecar_sum
    for c in inits:
        assert total >= c.requests[EPC]
    # Never more than running everything at once.
    assert total <= app_sum + sum((c.requests[EPC] for c in inits), Fraction(0))
