"""No request, however odd, makes the fake API server or `/bind` answer 500 or a traceback.

Protects the rule that bad input is a 400 (or the Kubernetes Status equivalent): hypothesis
builds methods, paths, query strings and bodies around the real API shapes, and `/bind` bodies
around `ExtenderBindingArgs`. Both servers run on loopback in a background thread and are hit
over HTTP, the way clients reach them.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epcsched.config import Config
from epcsched.extender.app import create_app
from epcsched.extender.bind import Binder, install
from epcsched.kube.client import load_configuration
from epcsched.kube.informer import InformerState
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND
from tests.kube_helpers import node, pod


@dataclass
class Servers:
    loop: asyncio.AbstractEventLoop
    api: FakeApiServer
    extender_url: str

    def run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    tmp: Path = tmp_path_factory.mktemp("fuzz")

    async def start() -> tuple[FakeApiServer, web.AppRunner, str]:
        api = FakeApiServer(watch_timeout=0.2, bookmark_interval=0.05)
        api.store.load(BY_KIND["Node"], node("n1", "64Mi"))
        api.store.load(BY_KIND["Pod"], pod("p1", "8Mi"))
        await api.start()
        conf = await load_configuration(api.write_kubeconfig(tmp / "kubeconfig"))
        config = Config()
        state = InformerState(conf, config)
        app = create_app(config, state)
        install(app, Binder(conf, state, ttl=5.0))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        await state.wait_synced(timeout=10)
        return api, runner, f"http://127.0.0.1:{runner.addresses[0][1]}"

    future = asyncio.run_coroutine_threadsafe(start(), loop)
    api, runner, url = future.result(timeout=30)
    try:
        yield Servers(loop, api, url)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


async def _request(
    url: str, method: str, headers: dict[str, str], body: bytes | None
) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers, data=body) as resp,
    ):
        return resp.status, await resp.read()


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.text(max_size=8),
    st.sampled_from(["64Mi", "n1", "p1", "default", "Node", "Pod", "Running"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
objects = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["Pod", "Node", "Binding", "Eviction", "Scale", 3]),
        "apiVersion": st.sampled_from(["v1", "policy/v1", None]),
        "metadata": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "name": st.one_of(st.sampled_from(["p1", "n1", "x"]), json_values),
                    "namespace": st.one_of(st.sampled_from(["default", "other"]), json_values),
                    "resourceVersion": st.one_of(st.sampled_from(["1", "abc"]), json_values),
                    "finalizers": json_values,
                    "uid": json_values,
                },
            ),
        ),
        "spec": json_values,
        "status": json_values,
        "target": st.one_of(json_values, st.fixed_dictionaries({"name": json_values})),
        "deleteOptions": json_values,
    },
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=40),
    json_values.map(lambda v: json.dumps(v).encode()),
    objects.map(lambda v: json.dumps(v).encode()),
    st.lists(
        st.fixed_dictionaries(
            {"op": st.sampled_from(["add", "remove", "replace", "test", "move"])},
            optional={
                "path": st.sampled_from(["/spec", "/metadata/labels/a", "", "x", "/a/0"]),
                "value": json_values,
            },
        ),
        max_size=3,
    ).map(lambda v: json.dumps(v).encode()),
)
segments = st.sampled_from(
    [
        "api/v1/pods",
        "api/v1/nodes",
        "api/v1/nodes/n1",
        "api/v1/nodes/n1/status",
        "api/v1/namespaces/default/pods",
        "api/v1/namespaces/default/pods/p1",
        "api/v1/namespaces/default/pods/p1/binding",
        "api/v1/namespaces/default/pods/p1/eviction",
        "api/v1/namespaces/default/pods/p1/status",
        "api/v1/namespaces/default/bindings",
        "api/v1/namespaces/default/configmaps/c",
        "api/v1/namespaces/default/events",
        "api/v1/namespaces",
        "apis/coordination.k8s.io/v1/namespaces/default/leases/l",
        "apis/policy/v1/namespaces/default/poddisruptionbudgets",
        "apis/cluster.x-k8s.io/v1beta1/namespaces/default/machinedeployments/md",
        "apis/cluster.x-k8s.io/v1beta1/namespaces/default/machinedeployments/md/scale",
        "apis/cluster.x-k8s.io/v1beta1/machines",
        "apis/nope/v1/x",
        "api/v1/namespaces/default/pods/p1/exec",
        "api",
        "apis/policy/v1",
    ]
)
queries = st.dictionaries(
    st.sampled_from(
        [
            "watch",
            "limit",
            "continue",
            "resourceVersion",
            "labelSelector",
            "fieldSelector",
            "timeoutSeconds",
            "allowWatchBookmarks",
        ]
    ),
    st.one_of(
        st.text(max_size=12),
        st.sampled_from(["1", "true", "0", "-1", "a in (b", "spec.nodeName=n1", "app!=x", "!a"]),
    ),
    max_size=4,
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
        "application/yaml",
        "text/plain",
    ]
)


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
    path=segments,
    query=queries,
    body=bodies,
    content_type=content_types,
)
def test_fake_api_server_never_fails_with_500(
    servers: Servers,
    method: str,
    path: str,
    query: dict[str, str],
    body: bytes | None,
    content_type: str,
) -> None:
    if query.get("watch") in ("1", "true"):
        query["timeoutSeconds"] = "0"
    url = str(aiohttp.client.URL(f"{servers.api.url}/{path}").with_query(query))
    headers = {"Authorization": f"Bearer {servers.api.token}", "Content-Type": content_type}
    status, raw = servers.run(_request(url, method, headers, body))
    assert status < 500, (method, path, query, body, raw[:300])
    if status >= 400:
        reply = json.loads(raw)
        assert reply["kind"] == "Status" and reply["code"] == status and reply["message"]


bind_bodies = st.one_of(
    st.binary(max_size=30),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            key: st.one_of(st.sampled_from(["p1", "n1", "default", "", "ghost"]), json_values)
            for key in ("PodName", "podname", "PodNamespace", "PodUID", "Node", "node")
        },
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bind_bodies)
def test_bind_answers_400_or_a_reason(servers: Servers, body: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    status, raw = servers.run(_request(f"{servers.extender_url}/bind", "POST", headers, body))
    assert status in (200, 400), raw[:300]
    reply = json.loads(raw)
    assert set(reply) == {"Error"}
    if status == 400:
        assert reply["Error"]
