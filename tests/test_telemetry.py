"""Telemetry turns Prometheus data into usage and pressure, and falls back to requests safely.

Protects DESIGN.md section 4 as the extender sees it: measured EPC in use narrows free EPC
(`accounting: max`), paging above `pressure.pagingRate` or use above `pressure.usageWatermark`
fails a node for new EPC pods with a reason in words, and data that is missing or older than
`staleAfter` (by the samples' own timestamps) is dropped within one poll, with
`epcsched_telemetry_stale` at 1, the degradation in the `/readyz` detail and one log line.
Prometheus is a real server: one loaded with history by `promtool`, queried at fixed times
through an injected clock, and one scraping the project's exporter live, stopped mid-run.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from epcsched.config import ConfigError, PressureSettings, PrometheusSettings, config_from_mapping
from epcsched.core.fit import PodRequest, fit_masks, reasons
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.exporter.command import serve
from epcsched.extender.app import create_app
from epcsched.model import NodeInfo, PodInfo
from epcsched.state import SnapshotState
from epcsched.telemetry import Telemetry
from epcsched.telemetry.readings import QueryResults, evaluate
from tests.prometheus_fixtures import PrometheusServer, backfill

pytestmark = pytest.mark.timeout(60)

MiB = 2**20
EPC = "sgx.intel.com/epc"
NODES = ("n1", "n2", "n3", "n4")
# A whole minute half an hour ago: recent enough for Prometheus' retention, and every query
# names its time, so results do not depend on when the test runs.
T0 = (int(time.time()) // 60) * 60 - 1800
STEP = 15


def history() -> str:
    """Ten minutes of exporter metrics up to T0 (n4's stop a minute earlier), as OpenMetrics."""
    lines: list[str] = []

    def series(name: str, kind: str, points: dict[str, Callable[[int], int]]) -> None:
        lines.append(f"# TYPE {name} {kind}")
        sample = f"{name}_total" if kind == "counter" else name
        for node, value in points.items():
            end = T0 - 60 if node == "n4" else T0
            for t in range(T0 - 600, end + 1, STEP):
                lines.append(f'{sample}{{node="{node}"}} {value(t)} {t}')

    capacity = 94 * MiB
    series(
        "epcsched_node_epc_capacity_bytes",
        "gauge",
        {n: (lambda t: capacity) for n in NODES},
    )
    # n1 holds 40Mi, n2 90Mi (above a 90% watermark), n4 90Mi but its data stops early;
    # n3 runs a mainline kernel that reports capacity only.
    series(
        "epcsched_node_epc_free_bytes",
        "gauge",
        {"n1": lambda t: 54 * MiB, "n2": lambda t: 4 * MiB, "n4": lambda t: 4 * MiB},
    )
    # Eviction counters: n1 pages 1500/s, n2 a harmless 10/s, n4 5000/s (but stale).
    series(
        "epcsched_node_epc_evicted_pages",
        "counter",
        {
            "n1": lambda t: 1500 * (t - T0 + 600),
            "n2": lambda t: 10 * (t - T0 + 600),
            "n4": lambda t: 5000 * (t - T0 + 600),
        },
    )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def history_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    work = tmp_path_factory.mktemp("prometheus-history")
    server = PrometheusServer(work)
    backfill(server.data_dir, history(), work)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def cluster(*names: str) -> ClusterSnapshot:
    snapshot = ClusterSnapshot({EPC: 1}, accounting="max")
    for name in names:
        snapshot.upsert_node(NodeInfo(name, epc_allocatable={EPC: 94 * MiB}))
    return snapshot


def usage(snapshot: ClusterSnapshot) -> dict[str, int]:
    return {n: int(snapshot.usage[snapshot.slots[n]]) for n in snapshot.node_names()}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "epcsched.telemetry" and r.levelno == logging.WARNING
    ]


def infos(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "epcsched.telemetry" and r.levelno == logging.INFO
    ]


