"""The fake API server's authentication and authorisation reviews: TokenReview and
SubjectAccessReview, answered from a small policy a test configures.

An aggregated API server (the metrics API) delegates both decisions to kube-apiserver: it sends
each bearer token it is shown as a `TokenReview`, and each request's user, groups and attributes
as a `SubjectAccessReview`. Tests need those answers to come from something they control, so this
policy holds known tokens and RBAC-like grants. Grants follow RBAC's matching: `*` matches
anything, a resource is `plural` or `plural/subresource`, a non-resource URL may end in `*`, and
an empty list of namespaces means every namespace (a ClusterRoleBinding). Members of
`system:masters` are allowed everything, as the cluster-admin binding gives them. Every review is
recorded so that tests can count what reached the API server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from epcsched.testing.store import ApiError

Obj = dict[str, Any]

MASTERS = "system:masters"


@dataclass(frozen=True)
class TokenUser:
    """Who a bearer token authenticates as."""

    username: str
    groups: tuple[str, ...] = ("system:authenticated",)
    uid: str = ""


@dataclass(frozen=True)
class Grant:
    """One rule of a role, bound to some users and groups."""

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("*",)
    api_groups: tuple[str, ...] = ("*",)
    resources: tuple[str, ...] = ("*",)
    """`plural`, `plural/subresource`, `*` or `plural/*`."""
    namespaces: tuple[str, ...] = ()
    """Empty: every namespace and cluster-scoped requests (a ClusterRoleBinding)."""
    non_resource_urls: tuple[str, ...] = ()
    """Paths for non-resource requests (`/apis/*`); a grant with these covers no resources."""

    def binds(self, user: str, groups: list[str]) -> bool:
        return user in self.users or any(g in self.groups for g in groups)

    def allows(self, attributes: Mapping[str, Any], *, resource: bool) -> bool:
        verb = str(attributes.get("verb", ""))
        if "*" not in self.verbs and verb not in self.verbs:
            return False
        if not resource:
            path = str(attributes.get("path", ""))
            return any(
                url == path or (url.endswith("*") and path.startswith(url[:-1]))
                for url in self.non_resource_urls
            )
        if self.non_resource_urls:
            return False
        group = str(attributes.get("group", ""))
        if "*" not in self.api_groups and group not in self.api_groups:
            return False
        namespace = str(attributes.get("namespace", "") or "")
        if self.namespaces and namespace not in self.namespaces:
            return False
        plural = str(attributes.get("resource", ""))
        sub = str(attributes.get("subresource", "") or "")
        wanted = f"{plural}/{sub}" if sub else plural
        return any(r == "*" or r == wanted or (sub and r == f"{plural}/*") for r in self.resources)


@dataclass
class AccessPolicy:
    """Tokens and grants the fake API server's reviews answer from."""

    tokens: dict[str, TokenUser] = field(default_factory=dict)
    grants: list[Grant] = field(default_factory=list)
    reviews: list[Obj] = field(default_factory=list)
    """Every review received, in order (TokenReviews and SubjectAccessReviews)."""

    def review(self, kind: str, body: Obj) -> Obj:
        """The review `body` with its `status` filled in, as kube-apiserver answers a create."""
        self.reviews.append(body)
        spec = body.get("spec")
        if not isinstance(spec, dict):
            raise ApiError(422, f"{kind} is invalid: spec: Required value")
        status = self._token(spec) if kind == "TokenReview" else self._access(spec)
        answer = dict(body)
        answer.setdefault("apiVersion", _API_VERSIONS[kind])
        answer["kind"] = kind
        answer.setdefault("metadata", {})
        answer["status"] = status
        return answer

    def _token(self, spec: Obj) -> Obj:
        token = spec.get("token")
        if not isinstance(token, str) or not token:
            raise ApiError(422, "TokenReview is invalid: spec.token: Required value")
        audiences = spec.get("audiences") or []
        user = self.tokens.get(token)
        if user is None:
            return {"authenticated": False, "user": {}, "error": "invalid bearer token"}
        info: Obj = {"username": user.username, "groups": list(user.groups)}
        if user.uid:
            info["uid"] = user.uid
        return {"authenticated": True, "user": info, "audiences": list(audiences)}

    def _access(self, spec: Obj) -> Obj:
        user = spec.get("user") or ""
        groups = spec.get("groups") or []
        if not isinstance(user, str) or not isinstance(groups, list):
            raise ApiError(422, "SubjectAccessReview is invalid: spec.user, spec.groups: Invalid")
        if not user and not groups:
            raise ApiError(
                422,
                'SubjectAccessReview is invalid: spec.user: Invalid value: "": at least one '
                "of user or group must be specified",
            )
        resource_attrs = spec.get("resourceAttributes")
        path_attrs = spec.get("nonResourceAttributes")
        if (resource_attrs is None) == (path_attrs is None):
            raise ApiError(
                422,
                "SubjectAccessReview is invalid: spec.resourceAttributes: Invalid value: exactly "
                "one of nonResourceAttributes or resourceAttributes must be specified",
            )
        attributes = resource_attrs if resource_attrs is not None else path_attrs
        if not isinstance(attributes, dict):
            raise ApiError(422, "SubjectAccessReview is invalid: attributes must be an object")
        if MASTERS in groups:
            return {"allowed": True, "reason": "system:masters"}
        for grant in self.grants:
            if grant.binds(user, groups) and grant.allows(
                attributes, resource=resource_attrs is not None
            ):
                return {"allowed": True, "reason": "allowed by a grant of the fake policy"}
        return {"allowed": False}

    def access_reviews(self) -> list[Obj]:
        """The SubjectAccessReviews received so far."""
        return [r for r in self.reviews if r.get("kind") == "SubjectAccessReview"]

    def token_reviews(self) -> list[Obj]:
        """The TokenReviews received so far."""
        return [r for r in self.reviews if r.get("kind") == "TokenReview"]


_API_VERSIONS = {
    "TokenReview": "authentication.k8s.io/v1",
    "SubjectAccessReview": "authorization.k8s.io/v1",
}
