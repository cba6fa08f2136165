"""Logs an operator can use: text or JSON, validated levels, one decision line per pod, a version.

Protects issue 9 points 1 and 2 at the process boundary: `epcsched extender --port 0` logs its
version and the port it actually bound first; with `--log-format json` every stderr line is one
JSON object with time, level, logger, message and the event's fields; a filter that fails nodes
logs one INFO line for the pod (namespace/name, uid, how many nodes failed and each distinct
reason with its count, figures aside), a malformed request one WARNING with its reason, and every
request one DEBUG line only at `--log-level DEBUG`. /metrics carries `epcsched_build_info` and
prometheus_client's process and Python collectors. The grouping of reasons is checked by hand.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from epcsched import logs
from epcsched.build import VERSION
from epcsched.extender.decisions import group_reasons
from tests.helpers import LEGACY, cluster, node, pod

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Running:
    proc: subprocess.Popen[str]
    port: int
    lines: queue.Queue[str]
    first: list[str]

    def call(self, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def next_lines(self, count: int, timeout: float = 10) -> list[str]:
        """The next `count` lines on stderr."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            out.append(self.lines.get(timeout=max(deadline - time.monotonic(), 0.01)))
        return out

    def quiet(self, seconds: float = 0.5) -> list[str]:
        """Whatever else arrives within `seconds`."""
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.lines.get(timeout=left))
            except queue.Empty:
                break
        return out