@pytest.mark.timeout(60)
async def test_history_gives_usage_pressure_and_falls_back_when_old(
    history_prometheus: PrometheusServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="epcsched.telemetry")
    snapshot = cluster(*NODES)
    snapshot.upsert_pod(PodInfo("ns", "a", node_name="n1", phase="Running", epc={EPC: 20 * MiB}))
    snapshot.upsert_pod(PodInfo("ns", "b", node_name="n3", phase="Running", epc={EPC: 30 * MiB}))
    registry = CollectorRegistry()
    clock = Clock(T0)
    telemetry = Telemetry(
        PrometheusSettings(url=history_prometheus.url, stale_after=30),
        PressureSettings(paging_rate=1000, usage_watermark=0.9),
        lambda: snapshot,
        registry,
        clock=clock,
    )
    assert telemetry.stale
    assert registry.get_sample_value("epcsched_telemetry_stale") == 1

    await telemetry.poll()
    assert not telemetry.stale
    assert registry.get_sample_value("epcsched_telemetry_stale") == 0
    # n3 has no free figure and n4's data is a minute old: both stay on requests.
    assert usage(snapshot) == {"n1": 40 * MiB, "n2": 90 * MiB, "n3": -1, "n4": -1}
    assert snapshot.pressure == {
        "n1": "EPC pressure: paging 1500 pages/s above 1000",
        "n2": "EPC pressure: 95.7% of EPC in use (90Mi of 94Mi), above 90%",
    }
    slots = snapshot.slots_of(NODES)
    # accounting max: n1 is short of 74Mi by requests but only 54Mi is really free.
    assert snapshot.free(EPC, slots).tolist() == [54 * MiB, 4 * MiB, 64 * MiB, 94 * MiB]
    request = PodRequest(epc={EPC: 10 * MiB})
    masks = fit_masks(snapshot, request, slots)
    assert masks.ok.tolist() == [False, False, True, True]
    assert masks.failed.tolist() == [True, True, False, False]
    why = reasons(snapshot, request, slots)
    assert why[0] == "EPC pressure: paging 1500 pages/s above 1000"
    assert why[1].endswith("EPC pressure: 95.7% of EPC in use (90Mi of 94Mi), above 90%")
    assert telemetry.detail() == {
        "prometheus": history_prometheus.url,
        "stale": False,
        "lastSuccessAgeSeconds": 0.0,
        "error": None,
        "nodes": 3,
        "pressureNodes": 2,
        "staleNodes": {"count": 1, "names": ["n4"]},
    }
    assert registry.get_sample_value("epcsched_telemetry_pressure_nodes") == 2

    # The accounting modes read the same usage differently once requests exceed real use.
    snapshot.upsert_pod(PodInfo("ns", "big", node_name="n2", phase="Running", epc={EPC: 92 * MiB}))
    expected = {
        "max": [54 * MiB, 2 * MiB, 64 * MiB, 94 * MiB],
        "usage": [54 * MiB, 4 * MiB, 64 * MiB, 94 * MiB],
        "requests": [74 * MiB, 2 * MiB, 64 * MiB, 94 * MiB],
    }
    for mode, free in expected.items():
        snapshot.accounting = mode
        assert snapshot.free(EPC, slots).tolist() == free, mode
    snapshot.accounting = "max"
    snapshot.remove_pod("ns/big")

    # 45 s on, the newest sample is older than staleAfter: everything falls back at once.
    clock.now = T0 + 45
    await telemetry.poll()
    assert telemetry.stale
    assert registry.get_sample_value("epcsched_telemetry_stale") == 1
    assert usage(snapshot) == dict.fromkeys(NODES, -1)
    assert snapshot.pressure == {}
    assert snapshot.free(EPC, slots).tolist() == [74 * MiB, 94 * MiB, 64 * MiB, 94 * MiB]
    detail = telemetry.detail()
    assert detail["stale"] is True
    assert detail["lastSuccessAgeSeconds"] == 45.0
    assert detail["error"] == "newest EPC sample is 45s old, older than staleAfter 30s"

    # Past Prometheus' 5 minute lookback nothing comes back at all.
    clock.now = T0 + 400
    await telemetry.poll()
    await telemetry.poll()
    assert telemetry.detail()["error"] == "no EPC samples in Prometheus for the configured queries"
    assert usage(snapshot) == dict.fromkeys(NODES, -1)
    assert registry.get_sample_value("epcsched_telemetry_polls_total", {"result": "ok"}) == 1
    assert registry.get_sample_value("epcsched_telemetry_polls_total", {"result": "stale"}) == 3

    # One line when telemetry started to work, one when it degraded; none per poll after that.
    assert len(infos(caplog)) == 1
    assert warnings(caplog) == [
        "EPC telemetry degraded, placing by requests alone: "
        "newest EPC sample is 45s old, older than staleAfter 30s"
    ]


