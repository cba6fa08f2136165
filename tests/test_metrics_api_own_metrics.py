"""The metrics API tells an operator about itself: its version and bound address at start, and a
`/metrics` that counts what it was asked and answered and how long Prometheus took.

`/metrics` is guarded as k8s.io/apiserver guards it on aggregated servers (only the health paths
are open): no credentials is 401, a token whose user RBAC does not allow `get` on the
non-resource URL `/metrics` is 403 after a SubjectAccessReview naming that path, and
Prometheus' token with the grant gets the text format with `epcsched_build_info`, the process
series, requests by kind, metric and code, and the Prometheus queries sent (failed ones
counted, answers from the cache not). Also protects `--kube-api-qps`/`--kube-api-burst`: the
informers and the reviews share the rate limit. Runs the real server (`serve()`) over TLS on
loopback against the fake API server, and a real Prometheus where a query must succeed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from epcsched.build import VERSION
from epcsched.testing.access import Grant, TokenUser
from tests.prometheus_fixtures import PrometheusServer, backfill
from tests.test_metrics_api import (
    HPA_USER,
    HpaClient,
    System,
    history,
    start_system,
)

pytestmark = pytest.mark.timeout(90)

NO_PROMETHEUS = "http://127.0.0.1:9"
PROM_USER = "system:serviceaccount:monitoring:prometheus-k8s"
PROM_TOKEN = "prometheus-token-0123456789"
ALICE_TOKEN = "alice-token-0123456789"
RATIO = "sgx_epc_usage_ratio"

GRANTS = [
    Grant(
        users=(HPA_USER,),
        verbs=("get", "list"),
        api_groups=("custom.metrics.k8s.io", "external.metrics.k8s.io"),
        resources=("*",),
    ),
    Grant(users=(HPA_USER, "alice"), verbs=("get",), non_resource_urls=("/apis", "/apis/*")),
    # What kube-prometheus gives its Prometheus: get on the non-resource URL /metrics.
    Grant(users=(PROM_USER,), verbs=("get",), non_resource_urls=("/metrics",)),
]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _start(
    tmp_path: Path, url: str, *, qps: float | None = None, burst: int | None = None
) -> AsyncIterator[System]:
    async for running in start_system(tmp_path, url, grants=GRANTS, qps=qps, burst=burst):
        running.api.access.tokens[PROM_TOKEN] = TokenUser(PROM_USER)
        running.api.access.tokens[ALICE_TOKEN] = TokenUser("alice")
        yield running


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus holding test_metrics_api's recorded EPC history."""
    work = tmp_path_factory.mktemp("prometheus-own-metrics")
    server = PrometheusServer(work)
    backfill(server.data_dir, history(), work)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    async for running in _start(tmp_path, NO_PROMETHEUS):
        yield running