def start(tmp_path: Path, *flags: str) -> Iterator[Running]:
    snapshot = tmp_path / "cluster.json"
    snapshot.write_text(
        json.dumps(
            cluster(
                node("big", "16Gi"),
                node("small", "94Mi"),
                node("tiny", "94Mi"),
                node("legacy", "168", resource=LEGACY),
                node("plain"),
                pod("s1", "72Mi", node_name="small"),
                pod("t1", "80Mi", node_name="tiny"),
            )
        )
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "epcsched",
            "extender",
            "--snapshot",
            str(snapshot),
            "--port",
            "0",
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    try:
        first = lines.get(timeout=60)
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", first)
        assert match, first
        yield Running(proc, int(match.group(1)), lines, [first])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def json_debug(tmp_path: Path) -> Iterator[Running]:
    yield from start(tmp_path, "--log-format", "json", "--log-level", "debug")


@pytest.fixture
def text_info(tmp_path: Path) -> Iterator[Running]:
    yield from start(tmp_path)


def filter_body(*names: str) -> bytes:
    pending = pod("enclave", "64Mi", namespace="team-a")
    pending["metadata"]["uid"] = "4f1c-uid"
    return json.dumps({"Pod": pending, "Nodes": None, "NodeNames": list(names)}).encode()


# big fits; small (22Mi free) and tiny (14Mi free) fail for free EPC, which eviction could
# change; legacy and plain do not advertise the name at all; ghost is not a node epcsched knows.
NAMES = ("big", "small", "tiny", "legacy", "plain", "ghost")


def test_json_lines_version_decisions_refusals_and_requests(json_debug: Running) -> None:
    started = json.loads(json_debug.first[0])
    assert started["level"] == "INFO" and started["logger"] == "epcsched.extender"
    assert started["version"] == VERSION and VERSION in started["message"]
    assert started["address"] == f"127.0.0.1:{json_debug.port}"
    assert set(started) >= {"time", "level", "logger", "message"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", started["time"])

    status, reply = json_debug.call("/filter", filter_body(*NAMES))
    assert status == 200 and json.loads(reply)["NodeNames"] == ["big"]
    entries = [json.loads(line) for line in json_debug.next_lines(2)]
    decision = next(e for e in entries if e["level"] == "INFO")
    request = next(e for e in entries if e["level"] == "DEBUG")
    assert decision["logger"] == "epcsched.extender.decisions"
    assert decision["pod"] == "team-a/enclave" and decision["uid"] == "4f1c-uid"
    assert (decision["failedNodes"], decision["unresolvableNodes"]) == (3, 2)
    reasons = decision["reasons"]
    assert sorted(reasons.values()) == [1, 1, 1, 2]
    insufficient = [r for r in reasons if r.startswith("insufficient sgx.intel.com/epc")]
    assert len(insufficient) == 1 and reasons[insufficient[0]] == 2
    assert insufficient[0] in (
        "insufficient sgx.intel.com/epc: requested 64Mi, free 22Mi of 94Mi",
        "insufficient sgx.intel.com/epc: requested 64Mi, free 14Mi of 94Mi",
    )
    assert reasons["node is not in epcsched's cluster cache"] == 1
    assert reasons[f"node does not advertise sgx.intel.com/epc (it advertises {LEGACY})"] == 1
    assert reasons["node does not advertise sgx.intel.com/epc (it has no EPC)"] == 1
    assert "pod team-a/enclave (uid 4f1c-uid): failed 5 nodes" in decision["message"]
    assert request["status"] == 200 and request["verb"] == "filter"
    assert "POST /filter" in request["message"]

    status, _ = json_debug.call("/filter", b'{"Pod": null, "NodeNames": []}')
    assert status == 400
    refusals = [json.loads(line) for line in json_debug.next_lines(1)]
    assert refusals[0]["level"] == "WARNING" and refusals[0]["status"] == 400
    assert "missing Pod" in refusals[0]["reason"] and "missing Pod" in refusals[0]["message"]

    # A pod that fits every node it is offered is not a decision worth a line.
    json_debug.call("/filter", filter_body("big"))
    quiet = [json.loads(line) for line in json_debug.next_lines(1) + json_debug.quiet()]
    assert [e["level"] for e in quiet] == ["DEBUG"]


def test_text_at_info_logs_decisions_but_not_requests(text_info: Running) -> None:
    assert (
        f"INFO epcsched.extender: epcsched {VERSION} extender listening on" in (text_info.first[0])
    )
    text_info.call("/filter", filter_body(*NAMES))
    text_info.call("/prioritize", filter_body(*NAMES))
    text_info.call("/filter", filter_body("big"))
    lines = text_info.next_lines(1) + text_info.quiet()
    assert len(lines) == 1, lines
    assert " INFO epcsched.extender.decisions: pod team-a/enclave (uid 4f1c-uid): " in lines[0]
    assert (
        "failed 5 nodes (3 where preemption could help, 2 where it cannot): 2× insuff" in (lines[0])
    )


def test_full_nodes_filter_logs_its_decision_too(text_info: Running) -> None:
    # nodeCacheCapable false: whole Node objects. small (22Mi free) could make room by
    # eviction; ghost, which the cache has never seen, has 10Mi in all, which nothing changes.
    pending = json.loads(filter_body())["Pod"]
    nodes = [node("big", "16Gi"), node("small", "94Mi"), node("ghost", "10Mi")]
    body = {"Pod": pending, "Nodes": {"items": nodes}, "NodeNames": None}
    status, reply = text_info.call("/filter", json.dumps(body).encode())
    assert status == 200
    assert [n["metadata"]["name"] for n in json.loads(reply)["Nodes"]["items"]] == ["big"]
    lines = text_info.next_lines(1) + text_info.quiet()
    assert len(lines) == 1, lines
    assert (
        "pod team-a/enclave (uid 4f1c-uid): failed 2 nodes (1 where preemption could help, 1 "
        "where it cannot)" in lines[0]
    )


def test_metrics_carry_build_info_and_process_collectors(text_info: Running) -> None:
    status, body = text_info.call("/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    (info,) = families["epcsched_build_info"].samples
    assert info.labels == {"version": VERSION} and info.value == 1
    assert families["process_resident_memory_bytes"].samples[0].value > 10 * 2**20
    assert families["process_start_time_seconds"].samples[0].value > 1e9
    assert "python_info" in families and "python_gc_collections" in families


def test_group_reasons_counts_reasons_that_differ_only_in_figures() -> None:
    reasons = [
        "insufficient sgx.intel.com/epc: requested 64Mi, free 22Mi of 94Mi",
        "insufficient sgx.intel.com/epc: requested 64Mi, free 14Mi of 94Mi",
        "insufficient sgx.intel.com/epc: requested 64Mi, free 14Mi of 94Mi",
        "node does not advertise sgx.intel.com/epc (it has no EPC)",
        "under EPC pressure: paging 1.2k pages/s above 500",
        "under EPC pressure: paging 730 pages/s above 500",
        "under EPC pressure: 93% of EPC in use (87.4Mi of 94Mi), above 90%",
    ]
    assert group_reasons(reasons) == [
        ("insufficient sgx.intel.com/epc: requested 64Mi, free 22Mi of 94Mi", 3),
        ("under EPC pressure: paging 1.2k pages/s above 500", 2),
        ("node does not advertise sgx.intel.com/epc (it has no EPC)", 1),
        ("under EPC pressure: 93% of EPC in use (87.4Mi of 94Mi), above 90%", 1),
    ]


def test_group_reasons_lumps_the_tail_beyond_twenty_groups() -> None:
    reasons = [f"node does not advertise {chr(97 + i)}.example/epc" for i in range(25)] * 2
    grouped = group_reasons(reasons)
    assert len(grouped) == 21
    assert grouped[-1] == ("other reasons", 10)
    assert grouped[0] == ("node does not advertise a.example/epc", 2)
    assert sum(count for _, count in grouped) == 50


def test_json_formatter_keeps_fields_and_exceptions_on_one_line() -> None:
    stream = io.StringIO()
    logs.setup("DEBUG", "json", stream=stream)
    try:
        log = logging.getLogger("epcsched.test")
        log.info("pod %s placed", "ns/p", extra={"pod": "ns/p", "node": "n1", "count": 3})
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            log.exception("failed")
        logging.getLogger("other.library").debug("quiet %d", 1)
    finally:
        logs.setup("WARNING", "text", stream=io.StringIO())
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["message"] == "pod ns/p placed"
    assert (first["pod"], first["node"], first["count"]) == ("ns/p", "n1", 3)
    assert set(first) == {"time", "level", "logger", "message", "pod", "node", "count"}
    assert second["level"] == "ERROR" and "ValueError: bad\nthing" in second["exception"]
    assert third["logger"] == "other.library" and third["level"] == "DEBUG"


@pytest.mark.parametrize(("given", "level"), [("debug", "DEBUG"), ("Warn", "WARNING")])
def test_levels_are_read_without_regard_to_case(given: str, level: str) -> None:
    assert logs.level_name(given) == level
