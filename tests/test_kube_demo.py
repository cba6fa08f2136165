"""The live-cluster demo runs end to end and shows the decision change it promises.

Protects issue 3 point 7 (the part `make demo` calls): fake API server with the example cluster,
`epcsched extender --kubeconfig --bind` in its own process, an enclave pod created through the
API, the filter decision changing when another enclave takes the preferred node, and the bind.
"""

from __future__ import annotations

import io

import pytest

from epcsched.kube.demo import cluster_demo


@pytest.mark.timeout(60)
async def test_cluster_demo_shows_the_decision_change() -> None:
    out = io.StringIO()
    await cluster_demo(out)
    text = out.getvalue()
    assert "kubectl create -f examples/enclave-pod.yaml" in text
    assert "=> the decision changed: aks-dcsv3-1 is out, aks-dcsv3-2 takes the pod" in text
    assert "aks-dcsv3-1   insufficient sgx.intel.com/epc: requested 6Gi, free 1Gi of 16Gi" in text
    assert "Error=''; the API now shows spec.nodeName=aks-dcsv3-2" in text
    # After the other enclave is deleted, the preferred node passes again.
    assert text.rsplit("kubectl delete pod batch-enclave", 1)[1].count("passes: aks-dcsv3-1") == 1