@pytest.mark.timeout(30)
async def test_pressure_off_leaves_usage_only(history_prometheus: PrometheusServer) -> None:
    snapshot = cluster(*NODES)
    telemetry = Telemetry(
        PrometheusSettings(url=history_prometheus.url, stale_after=30),
        PressureSettings(),
        lambda: snapshot,
        CollectorRegistry(),
        clock=Clock(T0),
    )
    await telemetry.poll()
    assert usage(snapshot) == {"n1": 40 * MiB, "n2": 90 * MiB, "n3": -1, "n4": -1}
    assert snapshot.pressure == {}


@pytest.mark.timeout(30)
async def test_change_listeners_run_once_per_poll_after_it_applied(
    history_prometheus: PrometheusServer,
) -> None:
    """The extender rebuilds its per-node figures when a poll replaced measured use."""
    snapshot = cluster(*NODES)
    clock = Clock(T0)
    telemetry = Telemetry(
        PrometheusSettings(url=history_prometheus.url, stale_after=30),
        PressureSettings(),
        lambda: snapshot,
        CollectorRegistry(),
        clock=clock,
    )
    seen: list[dict[str, int]] = []
    telemetry.change_listeners.append(lambda: seen.append(usage(snapshot)))
    await telemetry.poll()
    # Called once, with the poll's figures already in the snapshot.
    assert seen == [{"n1": 40 * MiB, "n2": 90 * MiB, "n3": -1, "n4": -1}]
    # Two hours later every sample is stale: the figures are withdrawn, and listeners told.
    clock.now = T0 + 7200
    await telemetry.poll()
    assert seen[1:] == [{"n1": -1, "n2": -1, "n3": -1, "n4": -1}]


@pytest.mark.timeout(30)
async def test_custom_queries_and_node_label(history_prometheus: PrometheusServer) -> None:
    """The PromQL and the node label are configuration, for metrics named differently."""
    snapshot = cluster("host-n1", "host-n2")
    relabel = 'label_replace({q}, "host", "host-$1", "node", "(.*)")'
    telemetry = Telemetry(
        PrometheusSettings(
            url=history_prometheus.url,
            stale_after=30,
            node_label="host",
            used_query=relabel.format(
                q="epcsched_node_epc_capacity_bytes - epcsched_node_epc_free_bytes"
            ),
            capacity_query=relabel.format(q="epcsched_node_epc_capacity_bytes"),
            paging_query=relabel.format(q="rate(epcsched_node_epc_evicted_pages_total[1m])"),
            freshness_query=relabel.format(q="timestamp(epcsched_node_epc_free_bytes)"),
        ),
        PressureSettings(paging_rate=5, usage_watermark=0.99),
        lambda: snapshot,
        CollectorRegistry(),
        clock=Clock(T0),
    )
    await telemetry.poll()
    assert usage(snapshot) == {"host-n1": 40 * MiB, "host-n2": 90 * MiB}
    assert snapshot.pressure == {
        "host-n1": "EPC pressure: paging 1500 pages/s above 5",
        "host-n2": "EPC pressure: paging 10 pages/s above 5",
    }


