"""A pod's effective request at the smallest amounts, where a rule's starting value decides.

Protects the init-container peak starting from zero, not from one unit: a pod whose only EPC is
one byte in a plain init container still asks for that byte (Kubernetes' rule: the larger of the
app containers' sum and each init container's own need). Worked out by hand.
"""

from __future__ import annotations

from fractions import Fraction

from epcsched.core.requests import ContainerRequests, pod_requests

EPC = "sgx.intel.com/epc"


def one(amount: str, *, restartable: bool = False) -> ContainerRequests:
    return ContainerRequests({EPC: Fraction(amount)}, {}, restartable=restartable)


def test_a_one_byte_init_container_is_the_pods_whole_request() -> None:
    assert pod_requests([], [one("1")]) == {EPC: Fraction(1)}


def test_a_sub_byte_init_request_is_kept_exactly() -> None:
    # Quantities such as 500m are fractions of a unit until the EPC table rounds them up.
    assert pod_requests([], [one("1/2")]) == {EPC: Fraction(1, 2)}


def test_init_peak_against_apps_at_one_byte() -> None:
    # Apps need 1 byte, a plain init container 2: the pod needs 2. The other way round, 2.
    assert pod_requests([one("1")], [one("2")]) == {EPC: Fraction(2)}
    assert pod_requests([one("2")], [one("1")]) == {EPC: Fraction(2)}
    # A one-byte sidecar runs beside the apps and beside the later init container: 1 + 2 = 3
    # during init, 1 + 1 = 2 after; the pod needs 3.
    assert pod_requests([one("1")], [one("1", restartable=True), one("2")]) == {EPC: Fraction(3)}
