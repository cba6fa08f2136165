"""Caches on the watch path never serve a stale record (issue 10).

Protects two shortcuts that make each watch event cheap: `objects.pod_info` keeps the parsed
requests of each pod template (keyed by the fields that decide them and the unit table), and the
pod informer leaves the snapshot alone when an event changes nothing it holds. A pod whose
requests change is read anew, two templates or two unit tables never share an entry, a refusal
is never remembered as an answer, and an update that does change the record (phase, node,
requests) reaches the snapshot and its per-node sums.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from epcsched.config import Config
from epcsched.kube.informer import InformerSettings, InformerState
from epcsched.objects import ObjectError, Pod, pod_info
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND
from tests.kube_helpers import MI, configuration, node, pod
from tests.test_informer import caught_up

PODS = BY_KIND["Pod"]
NODES = BY_KIND["Node"]
FAST = InformerSettings(backoff_initial=0.01, backoff_max=0.1, watch_timeout=(1, 2), page_size=50)
EPC = "sgx.intel.com/epc"
MIB_NAME = "alibabacloud.com/sgx_epc_MiB"


def as_pod(obj: dict[str, Any]) -> Pod:
    return msgspec.convert(obj, Pod)


def with_requests(obj: dict[str, Any], requests: dict[str, Any]) -> dict[str, Any]:
    obj["spec"]["containers"][0]["resources"] = {"requests": requests}
    return obj


def test_same_template_read_alike_and_a_changed_request_read_anew() -> None:
    resources = Config().epc.resources
    first = pod_info(as_pod(pod("a", "30Mi")), resources)
    second = pod_info(as_pod(pod("b", "30Mi", node_name="n1")), resources)
    assert first.epc == second.epc == {EPC: 30 * MI}
    assert (first.cpu_milli, first.memory) == (second.cpu_milli, second.memory) == (100, 64 * MI)
    # The same pod with one more MiB, a limit only, an init container that needs more, and
    # pod overhead: each is a different request, worked out by Kubernetes' rule.
    assert pod_info(as_pod(pod("a", "31Mi")), resources).epc == {EPC: 31 * MI}
    limit_only = pod("a")
    limit_only["spec"]["containers"][0]["resources"] = {"limits": {EPC: "12Mi"}}
    assert pod_info(as_pod(limit_only), resources).epc == {EPC: 12 * MI}
    init = pod("a", "30Mi")
    init["spec"]["initContainers"] = [
        {"name": "setup", "resources": {"requests": {EPC: "40Mi", "cpu": "2"}}}
    ]
    info = pod_info(as_pod(init), resources)
    assert (info.epc, info.cpu_milli) == ({EPC: 40 * MI}, 2000)
    init["spec"]["overhead"] = {EPC: "1Mi", "memory": "1Mi"}
    info = pod_info(as_pod(init), resources)
    assert (info.epc, info.memory) == ({EPC: 41 * MI}, 65 * MI)
    # Back to the first template: its answer is unchanged by everything read in between.
    assert pod_info(as_pod(pod("c", "30Mi")), resources).epc == {EPC: 30 * MI}


def test_the_unit_table_is_part_of_the_key() -> None:
    obj = with_requests(pod("a"), {MIB_NAME: "10"})
    assert pod_info(as_pod(obj), {MIB_NAME: MI}).epc == {MIB_NAME: 10 * MI}
    # The same spec read with a table that counts that name in bytes.
    assert pod_info(as_pod(obj), {MIB_NAME: 1}).epc == {MIB_NAME: 10}
    # A table without the name: the pod asks for no EPC at all.
    assert pod_info(as_pod(obj), {EPC: 1}).epc == {}
    assert pod_info(as_pod(obj), {MIB_NAME: MI}).epc == {MIB_NAME: 10 * MI}


def test_records_do_not_share_what_they_hold() -> None:
    resources = Config().epc.resources
    first = pod_info(as_pod(pod("a", "30Mi")), resources)
    first.epc[EPC] = 1
    assert pod_info(as_pod(pod("b", "30Mi")), resources).epc == {EPC: 30 * MI}


def test_a_refusal_is_never_remembered_as_an_answer() -> None:
    resources = Config().epc.resources
    bad = with_requests(pod("a"), {EPC: "thirty"})
    for _ in range(2):
        with pytest.raises(ObjectError, match=r"spec\.containers\[0\]\.resources\.requests"):
            pod_info(as_pod(bad), resources)
    negative = with_requests(pod("a"), {"cpu": "-1"})
    for _ in range(2):
        with pytest.raises(ObjectError, match="negative quantity"):
            pod_info(as_pod(negative), resources)
    # Fixed, the same pod is read.
    assert pod_info(as_pod(with_requests(pod("a"), {EPC: "30Mi"})), resources).epc == {EPC: 30 * MI}


def used(state: InformerState, name: str) -> int:
    snap = state.snapshot
    return int(snap.epc[EPC].requested[snap.slots[name]])


async def test_watch_updates_that_change_nothing_leave_the_snapshot_alone(
    tmp_path: Path,
) -> None:
    async with FakeApiServer(bookmark_interval=0.05) as api:
        api.store.load(NODES, node("n1", "100Mi"))
        api.store.load(NODES, node("n2", "100Mi"))
        api.store.load(PODS, pod("a", "30Mi", node_name="n1", phase="Running"))
        api.store.load(PODS, pod("b", "30Mi", node_name="n1", phase="Running"))
        state = InformerState(await configuration(api, tmp_path), Config(), settings=FAST)
        await state.start()
        try:
            await state.wait_synced(timeout=5)
            await caught_up(api, state)
            snap = state.snapshot
            assert used(state, "n1") == 60 * MI
            seen: list[str] = []
            state.pod_listeners.append(lambda info: seen.append(info.key))

            # A condition and an IP: nothing the snapshot holds.
            before = snap.version
            api.store.patch(
                PODS,
                "default",
                "a",
                "application/merge-patch+json",
                {"status": {"phase": "Running", "podIP": "10.0.0.7",
                            "conditions": [{"type": "Ready", "status": "True"}]}},
                subresource="status",
            )  # fmt: skip
            await caught_up(api, state)
            assert seen == ["default/a"]  # listeners still hear of every update
            assert snap.version == before
            assert used(state, "n1") == 60 * MI

            # The same pod with a bigger request (an in-place resize): read anew, and the
            # node's sum follows, while its twin with the old template keeps its own.
            api.store.patch(
                PODS,
                "default",
                "a",
                "application/merge-patch+json",
                {"spec": {"containers": [{"name": "app", "image": "enclave:1",
                          "resources": {"requests": {EPC: "50Mi"}}}]}},
            )  # fmt: skip
            await caught_up(api, state)
            assert snap.version != before
            assert snap.pods["default/a"].epc == {EPC: 50 * MI}
            assert snap.pods["default/a"].cpu_milli == 0
            assert snap.pods["default/b"].epc == {EPC: 30 * MI}
            assert used(state, "n1") == 80 * MI

            # A pending pod bound by the API: moves from nowhere to n2.
            api.store.load(PODS, pod("c", "30Mi"))
            await caught_up(api, state)
            assert used(state, "n2") == 0
            api.store.bind(
                "default",
                "c",
                {"metadata": {"name": "c"}, "target": {"kind": "Node", "name": "n2"}},
            )
            await caught_up(api, state)
            assert snap.pods["default/c"].node_name == "n2"
            assert used(state, "n2") == 30 * MI

            # Deleted and created again under the same name with another request.
            api.store.delete(PODS, "default", "b")
            api.store.load(PODS, pod("b", "5Mi", node_name="n1", phase="Running"))
            await caught_up(api, state)
            assert snap.pods["default/b"].epc == {EPC: 5 * MI}
            assert used(state, "n1") == 55 * MI

            # Phase Succeeded: same requests, but the pod holds nothing any more.
            api.store.patch(
                PODS,
                "default",
                "a",
                "application/merge-patch+json",
                {"status": {"phase": "Succeeded"}},
                subresource="status",
            )
            await caught_up(api, state)
            assert "default/a" not in snap.pods
            assert used(state, "n1") == 5 * MI
        finally:
            await state.stop()


async def test_a_reservation_is_released_by_an_event_that_repeats_the_record(
    tmp_path: Path,
) -> None:
    """The binder reserves EPC for a pod it bound; the API showing the pod bound releases it,
    even when the record itself was already current (the informer saw the bind first)."""
    async with FakeApiServer(bookmark_interval=0.05) as api:
        api.store.load(NODES, node("n1", "100Mi"))
        api.store.load(PODS, pod("a", "30Mi", node_name="n1", phase="Running"))
        state = InformerState(await configuration(api, tmp_path), Config(), settings=FAST)
        await state.start()
        try:
            await state.wait_synced(timeout=5)
            await caught_up(api, state)
            snap = state.snapshot
            snap.reserve("default/a", "n1", {EPC: 30 * MI}, expires_at=1e12)
            slot = snap.slots["n1"]
            assert int(snap.epc[EPC].reserved[slot]) == 30 * MI
            api.store.patch(
                PODS,
                "default",
                "a",
                "application/merge-patch+json",
                {"status": {"phase": "Running", "podIP": "10.0.0.8"}},
                subresource="status",
            )
            await caught_up(api, state)
            assert "default/a" not in snap.reservations
            assert int(snap.epc[EPC].reserved[slot]) == 0
            assert used(state, "n1") == 30 * MI
        finally:
            await state.stop()
