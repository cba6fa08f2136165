"""Only the aggregator (and users with a token) get answers from the metrics API, and only for
what RBAC allows them; every refusal is logged.

The metrics API runs over TLS on loopback with the front-proxy CA, allowed names and header names
read from the fake API server's `kube-system/extension-apiserver-authentication` ConfigMap; all
certificates are generated here. The fake API server answers TokenReviews and
SubjectAccessReviews from a policy this file sets, and records them. Protects DESIGN.md section
5b's security: no client certificate and no token is 401, a certificate from another CA fails the
TLS handshake (logged), a front-proxy certificate with a name not allowed is 401, a user without
RBAC is 403 with kube-apiserver's wording after a SubjectAccessReview naming the request's
attributes, decisions are cached briefly, bearer tokens go through a TokenReview, user headers
are believed only with the front-proxy certificate, and the command refuses bad flags in one line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from epcsched.cli import main
from epcsched.testing.access import Grant, TokenUser
from tests.test_metrics_api import (
    HPA_GROUPS,
    HPA_USER,
    PROXY_CN,
    System,
    client_cert,
    make_ca,
    start_system,
)

pytestmark = pytest.mark.timeout(60)

# No Prometheus: a request that passes authentication and authorisation ends in a 503 naming it,
# which tells it apart from every refusal.
NO_PROMETHEUS = "http://127.0.0.1:9"
RATIO = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/hot/pods/%2A/sgx_epc_usage_ratio"
DISCOVERY = "/apis/custom.metrics.k8s.io/v1beta2"
ALICE_TOKEN = "alice-token-0123456789"
BOB_TOKEN = "bob-token-0123456789"


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    grants = [
        Grant(
            users=(HPA_USER, "alice"),
            verbs=("get", "list"),
            api_groups=("custom.metrics.k8s.io", "external.metrics.k8s.io"),
            resources=("*",),
        ),
        Grant(users=(HPA_USER, "alice"), verbs=("get",), non_resource_urls=("/apis", "/apis/*")),
    ]
    async for running in start_system(tmp_path, NO_PROMETHEUS, grants=grants):
        running.api.access.tokens[ALICE_TOKEN] = TokenUser("alice", ("system:authenticated",))
        running.api.access.tokens[BOB_TOKEN] = TokenUser("bob", ("system:authenticated",))
        yield running


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "refused" in r.getMessage()
    ]


async def get(
    system: System,
    path: str,
    *,
    cert: tuple[Path, Path] | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            system.url + path, ssl=system.client_tls(cert), headers=headers or []
        ) as response,
    ):
        return response.status, await response.json()


def proxy_headers(user: str, *groups: str) -> list[tuple[str, str]]:
    return [("X-Remote-User", user)] + [("X-Remote-Group", g) for g in groups]


async def test_no_client_certificate_and_no_token_is_401_and_logged(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    # Headers alone prove nothing: without the front-proxy certificate they are not read.
    status, body = await get(system, RATIO, headers=proxy_headers(HPA_USER, *HPA_GROUPS))
    assert (status, body["kind"], body["reason"], body["message"]) == (
        401,
        "Status",
        "Unauthorized",
        "Unauthorized",
    )
    assert any(
        "(401)" in line and "no front-proxy client certificate and no bearer token" in line
        for line in refusals(caplog)
    )
    assert system.api.access.reviews == []


async def test_certificate_from_another_ca_fails_the_handshake_and_is_logged(
    system: System, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    impostor = client_cert(make_ca("front-proxy-ca"), PROXY_CN, tmp_path / "impostor")
    with pytest.raises(aiohttp.ClientError):
        await get(system, RATIO, cert=impostor, headers=proxy_headers(HPA_USER, *HPA_GROUPS))
    assert any(
        "refused TLS connection from 127.0.0.1" in line and "certificate verify failed" in line
        for line in refusals(caplog)
    ), refusals(caplog)
    assert system.api.access.reviews == []


async def test_front_proxy_certificate_with_a_name_not_allowed_is_401(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    other = client_cert(system.front_proxy_ca, "some-other-client", system.pki)
    status, body = await get(system, RATIO, cert=other, headers=proxy_headers(HPA_USER))
    assert (status, body["reason"]) == (401, "Unauthorized")
    assert any(
        "client certificate CN 'some-other-client' is not one of the allowed front-proxy names"
        in line
        for line in refusals(caplog)
    )


async def test_front_proxy_request_without_a_user_header_is_401(system: System) -> None:
    proxy = client_cert(system.front_proxy_ca, PROXY_CN, system.pki)
    status, _ = await get(system, RATIO, cert=proxy, headers=[("X-Remote-Group", "g")])
    assert status == 401


async def test_user_without_rbac_is_403_after_a_subject_access_review(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = client_cert(system.front_proxy_ca, PROXY_CN, system.pki)
    headers = [
        *proxy_headers("mallory", "team-a", "system:authenticated"),
        ("X-Remote-Extra-Scopes", "read"),
    ]
    status, body = await get(system, RATIO, cert=proxy, headers=headers)
    assert (status, body["reason"], body["message"]) == (
        403,
        "Forbidden",
        'pods.custom.metrics.k8s.io "*" is forbidden: User "mallory" cannot get resource '
        '"pods/sgx_epc_usage_ratio" in API group "custom.metrics.k8s.io" in the namespace "hot"',
    )
    (review,) = system.api.access.access_reviews()
    assert review["spec"] == {
        "user": "mallory",
        "groups": ["team-a", "system:authenticated"],
        "extra": {"scopes": ["read"]},
        "resourceAttributes": {
            "namespace": "hot",
            "verb": "get",
            "group": "custom.metrics.k8s.io",
            "version": "v1beta2",
            "resource": "pods",
            "subresource": "sgx_epc_usage_ratio",
            "name": "*",
        },
    }
    assert any("(403)" in line and "mallory" in line for line in refusals(caplog))
    # External metrics are a list of the metric as a resource.
    external = "/apis/external.metrics.k8s.io/v1beta1/namespaces/hot/sgx_epc_pool_utilization"
    status, body = await get(system, external, cert=proxy, headers=headers)
    assert status == 403
    assert system.api.access.access_reviews()[-1]["spec"]["resourceAttributes"] == {
        "namespace": "hot",
        "verb": "list",
        "group": "external.metrics.k8s.io",
        "version": "v1beta1",
        "resource": "sgx_epc_pool_utilization",
    }


async def test_allowed_hpa_gets_through_and_decisions_are_cached(system: System) -> None:
    proxy = client_cert(system.front_proxy_ca, PROXY_CN, system.pki)
    headers = proxy_headers(HPA_USER, *HPA_GROUPS)
    for _ in range(3):
        status, body = await get(system, RATIO, cert=proxy, headers=headers)
        # Past authentication and authorisation, the missing Prometheus is what stops it.
        assert (status, body["reason"]) == (503, "ServiceUnavailable")
        status, _ = await get(system, DISCOVERY, cert=proxy, headers=headers)
        assert status == 200
    # One review per distinct request within the cache's 10 s.
    reviews = system.api.access.access_reviews()
    assert len(reviews) == 2
    assert reviews[1]["spec"]["nonResourceAttributes"] == {"path": DISCOVERY, "verb": "get"}


async def test_the_aggregators_system_masters_probe_needs_no_review(system: System) -> None:
    proxy = client_cert(system.front_proxy_ca, PROXY_CN, system.pki)
    headers = proxy_headers("system:kube-aggregator", "system:masters")
    status, body = await get(system, DISCOVERY, cert=proxy, headers=headers)
    assert (status, body["kind"]) == (200, "APIResourceList")
    assert system.api.access.reviews == []


async def test_bearer_tokens_are_checked_with_a_token_review(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    alice = [("Authorization", f"Bearer {ALICE_TOKEN}")]
    for _ in range(2):
        status, _ = await get(system, DISCOVERY, headers=alice)
        assert status == 200
    assert [r["spec"]["token"] for r in system.api.access.token_reviews()] == [ALICE_TOKEN]
    status, body = await get(system, DISCOVERY, headers=[("Authorization", "Bearer forged")])
    assert (status, body["reason"]) == (401, "Unauthorized")
    assert any("bearer token rejected by the TokenReview" in line for line in refusals(caplog))


async def test_user_headers_beside_a_token_are_ignored(system: System) -> None:
    """Bob cannot borrow the HPA's rights by naming it in X-Remote-User without the
    front-proxy certificate: the token's user is the one authorised."""
    headers = [("Authorization", f"Bearer {BOB_TOKEN}"), *proxy_headers(HPA_USER, *HPA_GROUPS)]
    status, body = await get(system, RATIO, headers=headers)
    assert (status, body["reason"]) == (403, "Forbidden")
    assert system.api.access.access_reviews()[-1]["spec"]["user"] == "bob"