@pytest.mark.timeout(30)
async def test_rejected_query_degrades_with_prometheus_message(
    history_prometheus: PrometheusServer,
) -> None:
    snapshot = cluster(*NODES)
    registry = CollectorRegistry()
    telemetry = Telemetry(
        PrometheusSettings(
            url=history_prometheus.url, stale_after=30, used_query="sum by (node) ("
        ),
        PressureSettings(),
        lambda: snapshot,
        registry,
        clock=Clock(T0),
    )
    await telemetry.poll()
    assert telemetry.stale
    error = str(telemetry.detail()["error"])
    assert error.startswith("Prometheus rejected query 'sum by (node) (': ")
    assert "parse error" in error
    assert registry.get_sample_value("epcsched_telemetry_polls_total", {"result": "error"}) == 1


@pytest.mark.timeout(30)
async def test_hung_prometheus_fails_the_poll_within_the_timeout() -> None:
    """A server that accepts connections but never answers must not hold old figures."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        snapshot = cluster("n1")
        snapshot.set_usage("n1", 10 * MiB)
        telemetry = Telemetry(
            PrometheusSettings(url=url, timeout=0.5),
            PressureSettings(),
            lambda: snapshot,
            CollectorRegistry(),
        )
        started = time.monotonic()
        await telemetry.poll()
        assert time.monotonic() - started < 3
    assert telemetry.detail()["error"] == f"Prometheus at {url} did not answer within 0.5s"
    assert usage(snapshot) == {"n1": -1}


def test_evaluate_skips_unusable_series() -> None:
    """NaN, series without the node label and odd values never become made-up figures."""

    def sample(value: str, **labels: str) -> dict[str, Any]:
        return {"metric": labels, "value": [T0, value]}

    results = QueryResults(
        used=[
            sample("NaN", node="a"),
            sample("5"),
            sample("-4096", node="b"),
            sample("100", node="c", numa="0"),
            sample("50", node="c", numa="1"),
        ],
        # Without a freshness query only Prometheus' own lookback limits the age.
        freshness=None,
    )
    readings = evaluate(results, label="node", now=T0, stale_after=10, pressure=PressureSettings())
    assert readings.problem is None
    assert readings.usage == {"c": 150}
    empty = evaluate(
        QueryResults(used=[], freshness=[]),
        label="node",
        now=T0,
        stale_after=10,
        pressure=PressureSettings(),
    )
    assert empty.problem == "no EPC samples in Prometheus for the configured queries"
    untimed = evaluate(
        QueryResults(used=[sample("7", node="c")], freshness=[]),
        label="node",
        now=T0,
        stale_after=10,
        pressure=PressureSettings(),
    )
    assert untimed.usage == {}
    assert str(untimed.problem).startswith("the freshness query gave no sample times")


def test_prometheus_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"^prometheus\.url: must start with http://"):
        config_from_mapping({"prometheus": {"url": "localhost:9090"}})
    with pytest.raises(ConfigError, match=r"^prometheus\.interval: must be positive"):
        config_from_mapping({"prometheus": {"url": "http://p:9090", "interval": 0}})
    config = config_from_mapping(
        {"prometheus": {"url": "http://p:9090", "staleAfter": "45s", "timeout": "2s"}}
    )
    assert (config.prometheus.stale_after, config.prometheus.timeout) == (45.0, 2.0)
    assert config.accounting == "max"


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `condition` held; fails the test after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.timeout(90)
async def test_live_exporter_then_prometheus_stops_and_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="epcsched.telemetry")
    root = tmp_path / "host"
    params = root / "sys/module/isgx/parameters"
    params.mkdir(parents=True)
    for name, value in {
        "sgx_nr_total_epc_pages": 23936,
        "sgx_nr_free_pages": 13936,
        "sgx_nr_evicted": 0,
        "sgx_loaded_back": 0,
    }.items():
        (params / name).write_text(f"{value}\n")
    exporter, thread = serve(root, "sgx-1", host="127.0.0.1", port=0)
    prometheus = PrometheusServer(tmp_path, targets=[f"127.0.0.1:{exporter.server_port}"])
    snapshot = cluster("sgx-1", "cpu-only")
    registry = CollectorRegistry()
    interval = 0.2
    telemetry = Telemetry(
        PrometheusSettings(url=prometheus.url, interval=interval, stale_after=5, timeout=1),
        PressureSettings(usage_watermark=0.9),
        lambda: snapshot,
        registry,
    )
    slot = snapshot.slots["sgx-1"]
    try:
        prometheus.start()
        await telemetry.start()
        await wait_for(lambda: snapshot.usage[slot] == 10000 * 4096, 20, "first usage")
        assert snapshot.pressure == {}
        assert not telemetry.stale
        # A poll may have run before Prometheus' first scrape and said so; count from here.
        before = len(warnings(caplog))

        # The node fills up: the exporter reads the new figure on the next scrape.
        (params / "sgx_nr_free_pages").write_text("1000\n")
        await wait_for(lambda: "sgx-1" in snapshot.pressure, 10, "pressure after filling up")
        assert snapshot.pressure["sgx-1"] == (
            "EPC pressure: 95.8% of EPC in use (89.6Mi of 93.5Mi), above 90%"
        )
        assert snapshot.usage[slot] == 22936 * 4096

        prometheus.stop()
        took = await wait_for(lambda: telemetry.stale, 5, "stale after Prometheus stopped")
        # Within one poll: the poll in flight plus one interval.
        assert took < interval + 1.5
        assert snapshot.pressure == {}
        assert np.all(snapshot.usage[[slot]] == -1)
        assert registry.get_sample_value("epcsched_telemetry_stale") == 1
        await asyncio.sleep(10 * interval)
        assert registry.get_sample_value("epcsched_telemetry_polls_total", {"result": "error"}) >= 5
        detail = telemetry.detail()
        assert detail["stale"] is True
        assert detail["error"] == f"cannot reach Prometheus at {prometheus.url}: Connection refused"
        assert isinstance(detail["lastSuccessAgeSeconds"], float)
        # One line for the whole outage (its first words may be from Prometheus shutting down).
        new_warnings = warnings(caplog)[before:]
        assert len(new_warnings) == 1
        assert new_warnings[0].startswith("EPC telemetry degraded, placing by requests alone: ")
        fresh_lines = len(infos(caplog))

        prometheus.start()
        await wait_for(lambda: not telemetry.stale, 20, "fresh after Prometheus came back")
        await wait_for(lambda: "sgx-1" in snapshot.pressure, 5, "pressure back")
        assert snapshot.usage[slot] == 22936 * 4096
        assert registry.get_sample_value("epcsched_telemetry_stale") == 0
        assert len(warnings(caplog)) == before + 1
        assert len(infos(caplog)) == fresh_lines + 1
    finally:
        await telemetry.stop()
        prometheus.stop()
        exporter.shutdown()
        exporter.server_close()
        thread.join(timeout=5)
    # Stopped telemetry leaves nothing behind that nobody keeps up to date.
    assert snapshot.usage[slot] == -1
    assert snapshot.pressure == {}


# ----- wired into the extender ----------------------------------------------------------------


def enclave_pod(name: str, epc: str) -> dict[str, object]:
    return {
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": {
            "containers": [
                {"name": "app", "resources": {"requests": {EPC: epc}, "limits": {EPC: epc}}}
            ]
        },
    }


@pytest.mark.timeout(60)
async def test_extender_filters_by_telemetry_and_reports_it_in_readyz(
    history_prometheus: PrometheusServer, aiohttp_client: Any
) -> None:
    config = config_from_mapping(
        {
            "prometheus": {"url": history_prometheus.url, "interval": "1h", "staleAfter": "30s"},
            "pressure": {"pagingRate": 1000, "usageWatermark": 0.9},
        }
    )
    snapshot = cluster(*NODES)
    snapshot.accounting = config.accounting
    registry = CollectorRegistry()
    clock = Clock(T0)
    telemetry = Telemetry(
        config.prometheus, config.pressure, lambda: snapshot, registry, clock=clock
    )
    app = create_app(config, SnapshotState(snapshot), registry=registry, telemetry=telemetry)
    client = await aiohttp_client(app)
    # The app's cleanup_ctx started the poller; its first poll runs at once.
    await wait_for(lambda: not telemetry.stale, 10, "first poll through the app")

    body = {"Pod": enclave_pod("enclave", "60Mi"), "Nodes": None, "NodeNames": list(NODES)}
    reply = await (await client.post("/filter", json=body)).json()
    assert reply["NodeNames"] == ["n3", "n4"]
    assert reply["FailedNodes"] == {
        "n1": "insufficient sgx.intel.com/epc: requested 60Mi, free 54Mi of 94Mi "
        "(measured in use 40Mi); EPC pressure: paging 1500 pages/s above 1000",
        "n2": "insufficient sgx.intel.com/epc: requested 60Mi, free 4Mi of 94Mi "
        "(measured in use 90Mi); EPC pressure: 95.7% of EPC in use (90Mi of 94Mi), above 90%",
    }
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["telemetry"]["stale"] is False
    metrics = await (await client.get("/metrics")).text()
    assert "epcsched_telemetry_stale 0.0" in metrics

    # Telemetry goes stale: the very next filter decides by requests, and readyz stays 200.
    clock.now = T0 + 45
    await telemetry.poll()
    reply = await (await client.post("/filter", json=body)).json()
    assert reply["NodeNames"] == ["n1", "n2", "n3", "n4"]
    assert reply["FailedNodes"] == {}
    ready = await client.get("/readyz")
    assert ready.status == 200
    detail = (await ready.json())["telemetry"]
    assert detail["stale"] is True
    assert detail["error"] == "newest EPC sample is 45s old, older than staleAfter 30s"
    metrics = await (await client.get("/metrics")).text()
    assert "epcsched_telemetry_stale 1.0" in metrics


@pytest.mark.timeout(60)
async def test_extender_builds_its_poller_from_prometheus_url(
    history_prometheus: PrometheusServer, aiohttp_client: Any
) -> None:
    """With only `prometheus.url` set, the app polls on its own (here: nothing recent)."""
    config = config_from_mapping({"prometheus": {"url": history_prometheus.url}})
    snapshot = cluster(*NODES)
    client = await aiohttp_client(create_app(config, SnapshotState(snapshot)))

    async def telemetry_detail() -> dict[str, Any]:
        ready = await client.get("/readyz")
        assert ready.status == 200
        body: dict[str, Any] = await ready.json()
        return body["telemetry"]

    started = time.monotonic()
    while (await telemetry_detail())["error"] == "no poll yet":
        assert time.monotonic() - started < 10
        await asyncio.sleep(0.05)
    # The history ends half an hour ago: Prometheus has nothing current to give.
    assert await telemetry_detail() == {
        "prometheus": history_prometheus.url,
        "stale": True,
        "lastSuccessAgeSeconds": None,
        "error": "no EPC samples in Prometheus for the configured queries",
    }
    metrics = await (await client.get("/metrics")).text()
    assert "epcsched_telemetry_stale 1.0" in metrics


def test_extender_command_rejects_a_bad_prometheus_url(tmp_path: Path) -> None:
    snapshot_file = tmp_path / "cluster.json"
    snapshot_file.write_text('{"apiVersion": "v1", "kind": "List", "items": []}')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "epcsched",
            "extender",
            "--snapshot",
            str(snapshot_file),
            "--prometheus-url",
            "prometheus:9090",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "epcsched extender: error: --prometheus-url: must start with http:// or https://, "
        "got 'prometheus:9090'"
    )
    assert "Traceback" not in result.stderr
