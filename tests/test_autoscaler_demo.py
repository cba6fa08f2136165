"""The autoscaler demo tells the whole story, in order, in a few seconds.

Protects issue 7 point 10 (the part `make demo` runs last): the real controller against the fake
API server with a simulated pool; enclave pods that do not fit are marked Unschedulable by the
demo's stand-in for kube-scheduler, the pool grows, the pods bind to the new nodes, they finish,
and the pool shrinks back to its minimum one node at a time, with the autoscaler's Events and
status ConfigMap shown at the end.

Expected figures, by hand, from the demo's cluster: the pool's first node sgx-0 has 8 GiB of EPC
of which its attestation enclave requests 6 GiB, so 2 GiB are free and none of the four 3 GiB
batch pods fits. A new node of the template holds 8 GiB: two pods (6 GiB), not three (9 GiB), so
four pods need two new nodes and the pool goes from 1 to 3. Bound, the pool requests 6 + 12 =
18 GiB of 24 GiB (0.75, under the 0.8 target, so no pressure scale-up), and each new node is at
6/8 = 0.75, above scaleDownUtilization 0.5, so nothing is removed while the batch runs. Once the
pods have finished both new nodes are empty and go, one at a time: 3 -> 2 -> 1 (minSize), while
sgx-0 (0.75) stays.
"""

from __future__ import annotations

import io
import itertools
import re
import time
from collections import Counter

import pytest

from epcsched.autoscaler.demo import autoscaler_demo

BATCH = [f"enclaves/batch-{i}" for i in range(4)]


def _first(lines: list[str], fragment: str, after: int = -1) -> int:
    for i, line in enumerate(lines):
        if i > after and fragment in line:
            return i
    raise AssertionError(f"no line with {fragment!r} after line {after}:\n" + "\n".join(lines))


@pytest.mark.timeout(60)
async def test_autoscaler_demo_grows_the_pool_binds_and_shrinks_it_back() -> None:
    out = io.StringIO()
    started = time.monotonic()
    await autoscaler_demo(out)
    took = time.monotonic() - started
    lines = out.getvalue().splitlines()

    _first(lines, "the demo plays it with epcsched's own placement")
    # Every batch pod meets the played kube-scheduler first and is marked, with the reason.
    why = "sgx-0: insufficient sgx.intel.com/epc: requested 3Gi, free 2Gi of 8Gi"
    marked = [
        _first(lines, f"{pod} Unschedulable: 0/1 nodes are available: {why}") for pod in BATCH
    ]

    # The pool grows from 1 to 3 (absolute targets, each step from the size before it).
    ups = [(i, int(m[1]), int(m[2])) for i, line in enumerate(lines)
           if (m := re.search(r"pool sgx: scale-up (\d+) -> (\d+): ", line))]  # fmt: skip
    assert ups, "no scale-up"
    assert ups[0][1] == 1 and ups[-1][2] == 3
    assert all(a[2] == b[1] for a, b in itertools.pairwise(ups))
    assert ups[0][0] > min(marked)
    assert "pending EPC pod(s) need" in lines[ups[0][0]]
    joined = [i for i, line in enumerate(lines) if re.search(r"node sgx-sim-\d+ joined", line)]
    assert len(joined) == 2 and min(joined) > ups[0][0]

    # The pods bind to the new nodes only, two on each.
    bound: dict[str, tuple[int, str]] = {}
    for i, line in enumerate(lines):
        if m := re.search(r"bound (\S+) to (\S+) ", line):
            bound[m[1]] = (i, m[2])
    assert sorted(bound) == BATCH
    assert sorted(Counter(node for _, node in bound.values()).values()) == [2, 2]
    assert all(node.startswith("sgx-sim-") for _, node in bound.values())
    assert min(i for i, _ in bound.values()) > min(joined)

    # They finish; only then does the pool shrink, one node at a time, back to minSize.
    finished = _first(lines, "the batch finished: 4 pods Succeeded")
    assert finished > max(i for i, _ in bound.values())
    first_down = _first(lines, "pool sgx: scale-down 3 -> 2: utilization 0.00", finished)
    first_gone = _first(lines, "removed", first_down)
    second_down = _first(lines, "pool sgx: scale-down 2 -> 1: utilization 0.00", first_gone)
    _first(lines, "removed", second_down)
    assert not any("scale-down" in line for line in lines[:finished])
    assert not any("pool sgx: scale-up" in line for line in lines[finished:])
    _first(lines, "node sgx-sim-", first_down)  # the drain speaks (taint, pods, result)
    assert any("tainted epcsched.io/scale-down=" in line for line in lines[first_down:])
    back = _first(lines, "pool sgx is back at minSize 1", second_down)
    assert "1 -> 1, no change" in lines[back]

    # The final state, the Events and the status ConfigMap say the same.
    nodes = _first(lines, "final nodes:", back)
    assert lines[nodes + 1].split() == ["sgx-0", "6Gi", "of", "8Gi", "EPC", "requested"]
    assert lines[nodes + 2] == ""
    events = lines[_first(lines, "Events the autoscaler wrote", nodes) :]
    triggered = {line.split()[1] for line in events if " TriggeredScaleUp " in line}
    assert triggered == set(BATCH)
    removed = [
        line.split()[1]
        for line in events
        if line.split()[:1] == ["Node"] and "node removed by epcsched" in line
    ]
    assert sorted(removed) == sorted(set(node for _, node in bound.values()))
    assert all(" ScaleDown " in line for line in events if line.split()[:1] == ["Node"])
    _first(lines, "sgx: current 1, target 1, inFlight 0, lastScaleUp ", nodes)

    assert took < 30, f"the autoscaler demo took {took:.1f}s"