async def test_probes_need_no_credentials(system: System) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/livez", "/readyz"):
            async with session.get(system.url + path, ssl=system.client_tls()) as response:
                assert response.status == 200, path
    assert system.api.access.reviews == []


# ----- the command ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--prometheus-url: required (or prometheus.url in --config)"),
        (["--prometheus-url", "prom:9090"], "--prometheus-url: must start with http://"),
        (
            ["--prometheus-url", "http://p:9090", "--tls-cert", "x.crt"],
            "--tls-cert and --tls-key: give both, or neither for a self-signed one",
        ),
        (
            ["--prometheus-url", "http://p:9090", "--tls-cert", "/no/x.crt", "--tls-key", "k"],
            "--tls-cert: /no/x.crt: no such file",
        ),
        (["--prometheus-url", "http://p:9090", "--port", "70000"], "--port: must be 0..65535"),
        (
            ["--prometheus-url", "http://p:9090", "--kubeconfig", "/no/kubeconfig"],
            "--kubeconfig: /no/kubeconfig: no such kubeconfig file",
        ),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["metrics-api", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("epcsched metrics-api: error: ")
    assert message in err


def test_unusable_certificate_files_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    (tmp_path / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "current-context: c\n"
    )
    (tmp_path / "tls.crt").write_text("not a certificate\n")
    (tmp_path / "tls.key").write_text("not a key\n")
    code = main(
        [
            "metrics-api",
            "--prometheus-url",
            "http://127.0.0.1:9",
            "--kubeconfig",
            str(tmp_path / "kubeconfig"),
            "--tls-cert",
            str(tmp_path / "tls.crt"),
            "--tls-key",
            str(tmp_path / "tls.key"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("epcsched metrics-api: error: --tls-cert/--tls-key: cannot use ")
