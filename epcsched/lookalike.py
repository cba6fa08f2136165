"""Resource names that look like EPC but are not configured as EPC resources.

A pod asking for `sgx.intel.com/ecp` (a typo) or for a plugin's name epcsched was not told about
is, to epcsched, a pod that asks for no EPC: every node passes and nothing says why the enclave
later fails to start or is never placed where it should be. Such names are flagged with the
nearest configured name, in `explain` and in the extender's log, instead of being silently
accepted.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable

from epcsched.objects import ObjectError, Pod, pod_resource_amounts

NOT_EPC = frozenset({"sgx.intel.com/enclave", "sgx.intel.com/provision"})
"""Intel's SGX device plugin names for the enclave and provisioning device files: SGX, not EPC."""


def lookalikes(
    requested: Iterable[str], configured: Collection[str]
) -> list[tuple[str, str | None]]:
    """Each requested name containing `epc` or `sgx` that is not configured, with the nearest
    configured name (None when none is close)."""
    found = []
    for name in sorted(set(requested)):
        lowered = name.lower()
        if name in configured or name in NOT_EPC or ("epc" not in lowered and "sgx" not in lowered):
            continue
        close = difflib.get_close_matches(name, list(configured), n=1, cutoff=0.6)
        found.append((name, close[0] if close else None))
    return found


def describe(name: str, nearest: str | None) -> str:
    """One sentence about a look-alike name, for a warning."""
    hint = f"did you mean {nearest}?" if nearest else "add it to epc.resources if it is EPC"
    return (
        f"requests {name}, which looks like EPC but is not a configured EPC resource "
        f"(epc.resources): {hint} Until then epcsched treats it as asking for no EPC"
    )


def pod_lookalikes(pod: Pod, configured: Collection[str]) -> list[tuple[str, str | None]]:
    """`lookalikes` of every resource `pod` requests or limits."""
    try:
        names = pod_resource_amounts(pod)
    except ObjectError:
        return []  # the pod's own error is reported where it is read
    return lookalikes(names, configured)
