"""The node exporter reports exactly what the node's kernel offers, read fresh on each scrape.

Sysfs trees are real files under tmp_path, laid out as a mainline kernel, Intel's patched isgx
driver and a kernel with the SGX misc cgroup (systemd and cgroupfs kubelet layouts) lay them
out. The exporter is scraped over HTTP on loopback, as Prometheus does, and a figure the kernel
does not give must be absent, never zero. The command line is run as a process to check that bad
input gives one line and exit 2.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from epcsched.cli import main
from epcsched.exporter.command import serve
from epcsched.exporter.sysfs import read_epc
from epcsched.netutil import free_port

pytestmark = pytest.mark.timeout(30)

MiB = 2**20
POD_A = "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e"
POD_B = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
POD_C = "00000000-1111-4222-8333-444444444444"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def mainline_tree(root: Path, numa: list[int]) -> None:
    for i, total in enumerate(numa):
        write(root / f"sys/devices/system/node/node{i}/x86/sgx_total_bytes", f"{total}\n")
        # What else a NUMA node directory holds on a real kernel; none of it is EPC.
        write(root / f"sys/devices/system/node/node{i}/meminfo", "Node 0 MemTotal: 1 kB\n")
    write(root / "sys/devices/system/node/online", "0-1\n")


def patched_tree(root: Path, *, total: int, free: int, evicted: int, loaded_back: int) -> None:
    params = root / "sys/module/isgx/parameters"
    for name, value in {
        "sgx_nr_total_epc_pages": total,
        "sgx_nr_free_pages": free,
        "sgx_nr_evicted": evicted,
        "sgx_loaded_back": loaded_back,
        "sgx_nr_enclaves": 3,
        "sgx_nr_low_pages": 32,
        "sgx_nr_high_pages": 64,
    }.items():
        write(params / name, f"{value}\n")


def misc_tree(root: Path, *, layout: str, root_current: int | None, v1: bool = False) -> Path:
    base = root / ("sys/fs/cgroup/misc" if v1 else "sys/fs/cgroup")
    write(base / "misc.capacity", f"res_a 50\nsgx_epc {94 * MiB}\n")
    if root_current is not None:
        write(base / "misc.current", f"res_a 3\nsgx_epc {root_current}\n")
    if layout == "systemd":
        kp = base / "kubepods.slice"
        pods = {
            POD_A: kp
            / f"kubepods-burstable.slice/kubepods-burstable-pod{POD_A.replace('-', '_')}.slice",
            POD_B: kp / f"kubepods-pod{POD_B.replace('-', '_')}.slice",
            POD_C: kp
            / f"kubepods-besteffort.slice/kubepods-besteffort-pod{POD_C.replace('-', '_')}.slice",
        }
        # A container cgroup inside a pod and a QoS slice's own file are not pods.
        write(pods[POD_A] / "cri-containerd-abc.scope/misc.current", f"sgx_epc {MiB}\n")
        write(kp / "kubepods-burstable.slice/misc.current", f"sgx_epc {20 * MiB}\n")
    else:
        kp = base / "kubepods"
        pods = {
            POD_A: kp / f"burstable/pod{POD_A}",
            POD_B: kp / f"pod{POD_B}",
            POD_C: kp / f"besteffort/pod{POD_C}",
        }
        write(kp / "burstable/misc.current", f"sgx_epc {20 * MiB}\n")
    write(pods[POD_A] / "misc.current", f"res_a 1\nsgx_epc {16 * MiB}\n")
    write(pods[POD_B] / "misc.current", f"sgx_epc {4 * MiB}\n")
    # A pod whose cgroup has no EPC line (the controller not enabled for it) is not reported.
    write(pods[POD_C] / "misc.current", "res_a 0\n")
    return base


@pytest.fixture
def scrape(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An exporter serving `tmp_path/root` for node `sgx-1`, and its /metrics URL."""
    root = tmp_path / "root"
    root.mkdir()
    server, thread = serve(root, "sgx-1", host="127.0.0.1", port=0)
    try:
        yield root, f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def fetch(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on the page, keyed by name and sorted labels."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def node(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, (("node", "sgx-1"),)


def pod(uid: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return "epcsched_cgroup_epc_bytes", (("node", "sgx-1"), ("pod", uid))


def test_mainline_kernel_gives_capacity_only(scrape: tuple[Path, str]) -> None:
    root, url = scrape
    mainline_tree(root, [64 * MiB, 30 * MiB])
    assert fetch(url) == {node("epcsched_node_epc_capacity_bytes"): 94 * MiB}


def test_empty_root_exposes_nothing(scrape: tuple[Path, str]) -> None:
    _, url = scrape
    assert fetch(url) == {}


def test_patched_driver_counters_are_read_fresh_on_every_scrape(scrape: tuple[Path, str]) -> None:
    root, url = scrape
    patched_tree(root, total=23936, free=10000, evicted=500, loaded_back=120)
    assert fetch(url) == {
        node("epcsched_node_epc_capacity_bytes"): 23936 * 4096,
        node("epcsched_node_epc_free_bytes"): 10000 * 4096,
        node("epcsched_node_epc_evicted_pages_total"): 500,
        node("epcsched_node_epc_loaded_back_pages_total"): 120,
    }
    patched_tree(root, total=23936, free=2, evicted=90500, loaded_back=70120)
    after = fetch(url)
    assert after[node("epcsched_node_epc_free_bytes")] == 2 * 4096
    assert after[node("epcsched_node_epc_evicted_pages_total")] == 90500
    assert after[node("epcsched_node_epc_loaded_back_pages_total")] == 70120


def test_counters_are_typed_counters_for_rate(scrape: tuple[Path, str]) -> None:
    root, url = scrape
    patched_tree(root, total=100, free=50, evicted=7, loaded_back=3)
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types == {
        "epcsched_node_epc_capacity_bytes": "gauge",
        "epcsched_node_epc_free_bytes": "gauge",
        "epcsched_node_epc_evicted_pages": "counter",
        "epcsched_node_epc_loaded_back_pages": "counter",
    }


def test_unreadable_driver_values_are_left_out(scrape: tuple[Path, str]) -> None:
    root, url = scrape
    patched_tree(root, total=23936, free=10000, evicted=500, loaded_back=120)
    write(root / "sys/module/isgx/parameters/sgx_nr_free_pages", "garbage\n")
    (root / "sys/module/isgx/parameters/sgx_loaded_back").unlink()
    assert fetch(url) == {
        node("epcsched_node_epc_capacity_bytes"): 23936 * 4096,
        node("epcsched_node_epc_evicted_pages_total"): 500,
    }


def test_probes_and_unknown_paths(scrape: tuple[Path, str]) -> None:
    """The DaemonSet probes /healthz and /readyz; neither is a scrape, and typos are 404s."""
    root, url = scrape
    mainline_tree(root, [94 * MiB])
    base = url.removesuffix("/metrics")
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(base + path, timeout=5) as response:
            assert (response.status, response.read()) == (200, b"ok\n")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(base + "/metricz", timeout=5)
    assert missing.value.code == 404
    assert fetch(base + "/") == fetch(url) == {node("epcsched_node_epc_capacity_bytes"): 94 * MiB}


def test_numa_total_is_preferred_and_partial_numa_is_not_summed(tmp_path: Path) -> None:
    mainline_tree(tmp_path, [64 * MiB, 30 * MiB])
    patched_tree(tmp_path, total=100, free=50, evicted=0, loaded_back=0)
    assert read_epc(tmp_path).capacity == 94 * MiB
    # One NUMA node unreadable: a sum of the rest would understate the node, so the driver's
    # total is used instead.
    write(tmp_path / "sys/devices/system/node/node1/x86/sgx_total_bytes", "")
    assert read_epc(tmp_path).capacity == 100 * 4096


@pytest.mark.parametrize("layout", ["systemd", "cgroupfs"])
def test_misc_cgroup_gives_capacity_free_and_per_pod_epc(
    scrape: tuple[Path, str], layout: str
) -> None:
    root, url = scrape
    misc_tree(root, layout=layout, root_current=40 * MiB)
    assert fetch(url) == {
        node("epcsched_node_epc_capacity_bytes"): 94 * MiB,
        node("epcsched_node_epc_free_bytes"): 54 * MiB,
        pod(POD_A): 16 * MiB,
        pod(POD_B): 4 * MiB,
    }


def test_misc_cgroup_without_root_current_has_no_free(scrape: tuple[Path, str]) -> None:
    root, url = scrape
    misc_tree(root, layout="systemd", root_current=None)
    mainline_tree(root, [94 * MiB])
    samples = fetch(url)
    assert node("epcsched_node_epc_free_bytes") not in samples
    assert samples[node("epcsched_node_epc_capacity_bytes")] == 94 * MiB
    assert samples[pod(POD_A)] == 16 * MiB


def test_pod_leaving_disappears_from_next_scrape(scrape: tuple[Path, str]) -> None:
    root, url = scrape
    base = misc_tree(root, layout="cgroupfs", root_current=40 * MiB)
    assert pod(POD_B) in fetch(url)
    (base / f"kubepods/pod{POD_B}/misc.current").unlink()
    (base / f"kubepods/pod{POD_B}").rmdir()
    samples = fetch(url)
    assert pod(POD_B) not in samples
    assert samples[pod(POD_A)] == 16 * MiB


@pytest.mark.parametrize("layout", ["systemd", "cgroupfs"])
def test_misc_events_give_each_pods_limit_hits_as_a_counter(
    scrape: tuple[Path, str], layout: str
) -> None:
    """`sgx_epc.max` in a pod cgroup's misc.events becomes
    epcsched_cgroup_epc_max_events_total{node,pod}; other resources' lines are not EPC, and a
    pod whose kernel has no misc.events has no series rather than a zero."""
    root, url = scrape
    base = misc_tree(root, layout=layout, root_current=40 * MiB)
    if layout == "systemd":
        kp = base / "kubepods.slice"
        dir_a = (
            kp / f"kubepods-burstable.slice/kubepods-burstable-pod{POD_A.replace('-', '_')}.slice"
        )
        dir_b = kp / f"kubepods-pod{POD_B.replace('-', '_')}.slice"
    else:
        dir_a = base / f"kubepods/burstable/pod{POD_A}"
        dir_b = base / f"kubepods/pod{POD_B}"
    write(dir_a / "misc.events", "res_a.max 9\nsgx_epc.max 42\n")
    write(dir_b / "misc.events", "res_a.max 1\n")
    hits = ("epcsched_cgroup_epc_max_events_total", (("node", "sgx-1"), ("pod", POD_A)))
    samples = fetch(url)
    assert samples[hits] == 42
    assert [key for key in samples if key[0] == hits[0]] == [hits]
    write(dir_a / "misc.events", "sgx_epc.max 45\n")
    assert fetch(url)[hits] == 45
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["epcsched_cgroup_epc_max_events"] == "counter"
    assert read_epc(root).pod_max_events == {POD_A: 45}


def test_cgroup_v1_misc_hierarchy(tmp_path: Path) -> None:
    misc_tree(tmp_path, layout="cgroupfs", root_current=10 * MiB, v1=True)
    reading = read_epc(tmp_path)
    assert reading.capacity == 94 * MiB
    assert reading.free == 84 * MiB
    assert reading.pods == {POD_A: 16 * MiB, POD_B: 4 * MiB}
    assert reading.sources == ("misc",)


# ----- the command -------------------------------------------------------------------------


def run_main(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    """`epcsched exporter ARGS` in this process: the exit code and what went to stderr."""
    monkeypatch.delenv("NODE_NAME", raising=False)
    try:
        code = main(["exporter", *args])
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sysfs-root", "/nonexistent/epc", "--node-name", "n"], "is not a directory"),
        (["--sysfs-root", "/"], "NODE_NAME is not set"),
        (["--sysfs-root", "/", "--node-name", "n", "--port", "70000"], "--port"),
        (["--sysfs-root", "/", "--port", "x", "--node-name", "n"], "invalid int value"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, err = run_main(args, capsys, monkeypatch)
    assert code == 2
    assert message in err.splitlines()[-1]
    assert "Traceback" not in err


def test_port_in_use_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["--sysfs-root", str(tmp_path), "--host", "127.0.0.1", "--port", str(port)]
        code, err = run_main([*args, "--node-name", "n"], capsys, monkeypatch)
    assert code == 2
    assert err.splitlines()[-1] == (
        f"epcsched exporter: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_command_serves_node_name_from_env_and_stops_on_sigterm(tmp_path: Path) -> None:
    patched_tree(tmp_path, total=23936, free=10000, evicted=5, loaded_back=1)
    port = free_port()
    env = {k: v for k, v in os.environ.items()}
    env["NODE_NAME"] = "dc-node-7"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "epcsched",
            "exporter",
            "--sysfs-root",
            str(tmp_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                samples = fetch(f"http://127.0.0.1:{port}/metrics")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        key = ("epcsched_node_epc_free_bytes", (("node", "dc-node-7"),))
        assert samples[key] == 10000 * 4096
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    log = proc.stderr.read()
    assert "EPC sources under" in log and "isgx" in log
