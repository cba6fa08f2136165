"""Who is asking, and may they: authentication and authorisation as an aggregated API server
does them, delegated to kube-apiserver.

kube-apiserver's aggregator proxies `/apis/custom.metrics.k8s.io/...` to us over TLS with its
front-proxy client certificate and puts the real user in headers (`X-Remote-User`,
`X-Remote-Group`, `X-Remote-Extra-*`, names configurable). Those headers are believed only on a
connection whose client certificate the TLS layer verified against the front-proxy CA and whose
common name is one of the allowed names; both come from the `kube-system/
extension-apiserver-authentication` ConfigMap (`requestheader-*` keys), which kube-apiserver
keeps current and which is read again periodically so a rotated CA is picked up. A request
without such a certificate may instead carry a bearer token (direct `kubectl get --raw` against
the Service), checked with a `TokenReview`. Each request is then authorised with a
`SubjectAccessReview` of its attributes; members of `system:masters` are allowed without one,
as kube's delegating authoriser allows them (the aggregator's availability probe uses that
group). Review answers are cached for a few seconds, as kube's delegating authenticator and
authoriser cache them, so an HPA asking every 15 s costs the API server little.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import unquote

import aiohttp
from kubernetes_asyncio import client
from multidict import CIMultiDictProxy

from epcsched.kube.client import api_client
from epcsched.metricsapi.wire import Route

log = logging.getLogger("epcsched.metricsapi.auth")

AUTH_NAMESPACE = "kube-system"
AUTH_CONFIGMAP = "extension-apiserver-authentication"
MASTERS = "system:masters"

K = TypeVar("K")
V = TypeVar("V")


class AuthConfigError(ValueError):
    """The front-proxy configuration cannot be used; the message names the key."""


class Refusal(Exception):
    """The request is not served: 401 (who?), 403 (not allowed) or 503 (cannot check)."""

    def __init__(self, code: int, message: str, *, why: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.why = why or message
        """What the log says (may name more than the client is told)."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def describe(self) -> str:
        return f"{self.name} (groups {', '.join(self.groups) or 'none'})"


@dataclass(frozen=True, slots=True)
class FrontProxy:
    """The `requestheader-*` settings of the extension-apiserver-authentication ConfigMap."""

    client_ca: str | None = None
    """PEM bundle of the front-proxy CA; None: no front proxy, certificates are not accepted."""
    allowed_names: tuple[str, ...] = ()
    """Common names a front-proxy certificate may have; empty allows any the CA signed."""
    username_headers: tuple[str, ...] = ()
    uid_headers: tuple[str, ...] = ()
    group_headers: tuple[str, ...] = ()
    extra_prefixes: tuple[str, ...] = ()

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> FrontProxy:
        def names(key: str) -> tuple[str, ...]:
            text = data.get(key)
            if text is None or not text.strip():
                return ()
            try:
                value = json.loads(text)
            except ValueError:
                raise AuthConfigError(f"{key}: not a JSON list: {text[:80]!r}") from None
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise AuthConfigError(f"{key}: must be a JSON list of strings")
            return tuple(v for v in value if v)

        ca = data.get("requestheader-client-ca-file") or None
        if ca is not None and "-----BEGIN CERTIFICATE-----" not in ca:
            raise AuthConfigError("requestheader-client-ca-file: no PEM certificate in it")
        proxy = cls(
            client_ca=ca,
            allowed_names=names("requestheader-allowed-names"),
            username_headers=names("requestheader-username-headers"),
            uid_headers=names("requestheader-uid-headers"),
            group_headers=names("requestheader-group-headers"),
            extra_prefixes=names("requestheader-extra-headers-prefix"),
        )
        if ca is not None and not proxy.username_headers:
            raise AuthConfigError(
                "requestheader-username-headers: empty, so no front-proxy request names a user"
            )
        return proxy


def common_name(peercert: Mapping[str, Any] | None) -> str | None:
    """The subject CN of a verified peer certificate (`SSLObject.getpeercert()`), if any."""
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def front_proxy_user(
    proxy: FrontProxy, headers: CIMultiDictProxy[str], certificate_cn: str
) -> User:
    """The user a verified front-proxy request names in its headers; Refusal(401) otherwise."""
    if proxy.allowed_names and certificate_cn not in proxy.allowed_names:
        raise Refusal(
            401,
            "Unauthorized",
            why=f"client certificate CN {certificate_cn!r} is not one of the allowed front-proxy "
            f"names ({', '.join(proxy.allowed_names)})",
        )
    name = next(
        (v.strip() for h in proxy.username_headers for v in headers.getall(h, ()) if v.strip()),
        "",
    )
    if not name:
        raise Refusal(
            401,
            "Unauthorized",
            why=f"front-proxy request without a user header ({', '.join(proxy.username_headers)})",
        )
    uid = next((v for h in proxy.uid_headers for v in headers.getall(h, ()) if v), "")
    # Each header line is one group, as kube's request-header authenticator reads them.
    groups = tuple(v for h in proxy.group_headers for v in headers.getall(h, ()) if v)
    extra: dict[str, list[str]] = {}
    for key in headers:
        for prefix in proxy.extra_prefixes:
            if key.lower().startswith(prefix.lower()):
                extra_key = unquote(key[len(prefix) :]).lower()
                extra.setdefault(extra_key, []).extend(headers.getall(key))
                break
    return User(
        name,
        groups,
        uid,
        tuple(sorted((k, tuple(dict.fromkeys(v))) for k, v in extra.items())),
    )


