"""epcsched's programs run as real processes, for the tests and benchmarks that need one.

What they share: the command line that runs a program with this interpreter, waiting until a
started server answers its readiness path, and the figures Linux keeps per process (CPU time,
peak resident memory) that the benchmarks report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def command(program: str, *args: str) -> list[str]:
    """The argv that runs `epcsched <program> <args>` with this interpreter."""
    return [sys.executable, "-m", "epcsched", program, *args]


def wait_ready(
    port: int,
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    *,
    path: str = "/readyz",
    timeout: float = 60.0,
    host: str = "127.0.0.1",
) -> None:
    """Return once `GET http://host:port/path` answers 200.

    Raises RuntimeError when the process exits first (with its exit code, and the end of what
    it wrote to a piped stderr, or stdout when stderr goes there) or when `timeout` seconds
    pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            detail = ""
            stream = proc.stderr if proc.stderr is not None else proc.stdout
            if stream is not None:
                written = stream.read()
                text = written.decode(errors="replace") if isinstance(written, bytes) else written
                detail = f": {text[-2000:]}" if text else ""
            raise RuntimeError(f"process exited with {proc.returncode}{detail}")
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing ready at {host}:{port}{path} within {timeout:g}s")
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> int:
    """The process's peak resident set in bytes (VmHWM, Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")
