"""A real Prometheus server for the telemetry tests, on a free loopback port.

Debian's `prometheus` binary runs with a temporary config and TSDB directory, scraping the
targets a test names every second, or serving history that `promtool tsdb
create-blocks-from openmetrics` wrote into its TSDB beforehand. Tests can stop and restart it on
the same port and data to see telemetry degrade and recover.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from epcsched.netutil import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def require_prometheus() -> None:
    for binary in (PROMETHEUS, PROMTOOL):
        if not Path(binary).exists():
            pytest.fail(
                f"{binary} not found: install Debian's prometheus package (make system-deps)"
            )


def backfill(data_dir: Path, openmetrics: str, work_dir: Path) -> None:
    """Write `openmetrics` text (ending in `# EOF`) into the TSDB at `data_dir` as blocks."""
    require_prometheus()
    source = work_dir / "history.om"
    source.write_text(openmetrics)
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)],
        check=True,
        capture_output=True,
        timeout=60,
    )


class PrometheusServer:
    """One Prometheus process; `start()` returns once `/-/ready` answers 200."""

    def __init__(self, work_dir: Path, *, targets: list[str] | None = None) -> None:
        require_prometheus()
        self.work_dir = work_dir
        self.data_dir = work_dir / "tsdb"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        scrape = ""
        if targets:
            listed = ", ".join(f"'{t}'" for t in targets)
            scrape = (
                "  - job_name: epc\n"
                "    scrape_interval: 1s\n"
                "    scrape_timeout: 900ms\n"
                f"    static_configs:\n      - targets: [{listed}]\n"
            )
        self.config = work_dir / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
            + (scrape or "  []\n")
        )

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = (self.work_dir / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.read_log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready in {timeout}s: {self.read_log()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.log.close()

    def read_log(self) -> str:
        return (self.work_dir / "prometheus.log").read_text(errors="replace")
