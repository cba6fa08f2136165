"""Safe answers before the cache is synced (issue 9 point 5).

`epcsched extender --kubeconfig`, as a real process, against the fake API server whose first
lists are held back: until the informers have synced, /filter and /prioritize answer 200 with
`Error` set (kube-scheduler retries the pod later) rather than failing every node (which marks
the pod unschedulable and can start preemption), and /readyz is 503. Once synced, the same
request is answered from the cache. The log says when calls were refused and when that ended.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND
from tests.kube_helpers import node, pod

ROOT = Path(__file__).resolve().parent.parent
BODY = {"Pod": pod("incoming", "16Mi"), "Nodes": None, "NodeNames": ["sgx-1", "sgx-2"]}


async def _post(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.post(url, json=BODY) as response:
        return response.status, await response.json(content_type=None)


async def test_filter_and_prioritize_answer_error_until_synced(tmp_path: Path) -> None:
    async with FakeApiServer(bookmark_interval=0.2) as api:
        api.store.load(BY_KIND["Node"], node("sgx-1", "64Mi"))
        api.store.load(BY_KIND["Node"], node("sgx-2", "8Mi"))
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        # The first two requests (the nodes and pods lists) take 3 s each.
        api.faults.delay_next(3.0, count=2)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "epcsched",
            "extender",
            "--kubeconfig",
            str(kubeconfig),
            "--port",
            "0",
            "--log-format",
            "json",
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        assert proc.stderr is not None
        lines: list[dict[str, Any]] = []

        async def next_line() -> dict[str, Any]:
            assert proc.stderr is not None
            raw = await asyncio.wait_for(proc.stderr.readline(), 30)
            entry: dict[str, Any] = json.loads(raw)
            lines.append(entry)
            return entry

        try:
            while "address" not in (entry := await next_line()):
                pass
            url = f"http://{entry['address']}"
            started = time.monotonic()
            async with aiohttp.ClientSession() as session:
                status, reply = await _post(session, f"{url}/filter")
                assert status == 200
                assert "not synced" in reply["Error"] and "NodeNames" not in reply
                status, reply = await _post(session, f"{url}/prioritize")
                assert status == 200 and "not synced" in reply["Error"]
                async with session.get(f"{url}/readyz") as response:
                    assert response.status == 503
                assert time.monotonic() - started < 2.5, "the lists were not held back"

                while True:
                    async with session.get(f"{url}/readyz") as response:
                        if response.status == 200:
                            break
                    assert time.monotonic() - started < 30
                    await asyncio.sleep(0.1)
                status, reply = await _post(session, f"{url}/filter")
                assert status == 200 and reply["Error"] == ""
                assert reply["NodeNames"] == ["sgx-1"]
                assert set(reply["FailedAndUnresolvableNodes"]) == {"sgx-2"}
                status, scores = await _post(session, f"{url}/prioritize")
                assert status == 200 and isinstance(scores, list)
            messages = []
            while not any("synced: answering" in m for m in messages):
                messages.append((await next_line())["message"])
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
    refused = [e for e in lines if "not synced yet" in e["message"]]
    assert len(refused) == 1 and refused[0]["level"] == "WARNING"
    (opened,) = [e for e in lines if "synced: answering" in e["message"]]
    assert re.search(r"\(2 refused before\)", opened["message"])