async def scrape(system: System, token: str | None = PROM_TOKEN) -> tuple[int, str, str]:
    """(status, content type, body) of GET /metrics with `token`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(system.url + "/metrics", ssl=system.client_tls(), headers=headers) as response,
    ):
        return response.status, response.content_type, await response.text()


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def requests(found: Samples) -> dict[tuple[str, str, str], float]:
    """epcsched_metrics_api_requests_total by (kind, metric, code)."""
    return {
        (labels["kind"], labels["metric"], labels["code"]): value
        for (name, pairs), value in found.items()
        if name == "epcsched_metrics_api_requests_total"
        for labels in [dict(pairs)]
    }


def by_query(found: Samples, name: str) -> dict[str, float]:
    return {
        dict(pairs)["query"]: value
        for (sample, pairs), value in found.items()
        if sample == name and "query" in dict(pairs)
    }


async def test_metrics_needs_a_token_that_rbac_allows_for_the_metrics_path(
    system: System,
) -> None:
    status, _, _ = await scrape(system, token=None)
    assert status == 401
    # Alice may read /apis but not /metrics: refused after a review naming the path.
    status, _, _ = await scrape(system, token=ALICE_TOKEN)
    assert status == 403
    assert system.api.access.access_reviews()[-1]["spec"] == {
        "user": "alice",
        "groups": ["system:authenticated"],
        "nonResourceAttributes": {"path": "/metrics", "verb": "get"},
    }
    status, content_type, text = await scrape(system)
    assert (status, content_type) == (200, "text/plain")
    found = samples(text)
    assert found[("epcsched_build_info", (("version", VERSION),))] == 1.0
    assert found[("process_resident_memory_bytes", ())] > 0
    assert any(name == "python_info" for name, _ in found)


async def test_requests_are_counted_by_kind_metric_and_code(system: System) -> None:
    async with aiohttp.ClientSession() as session:
        hpa = HpaClient(system, session)
        for _ in range(2):
            # Past authentication and authorisation, the missing Prometheus makes each a 503.
            status, _ = await hpa.pod_metric("hot", RATIO, "app=enclave", version="v1beta2")
            assert status == 503
        status, _ = await hpa.get("/apis/custom.metrics.k8s.io/v1beta2")
        assert status == 200
        status, _ = await hpa.pod_metric("hot", "sgx_made_up", "app=enclave", version="v1beta2")
        assert status == 404
        # No front-proxy certificate: refused before anything is looked up.
        async with session.get(
            system.url + f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/hot/pods/%2A/{RATIO}",
            ssl=system.client_tls(),
        ) as response:
            assert response.status == 401
    status, _, text = await scrape(system)
    assert status == 200
    found = samples(text)
    # The scrape is counted once it is answered, so it shows in the next one.
    assert requests(found) == {
        ("pods", RATIO, "503"): 2.0,
        ("pods", RATIO, "401"): 1.0,
        ("pods", "", "404"): 1.0,
        ("discovery", "", "200"): 1.0,
    }
    seconds = {
        dict(pairs)["kind"]: value
        for (name, pairs), value in found.items()
        if name == "epcsched_metrics_api_request_seconds_count"
    }
    assert seconds == {"pods": 4.0, "discovery": 1.0}
    # A failed query is not cached: each 503 sent its own, and each failed.
    failures = by_query(found, "epcsched_metrics_api_prometheus_query_failures_total")
    assert failures == {"usage": 2.0, "limit_hits": 0.0, "node_used": 0.0, "node_paging": 0.0}
    assert by_query(found, "epcsched_metrics_api_prometheus_query_seconds_count") == {"usage": 2.0}
    _, _, text = await scrape(system)
    assert requests(samples(text))[("metrics", "", "200")] == 1.0


async def test_query_time_counts_queries_sent_not_answers_from_the_cache(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    async for system in _start(tmp_path, prometheus.url):
        async with aiohttp.ClientSession() as session:
            hpa = HpaClient(system, session)
            for _ in range(3):
                status, body = await hpa.pod_metric("hot", RATIO, "app=enclave", version="v1beta2")
                assert (status, len(body["items"])) == (200, 3)
        _, _, text = await scrape(system)
        found = samples(text)
        # Three answers within the 10 s cache: one query, which succeeded.
        assert requests(found) == {("pods", RATIO, "200"): 3.0}
        assert by_query(found, "epcsched_metrics_api_prometheus_query_seconds_count") == {
            "usage": 1.0
        }
        assert by_query(found, "epcsched_metrics_api_prometheus_query_seconds_sum")["usage"] > 0
        assert set(
            by_query(found, "epcsched_metrics_api_prometheus_query_failures_total").values()
        ) == {0.0}


async def test_start_logs_the_version_and_the_address_actually_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="epcsched.metricsapi")
    async for system in _start(tmp_path, NO_PROMETHEUS):
        port = int(system.url.rsplit(":", 1)[1])
        (record,) = [r for r in caplog.records if "listening on" in r.getMessage()]
        assert f"epcsched {VERSION} metrics API listening on https://127.0.0.1:{port}" in (
            record.getMessage()
        )
        assert (record.__dict__["version"], record.__dict__["address"]) == (
            VERSION,
            f"127.0.0.1:{port}",
        )
        assert port != 0


async def test_informers_and_reviews_share_the_api_rate_limit(tmp_path: Path) -> None:
    # One request at once, then 20 a second: the start-up's lists of nodes and pods and the
    # read of the front-proxy ConfigMap, sent together, must wait for each other.
    async for system in _start(tmp_path, NO_PROMETHEUS, qps=20.0, burst=1):
        limiter = system.configuration.rate_limiter
        assert (limiter.qps, limiter.burst) == (20.0, 1)
        assert limiter.waited > 0