class TtlCache(Generic[K, V]):
    """A bounded map whose entries expire `ttl` seconds after they were put."""

    def __init__(self, ttl: float, *, size: int = 4096, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        self._entries[key] = (self._clock() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class Reviewer:
    """TokenReviews, SubjectAccessReviews and the front-proxy ConfigMap, through the API."""

    def __init__(
        self,
        configuration: client.Configuration,
        *,
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.configuration = configuration
        # A 1-tuple, so that a token found unknown (None) is cached too.
        self._tokens: TtlCache[str, tuple[User | None]] = TtlCache(ttl, clock=clock)
        self._decisions: TtlCache[tuple[Any, ...], bool] = TtlCache(ttl, clock=clock)
        self._api: client.ApiClient | None = None
        self.reviews_sent = 0

    def _client(self) -> client.ApiClient:
        if self._api is None:
            self._api = api_client(self.configuration)
        return self._api

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def _call(self, what: str, call: Any, *args: Any) -> dict[str, Any]:
        try:
            response = await call(*args, _preload_content=False, _request_timeout=10)
            try:
                body = await response.read()
                code = response.status
            finally:
                response.release()
        except client.ApiException as exc:
            code, body = int(exc.status or 0), (exc.body or b"")
            if isinstance(body, str):
                body = body.encode()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Refusal(
                503,
                f"cannot check {what} with the Kubernetes API",
                why=f"{what}: cannot reach the API server at {self.configuration.host}: {exc}",
            ) from None
        if not 200 <= code < 300:
            message = body[:300].decode("utf-8", "replace")
            with_status = _status_message(body)
            raise Refusal(
                503,
                f"cannot check {what} with the Kubernetes API",
                why=f"{what}: the API server answered {code}: {with_status or message}",
            )
        try:
            answer = json.loads(body)
        except ValueError:
            raise Refusal(
                503,
                f"cannot check {what} with the Kubernetes API",
                why=f"{what}: the API server's answer is not JSON",
            ) from None
        return answer if isinstance(answer, dict) else {}

    async def front_proxy(self) -> FrontProxy:
        """The current front-proxy settings (raises Refusal(503) or AuthConfigError)."""
        core = client.CoreV1Api(self._client())
        answer = await self._call(
            f"the {AUTH_NAMESPACE}/{AUTH_CONFIGMAP} ConfigMap",
            core.read_namespaced_config_map,
            AUTH_CONFIGMAP,
            AUTH_NAMESPACE,
        )
        data = answer.get("data")
        return FrontProxy.from_configmap(data if isinstance(data, dict) else {})

    async def token_user(self, token: str) -> User:
        """Who a bearer token belongs to (TokenReview); Refusal(401) for an unknown token."""
        key = hashlib.sha256(token.encode()).hexdigest()
        found = self._tokens.get(key)
        if found is None:
            api = client.AuthenticationV1Api(self._client())
            self.reviews_sent += 1
            answer = await self._call(
                "the bearer token",
                api.create_token_review,
                {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "spec": {"token": token},
                },
            )
            status = answer.get("status") or {}
            user = status.get("user") or {}
            cached: User | None = None
            if status.get("authenticated") and user.get("username"):
                extra = user.get("extra") or {}
                cached = User(
                    str(user["username"]),
                    tuple(str(g) for g in user.get("groups") or ()),
                    str(user.get("uid") or ""),
                    tuple(sorted((str(k), tuple(map(str, v))) for k, v in extra.items())),
                )
            found = (cached,)
            self._tokens.put(key, found)
        if found[0] is None:
            raise Refusal(401, "Unauthorized", why="bearer token rejected by the TokenReview")
        return found[0]

    async def authorize(self, user: User, route: Route, verb: str) -> None:
        """Refusal(403) unless `user` may `verb` what `route` names."""
        if MASTERS in user.groups:
            return
        kind, attributes = route.attributes(verb)
        key = (user, kind, tuple(sorted(attributes.items())))
        allowed = self._decisions.get(key)
        if allowed is None:
            spec: dict[str, Any] = {
                "user": user.name,
                "groups": list(user.groups),
                kind: attributes,
            }
            if user.uid:
                spec["uid"] = user.uid
            if user.extra:
                spec["extra"] = {k: list(v) for k, v in user.extra}
            api = client.AuthorizationV1Api(self._client())
            self.reviews_sent += 1
            answer = await self._call(
                "authorisation",
                api.create_subject_access_review,
                {
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SubjectAccessReview",
                    "spec": spec,
                },
            )
            allowed = bool((answer.get("status") or {}).get("allowed"))
            self._decisions.put(key, allowed)
        if not allowed:
            raise Refusal(403, forbidden_message(user, route, verb))


def forbidden_message(user: User, route: Route, verb: str) -> str:
    """kube-apiserver's wording for a denied request."""
    kind, attributes = route.attributes(verb)
    if kind == "nonResourceAttributes":
        return f'forbidden: User "{user.name}" cannot {verb} path "{route.path}"'
    resource = attributes["resource"]
    if attributes.get("subresource"):
        resource = f"{resource}/{attributes['subresource']}"
    name = attributes.get("name") or ""
    what = f'{attributes["resource"]}.{attributes["group"]} "{name}"' if name else resource
    where = f' in the namespace "{attributes["namespace"]}"' if attributes.get("namespace") else ""
    return (
        f'{what} is forbidden: User "{user.name}" cannot {attributes["verb"]} resource '
        f'"{resource}" in API group "{attributes["group"]}"{where}'
    )


def _status_message(body: bytes) -> str:
    try:
        status = json.loads(body)
    except ValueError:
        return ""
    return str(status.get("message", "")) if isinstance(status, dict) else ""
