"""Pressure that does not blink (issue 9 point 12), end to end with a real Prometheus.

The project's exporter serves one node's SGX driver figures (files the test rewrites) and a real
Prometheus scrapes it every second. Protected here:

- a node nearly full stays under pressure through failed scrapes (Prometheus marks its series
  stale at once, so a plain instant query returns nothing for it) until its newest sample is
  older than `staleAfter`, and only then falls back to requests and shows in `staleNodes`;
- an EPC node Prometheus has no reading for at all is listed in `staleNodes`;
- paging is seen within a few scrape intervals of starting and gone within a few of stopping
  (the default paging query is the rate between the last two samples);
- a node failed for pressure alone is dropped by `/preempt`: evicting pods cannot cure paging
  that other enclaves cause, so kube-scheduler must not preempt there.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from epcsched.config import Config, PressureSettings, PrometheusSettings
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.exporter.command import serve
from epcsched.extender.app import create_app
from epcsched.model import NodeInfo
from epcsched.state import SnapshotState
from epcsched.telemetry import Telemetry
from tests.helpers import node, pod, snapshot_of
from tests.prometheus_fixtures import PrometheusServer

MiB = 2**20
EPC = "sgx.intel.com/epc"
TOTAL_PAGES = 23936  # 93.5 MiB of 4 KiB pages


def instant(prometheus: PrometheusServer, query: str) -> list[dict[str, Any]]:
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as response:
        result: list[dict[str, Any]] = json.load(response)["data"]["result"]
        return result


async def until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


class Driver:
    """The SGX driver's parameter files the exporter reads on every scrape."""

    def __init__(self, root: Path) -> None:
        self.params = root / "sys/module/isgx/parameters"
        self.params.mkdir(parents=True)
        self.set(free=TOTAL_PAGES, evicted=0)
        (self.params / "sgx_nr_total_epc_pages").write_text(f"{TOTAL_PAGES}\n")
        (self.params / "sgx_loaded_back").write_text("0\n")

    def set(self, *, free: int, evicted: int) -> None:
        (self.params / "sgx_nr_free_pages").write_text(f"{free}\n")
        (self.params / "sgx_nr_evicted").write_text(f"{evicted}\n")


@pytest.mark.timeout(120)
async def test_a_missed_scrape_does_not_hide_a_full_or_paging_node(tmp_path: Path) -> None:
    root = tmp_path / "host"
    driver = Driver(root)
    exporter, thread = serve(root, "sgx-1", host="127.0.0.1", port=0)
    port = exporter.server_port
    prometheus = PrometheusServer(tmp_path, targets=[f"127.0.0.1:{port}"])
    snapshot = ClusterSnapshot({EPC: 1}, accounting="max")
    for name in ("sgx-1", "sgx-2"):  # sgx-2 runs no exporter
        snapshot.upsert_node(NodeInfo(name, epc_allocatable={EPC: 94 * MiB}))
    stale_after = 4.0
    telemetry = Telemetry(
        PrometheusSettings(url=prometheus.url, interval=0.2, stale_after=stale_after, timeout=1),
        PressureSettings(usage_watermark=0.9, paging_rate=100),
        lambda: snapshot,
        CollectorRegistry(),
    )
    paging: asyncio.Task[None] | None = None
    try:
        prometheus.start()
        await telemetry.start()
        driver.set(free=1000, evicted=0)  # 95.8% in use
        await until(lambda: "sgx-1" in snapshot.pressure, 20, "pressure on the full node")
        assert "of EPC in use" in snapshot.pressure["sgx-1"]
        detail = telemetry.detail()
        assert detail["staleNodes"] == {"count": 1, "names": ["sgx-2"]}

        # The exporter goes away: the next scrape fails and Prometheus marks the series stale.
        exporter.shutdown()
        exporter.server_close()
        thread.join(timeout=5)
        stopped = time.monotonic()
        await until(
            lambda: not instant(prometheus, 'epcsched_node_epc_free_bytes{node="sgx-1"}'),
            5,
            "Prometheus marking the series stale",
        )
        # Its newest sample is at most a scrape (1 s) older than `stopped`, so it is younger
        # than staleAfter until at least stopped + 3 s: the pressure must hold until then.
        while time.monotonic() - stopped < stale_after - 1.2:
            assert "sgx-1" in snapshot.pressure, telemetry.detail()
            assert not telemetry.stale
            await asyncio.sleep(0.1)
        took = await until(lambda: "sgx-1" not in snapshot.pressure, 5, "falling back")
        assert time.monotonic() - stopped <= stale_after + 1.5, took
        detail = telemetry.detail()
        assert detail["stale"] is True  # its only node is too old: requests alone
        assert int(snapshot.usage[snapshot.slots["sgx-1"]]) == -1

        # Back, with room to spare but paging at 500 pages/s.
        driver.set(free=20000, evicted=0)
        exporter, thread = serve(root, "sgx-1", host="127.0.0.1", port=port)
        started = time.monotonic()

        async def page() -> None:
            evicted = 0
            while True:
                await asyncio.sleep(0.1)
                evicted += 50
                driver.set(free=20000, evicted=evicted)

        paging = asyncio.create_task(page())
        await until(lambda: "sgx-1" in snapshot.pressure, 10, "paging noticed")
        assert "pages/s above 100" in snapshot.pressure["sgx-1"]
        # Within a few scrape intervals (the first scrapes after a restart give no rate yet).
        assert time.monotonic() - started < 5
        assert telemetry.detail()["staleNodes"] == {"count": 1, "names": ["sgx-2"]}

        paging.cancel()
        stopped = time.monotonic()
        await until(lambda: "sgx-1" not in snapshot.pressure, 10, "paging over")
        assert time.monotonic() - stopped < 4
    finally:
        if paging is not None:
            paging.cancel()
        await telemetry.stop()
        prometheus.stop()
        exporter.shutdown()
        exporter.server_close()
        thread.join(timeout=5)


async def test_preempt_drops_a_node_failed_for_pressure_alone(extender_client: Any) -> None:
    snap = snapshot_of(
        node("paging", "94Mi"),
        node("busy", "94Mi"),
        pod("x", "80Mi", node_name="paging"),
        pod("y", "80Mi", node_name="busy"),
    )
    snap.set_pressure("paging", "EPC pressure: paging 1500 pages/s above 1000")
    client = await extender_client(create_app(Config(), SnapshotState(snap)))
    incoming = pod("p", "64Mi")
    reply = await (
        await client.post(
            "/filter", json={"Pod": incoming, "Nodes": None, "NodeNames": ["paging", "busy"]}
        )
    ).json()
    assert reply["NodeNames"] == []
    assert reply["FailedNodes"]["paging"].endswith("EPC pressure: paging 1500 pages/s above 1000")
    victims = {
        "paging": {"Pods": [{"UID": "uid-x"}], "NumPDBViolations": 0},
        "busy": {"Pods": [{"UID": "uid-y"}], "NumPDBViolations": 0},
    }
    body = {"Pod": incoming, "NodeNameToVictims": None, "NodeNameToMetaVictims": victims}
    reply = await (await client.post("/preempt", json=body)).json()
    # Evicting x would free the EPC on `paging`, but not stop the paging: only `busy` stays.
    assert reply == {"NodeNameToMetaVictims": {"busy": victims["busy"]}}
