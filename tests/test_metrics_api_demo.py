"""The metrics API part of `make demo` (issue 8 point 8): the real metrics API app, against the
fake API server with the example cluster and an in-memory source instead of Prometheus, answers
the HPA controller's `pods/*/sgx_epc_usage_ratio` request for the example kms enclaves, and the
demo prints those values and the replica count the HPA rule derives from them, in under 5 s.
Also protects the in-memory source the demo relies on."""

from __future__ import annotations

import asyncio
import io
import time

import pytest

from epcsched.metricsapi.demo import hpa_demo
from epcsched.metricsapi.source import MemorySource

pytestmark = pytest.mark.timeout(60)


async def test_demo_shows_the_served_values_and_the_replicas_they_lead_to() -> None:
    out = io.StringIO()
    started = time.perf_counter()
    busy, quiet = await asyncio.wait_for(hpa_demo(out), 30)
    elapsed = time.perf_counter() - started
    # kms-0 holds 7.6Gi of 8Gi = 950m, kms-1 3.6Gi of 4Gi = 900m; ledger-0 (app=ledger) and
    # attest-0 (no sample) are not in the list. (950 + 900) // 2 = 925, 925/800 = 1.156,
    # ceil(2 * 1.156) = 3.
    assert busy.values == {"kms-0": "950m", "kms-1": "900m"}
    assert busy.replicas == 3
    # 2Gi of 8Gi and 1Gi of 4Gi: 250m each, 0.3125, ceil(2 * 0.3125) = 1.
    assert quiet.values == {"kms-0": "250m", "kms-1": "250m"}
    assert quiet.replicas == 1
    text = out.getvalue()
    request = (
        "GET /apis/custom.metrics.k8s.io/v1beta2/namespaces/enclaves/pods/%2A/"
        "sgx_epc_usage_ratio?labelSelector=app%3Dkms  (MetricValueList)"
    )
    assert text.count(request) == 2
    assert "  kms-0      950m\n  kms-1      900m\n" in text
    assert "average 925m / 800m = 1.156, ceil(2 x 1.156) = 3 replicas" in text
    assert "average 250m / 800m = 0.312, ceil(2 x 0.312) = 1 replica\n" in text
    assert elapsed < 5.0, f"the demo part took {elapsed:.1f}s"


async def test_memory_source_serves_what_was_set_stamped_by_its_clock() -> None:
    source = MemorySource({"usage": {"uid-a": 5.0}}, clock=lambda: 1234.5)
    first = await source.series("usage")
    assert (first.time, first.values) == (1234.5, {"uid-a": 5.0})
    source.set("usage", {"uid-b": 7.0})
    assert (await source.series("usage")).values == {"uid-b": 7.0}
    # What was handed out is a copy: setting again does not change an earlier answer.
    assert first.values == {"uid-a": 5.0}
    assert (await source.series("node_paging")).values == {}
    with pytest.raises(KeyError, match="unknown series 'cpu'"):
        source.set("cpu", {})
