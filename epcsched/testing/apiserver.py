"""A fake kube-apiserver for tests and the demo, over real HTTP.

No kube-apiserver can be installed here, yet epcsched's informers, binder and autoscaler must be
tested with the real kubernetes-asyncio clients they run with in production. This aiohttp server
speaks the REST subset they use, with kube-apiserver's semantics: list with a resourceVersion
(and `limit`/`continue`), label and field selectors, chunked watches resumable from a version,
bookmarks, `410 Gone`, optimistic concurrency, status and scale subresources, pods/binding and
pods/eviction with PodDisruptionBudgets. Failures are `Status` bodies, never tracebacks.

Tests also need the failures a real cluster has, on demand: `Faults` answers the next requests
with 410/429/500, delays them, cuts watch streams mid-way or after N events, and compacts the
history so resumes fail with 410. Tests reach it in-process (`FakeApiServer.faults`) or over HTTP
(`/_fake/...`), which is how a standalone server (`python -m epcsched.testing.apiserver`) is driven.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import yaml
from aiohttp import web

from epcsched.testing.access import AccessPolicy
from epcsched.testing.selectors import Selector, SelectorError
from epcsched.testing.store import (
    BY_KIND,
    RESOURCES,
    ApiError,
    Change,
    Obj,
    Resource,
    Store,
    find_resource,
    gone,
)

log = logging.getLogger("epcsched.testing.apiserver")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_encode = msgspec.json.Encoder().encode


# ----- fault injection -------------------------------------------------------------------
@dataclass
class FaultRule:
    """Answer the next `count` matching requests with `code` instead of serving them."""

    code: int
    count: int
    path: str = ""
    """Only requests whose path contains this."""
    method: str = ""
    """Only this HTTP method (empty: any)."""
    watch: bool | None = None
    """Only watches (True), only non-watches (False), or both (None)."""

    def matches(self, request: web.Request, is_watch: bool) -> bool:
        if self.path and self.path not in request.path:
            return False
        if self.method and self.method.upper() != request.method:
            return False
        return self.watch is None or self.watch == is_watch


@dataclass
class Faults:
    """What the server does wrong, and how often; tests change these while it runs."""

    rules: list[FaultRule] = field(default_factory=list)
    delay: float = 0.0
    """Seconds added before every API response."""
    delay_count: int | None = None
    """How many requests are delayed (None: all, until cleared)."""
    drop_watch_after: int | None = None
    """Cut every watch stream (without a clean end) after this many events."""
    requests: int = 0
    """Requests served so far (fault endpoints excluded)."""
    by_verb: dict[str, int] = field(default_factory=dict)
    """Requests per verb (`list`, `watch`, `get`, `create`, ...), for assertions."""
    injected: int = 0
    """Requests answered with an injected error."""
    store: Store | None = None

    def fail_next(
        self,
        code: int,
        count: int = 1,
        *,
        path: str = "",
        method: str = "",
        watch: bool | None = None,
    ) -> None:
        self.rules.append(FaultRule(code, count, path, method, watch))

    def delay_next(self, seconds: float, count: int | None = None) -> None:
        self.delay = seconds
        self.delay_count = count

    def drop_watches(self, *, abort: bool = True) -> int:
        """End every open watch now: `abort` cuts the connection, otherwise a clean end."""
        if self.store is None:
            return 0
        dropped = 0
        for sub in list(self.store.all_subscriptions()):
            sub.abort = abort
            sub.queue.put_nowait(None)
            dropped += 1
        return dropped

    def clear(self) -> None:
        self.rules.clear()
        self.delay = 0.0
        self.delay_count = None
        self.drop_watch_after = None

    def take(self, request: web.Request, is_watch: bool) -> FaultRule | None:
        for rule in self.rules:
            if rule.count > 0 and rule.matches(request, is_watch):
                rule.count -= 1
                if rule.count == 0:
                    self.rules.remove(rule)
                self.injected += 1
                return rule
        return None

    def take_delay(self) -> float:
        if self.delay <= 0:
            return 0.0
        if self.delay_count is not None:
            if self.delay_count <= 0:
                return 0.0
            self.delay_count -= 1
        return self.delay


_INJECTED_MESSAGES = {
    410: "too old resource version (injected)",
    429: "too many requests, please try again later (injected)",
    500: "internal error (injected)",
    503: "the server is currently unable to handle the request (injected)",
}


# ----- settings and keys -----------------------------------------------------------------
@dataclass
class ServerSettings:
    token: str | None = None
    """Bearer token every API request must carry (None: no authentication)."""
    bookmark_interval: float = 1.0
    """Seconds between BOOKMARK events on watches that allow them."""
    watch_timeout: float = 1800.0
    """Longest watch when the client gives no timeoutSeconds (kube: --min-request-timeout)."""


STORE = web.AppKey("store", Store)
FAULTS = web.AppKey("faults", Faults)
SETTINGS = web.AppKey("settings", ServerSettings)
ACCESS = web.AppKey("access", AccessPolicy)


# ----- helpers ---------------------------------------------------------------------------
def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(body), status=status, content_type="application/json")


def _error(exc: ApiError) -> web.Response:
    response = _json(exc.status(), exc.code)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _success(code: int = 201, details: Obj | None = None) -> web.Response:
    body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details:
        body["details"] = details
    body["code"] = code
    return _json(body, code)


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise ApiError(400, "the request body is empty")
    try:
        if request.content_type in ("application/yaml", "application/apply-patch+yaml"):
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply") from None


async def _object_body(request: web.Request, kind: str) -> Obj:
    body = await _body(request)
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a {kind} object")
    given = body.get("kind")
    if given is not None and given != kind:
        raise ApiError(400, f"the request body is a {given!r}, expected {kind}")
    meta = body.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise ApiError(400, f"{kind}.metadata must be an object")
    return body


def _bool_param(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true")


def _int_param(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, f"{name}: invalid value {value!r}: must be an integer") from None
    if number < 0:
        raise ApiError(400, f"{name}: invalid value {value!r}: must be >= 0")
    return number


def _rv_param(request: web.Request) -> int | None:
    value = request.query.get("resourceVersion")
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"invalid resource version {value!r}") from None


@dataclass(frozen=True, slots=True)
class Target:
    """What a URL names: a resource, maybe a namespace, an object and a subresource."""

    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str | None


def _resolve(path: str) -> Target:
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise ApiError(404, f"the server could not find the requested resource ({path})")
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = find_resource(group, version, rest[0])
    if resource is None or len(rest) > 3:
        raise ApiError(404, f"the server could not find the requested resource ({path})")
    if namespace is not None and not resource.namespaced:
        raise ApiError(404, f"the server could not find the requested resource ({path})")
    name = rest[1] if len(rest) >= 2 else None
    sub = rest[2] if len(rest) == 3 else None
    if sub is not None and sub not in resource.subresources:
        raise ApiError(404, f"the server could not find the requested resource ({path})")
    return Target(resource, namespace, name, sub)


def _selector(request: web.Request, resource: Resource) -> Selector:
    try:
        return Selector.parse(
            request.query.get("labelSelector"), request.query.get("fieldSelector"), resource.kind
        )
    except SelectorError as exc:
        raise ApiError(400, str(exc)) from None


# ----- list and watch --------------------------------------------------------------------
@dataclass(eq=False)
class _Continuation:
    """The rest of a paginated list, frozen at the list's resourceVersion like etcd does."""

    rv: int
    items: list[Obj]


class _Pages:
    """Continue tokens of unfinished lists; a token may be retried, as kube-apiserver's can."""

    LIMIT = 256

    def __init__(self) -> None:
        self.pending: OrderedDict[str, _Continuation] = OrderedDict()

    def token(self, rest: _Continuation) -> str:
        key = secrets.token_hex(8)
        self.pending[key] = rest
        # Abandoned lists must not grow the server without bound: the oldest tokens expire.
        while len(self.pending) > self.LIMIT:
            self.pending.popitem(last=False)
        raw = _encode({"k": key, "rv": rest.rv})
        return base64.urlsafe_b64encode(raw).decode()

    def resume(self, token: str, store: Store) -> _Continuation:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            key = data["k"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ApiError(400, "continue key is not valid: malformed token") from None
        rest = self.pending.get(key) if isinstance(key, str) else None
        if rest is None or rest.rv < store.compacted:
            raise gone(
                "The provided continue parameter is too old to display a consistent list "
                "result. You can start a new list without the continue parameter."
            )
        return rest


PAGES = web.AppKey("pages", _Pages)


async def _list(request: web.Request, target: Target) -> web.Response:
    store = request.app[STORE]
    resource = target.resource
    limit = _int_param(request, "limit")
    token = request.query.get("continue")
    if token:
        rest = request.app[PAGES].resume(token, store)
        rv, items = rest.rv, rest.items
    else:
        _rv_param(request)  # validated; every list is served from the newest state
        rv = store.rv
        items = store.items(resource, target.namespace, _selector(request, resource))
    meta: Obj = {"resourceVersion": str(rv)}
    if limit and len(items) > limit:
        meta["continue"] = request.app[PAGES].token(_Continuation(rv, items[limit:]))
        meta["remainingItemCount"] = len(items) - limit
        items = items[:limit]
    body = {
        "kind": f"{resource.kind}List",
        "apiVersion": resource.api_version,
        "metadata": meta,
        "items": [_without_type(obj) for obj in items],
    }
    return _json(body)


def _without_type(obj: Obj) -> Obj:
    # Items of a list carry no kind/apiVersion, as kube-apiserver sends them.
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _event_line(kind: str, obj: Obj) -> bytes:
    return _encode({"type": kind, "object": obj}) + b"\n"


def _translate(change: Change, target: Target, selector: Selector) -> bytes | None:
    """The event a watch with this namespace and selector sees for `change`, if any."""

    def visible(obj: Obj | None) -> bool:
        if obj is None:
            return False
        if target.namespace and obj["metadata"].get("namespace") != target.namespace:
            return False
        return selector.everything or selector.matches(obj)

    before = visible(change.old)
    after = visible(change.new)
    if change.deleted:
        return _event_line("DELETED", change.new) if before or after else None
    if after:
        return _event_line("MODIFIED" if before else "ADDED", change.new)
    if before:
        # The object left the selection: a watcher sees it go, as with kube-apiserver.
        return _event_line("DELETED", change.new)
    return None


async def _watch(request: web.Request, target: Target) -> web.StreamResponse:
    store = request.app[STORE]
    faults = request.app[FAULTS]
    settings = request.app[SETTINGS]
    resource = target.resource
    selector = _selector(request, resource)
    since = _rv_param(request)
    bookmarks = _bool_param(request, "allowWatchBookmarks")
    timeout = _int_param(request, "timeoutSeconds")
    # As in kube-apiserver, 0 means the server's own limit, not an immediate end.
    deadline = time.monotonic() + (timeout or settings.watch_timeout)

    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    # Subscribe before reading the current state: no write can fall between the two.
    sub = store.subscribe(resource)
    try:
        initial: list[bytes] = []
        if since is None or since == 0:
            for obj in store.items(resource, target.namespace, selector):
                initial.append(_event_line("ADDED", obj))
            last = store.rv
        else:
            try:
                changes = store.changes_since(resource, since)
            except ApiError as exc:
                # kube-apiserver answers a too-old watch with 200 and an ERROR event.
                await response.prepare(request)
                await response.write(_event_line("ERROR", exc.status()))
                await response.write_eof()
                return response
            for past in changes:
                line = _translate(past, target, selector)
                if line is not None:
                    initial.append(line)
            last = max(since, store.rv)
        await response.prepare(request)
        sent = 0
        limit = faults.drop_watch_after

        async def send(lines: list[bytes]) -> bool:
            nonlocal sent
            if limit is not None and sent + len(lines) >= limit:
                # Send what fits, then cut the connection as a broken network would.
                await response.write(b"".join(lines[: max(limit - sent, 0)]))
                _cut(request)
                return False
            if lines:
                await response.write(b"".join(lines))
            sent += len(lines)
            return True

        if not await send(initial):
            return response
        next_bookmark = time.monotonic() + settings.bookmark_interval
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            wait = deadline - now
            if bookmarks:
                wait = min(wait, max(next_bookmark - now, 0.0))
            change: Change | None
            if not sub.queue.empty():
                # Queued changes go first: waiting with a zero timeout would never get them.
                change = sub.queue.get_nowait()
            else:
                try:
                    change = await asyncio.wait_for(sub.queue.get(), timeout=wait)
                except TimeoutError:
                    if bookmarks and time.monotonic() >= next_bookmark and sub.queue.empty():
                        # Nothing is queued for this watch: it has seen every change up to
                        # now, including the versions other kinds' writes used up.
                        last = max(last, store.rv)
                        bookmark = {
                            "kind": resource.kind,
                            "apiVersion": resource.api_version,
                            "metadata": {"resourceVersion": str(last)},
                        }
                        await response.write(_event_line("BOOKMARK", bookmark))
                        next_bookmark = time.monotonic() + settings.bookmark_interval
                    continue
            batch: list[Change | None] = [change]
            while not sub.queue.empty():
                batch.append(sub.queue.get_nowait())
            lines = []
            stop = False
            for item in batch:
                if item is None:
                    stop = True
                    break
                if item.rv <= last:
                    continue
                last = item.rv
                line = _translate(item, target, selector)
                if line is not None:
                    lines.append(line)
            if not await send(lines):
                return response
            if stop:
                if sub.abort:
                    _cut(request)
                    return response
                break
            if not sub.queue.empty():
                continue
            # Everything up to the newest version has been sent: a bookmark may say so.
            last = max(last, store.rv)
        await response.write_eof()
        return response
    except ConnectionResetError:
        # The client went away (or a fault cut it): nothing is left to answer.
        return response
    finally:
        store.unsubscribe(sub)


def _cut(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


# ----- handlers --------------------------------------------------------------------------
def _verb(request: web.Request, target: Target | None) -> str:
    if target is None:
        return "other"
    method = request.method
    if method == "GET":
        if target.name is None:
            return "watch" if _bool_param(request, "watch") else "list"
        return "get"
    if target.subresource in ("binding", "eviction"):
        return target.subresource
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if target.name else "deletecollection",
    }.get(method, "other")


async def _serve(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    faults = request.app[FAULTS]
    settings = request.app[SETTINGS]
    if settings.token is not None:
        given = request.headers.get("Authorization", "")
        if not secrets.compare_digest(given, f"Bearer {settings.token}"):
            return _error(ApiError(401, "Unauthorized"))
    try:
        target = _resolve(request.path)
    except ApiError as exc:
        target = None
        resolve_error: ApiError | None = exc
    else:
        resolve_error = None
    verb = _verb(request, target)
    faults.requests += 1
    faults.by_verb[verb] = faults.by_verb.get(verb, 0) + 1
    delay = faults.take_delay()
    if delay:
        await asyncio.sleep(delay)
    rule = faults.take(request, verb == "watch")
    if rule is not None:
        message = _INJECTED_MESSAGES.get(rule.code, f"injected error {rule.code}")
        error = gone(message) if rule.code == 410 else ApiError(rule.code, message)
        if rule.code == 429:
            error.retry_after = 1
        return _error(error)
    if resolve_error is not None or target is None:
        return _error(resolve_error or ApiError(404, "not found"))
    try:
        return await _dispatch(request, store, target, verb)
    except ApiError as exc:
        return _error(exc)


async def _dispatch(
    request: web.Request, store: Store, target: Target, verb: str
) -> web.StreamResponse:
    resource = target.resource
    method = request.method
    name = target.name
    if resource.plural in ("tokenreviews", "subjectaccessreviews"):
        if method != "POST" or name is not None:
            raise ApiError(405, f"method {method} is not allowed on {resource.plural}")
        review = await _object_body(request, resource.kind)
        return _json(request.app[ACCESS].review(resource.kind, review), 201)
    if resource.plural == "bindings":
        if method != "POST" or name is not None:
            raise ApiError(405, f"method {method} is not allowed on bindings")
        binding = await _object_body(request, "Binding")
        pod_name = (binding.get("metadata") or {}).get("name")
        if not isinstance(pod_name, str) or not pod_name:
            raise ApiError(422, "Binding is invalid: metadata.name: Required value")
        store.bind(target.namespace or "default", pod_name, binding)
        return _success()
    if name is None:
        if method == "GET":
            if verb == "watch":
                return await _watch(request, target)
            return await _list(request, target)
        if method == "POST":
            body = await _object_body(request, resource.kind)
            return _json(store.create(resource, target.namespace, body), 201)
        if method == "DELETE":
            selector = _selector(request, resource)
            deleted = [
                store.delete(resource, o["metadata"].get("namespace"), o["metadata"]["name"])
                for o in store.items(resource, target.namespace, selector)
            ]
            return _json(
                {
                    "kind": f"{resource.kind}List",
                    "apiVersion": resource.api_version,
                    "metadata": {"resourceVersion": str(store.rv)},
                    "items": deleted,
                }
            )
        raise ApiError(405, f"method {method} is not allowed on a collection")
    sub = target.subresource
    if sub == "binding":
        if method != "POST":
            raise ApiError(405, f"method {method} is not allowed on pods/binding")
        binding = await _object_body(request, "Binding")
        store.bind(target.namespace or "default", name, binding)
        return _success()
    if sub == "eviction":
        if method != "POST":
            raise ApiError(405, f"method {method} is not allowed on pods/eviction")
        eviction = await _object_body(request, "Eviction")
        store.evict(target.namespace or "default", name, eviction)
        return _success()
    if sub == "scale":
        if method == "GET":
            return _json(store.scale(resource, target.namespace, name))
        if method == "PUT":
            scale = await _object_body(request, "Scale")
            return _json(store.set_scale(resource, target.namespace, name, scale))
        if method == "PATCH":
            patch = await _body(request)
            content_type = request.headers.get("Content-Type", "")
            return _json(store.patch_scale(resource, target.namespace, name, content_type, patch))
        raise ApiError(405, f"method {method} is not allowed on scale")
    if method == "GET":
        return _json(store.get(resource, target.namespace, name))
    if method == "PUT":
        body = await _object_body(request, resource.kind)
        return _json(store.update(resource, target.namespace, name, body, subresource=sub))
    if method == "PATCH":
        patch = await _body(request)
        content_type = request.headers.get("Content-Type", "")
        return _json(
            store.patch(resource, target.namespace, name, content_type, patch, subresource=sub)
        )
    if method == "DELETE":
        preconditions: Obj = {}
        if request.can_read_body:
            raw = await request.read()
            if raw:
                try:
                    options = json.loads(raw)
                except ValueError:
                    raise ApiError(400, "DeleteOptions body is not valid JSON") from None
                if isinstance(options, dict) and isinstance(options.get("preconditions"), dict):
                    preconditions = options["preconditions"]
        return _json(
            store.delete(
                resource,
                target.namespace,
                name,
                uid=preconditions.get("uid"),
                resource_version=preconditions.get("resourceVersion"),
            )
        )
    raise ApiError(405, f"method {method} is not allowed")


# ----- discovery -------------------------------------------------------------------------
def _resource_list(group: str, version: str) -> Obj:
    entries: list[Obj] = []
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        entries.append(
            {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": list(r.verbs),
            }
        )
        for sub in sorted(r.subresources):
            kind = {"binding": "Binding", "eviction": "Eviction", "scale": "Scale"}.get(sub, r.kind)
            verbs = ["create"] if sub in ("binding", "eviction") else ["get", "patch", "update"]
            entries.append(
                {
                    "name": f"{r.plural}/{sub}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": kind,
                    "verbs": verbs,
                }
            )
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": entries}


async def _discovery(request: web.Request) -> web.Response:
    parts = [p for p in request.path.split("/") if p]
    if parts == ["version"]:
        return _json(
            {
                "major": "1",
                "minor": "35",
                "gitVersion": "v1.35.0-epcsched-fake",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.25",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )
    if parts == ["api"]:
        return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
    if parts == ["api", "v1"]:
        return _json(_resource_list("", "v1"))
    if parts == ["apis"]:
        groups: dict[str, str] = {}
        for r in RESOURCES:
            if r.group:
                groups.setdefault(r.group, r.version)
        return _json(
            {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                        "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                    }
                    for g, v in sorted(groups.items())
                ],
            }
        )
    if len(parts) == 3 and parts[0] == "apis":
        listing = _resource_list(parts[1], parts[2])
        if listing["resources"]:
            return _json(listing)
    return _error(
        ApiError(404, f"the server could not find the requested resource ({request.path})")
    )


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


# ----- fault endpoints -------------------------------------------------------------------
async def _fault_endpoint(request: web.Request) -> web.Response:
    faults = request.app[FAULTS]
    action = request.match_info["action"]
    try:
        body = await request.json() if request.can_read_body else {}
    except (ValueError, RecursionError):
        return _error(ApiError(400, "fault request body is not valid JSON"))
    if not isinstance(body, dict):
        return _error(ApiError(400, "fault request body must be an object"))
    try:
        if action == "fail":
            code = body.get("code")
            count = body.get("count", 1)
            if not isinstance(code, int) or not 400 <= code <= 599:
                raise ApiError(400, "code: must be an HTTP error status 400..599")
            if not isinstance(count, int) or count < 1:
                raise ApiError(400, "count: must be a positive integer")
            watch = body.get("watch")
            if watch is not None and not isinstance(watch, bool):
                raise ApiError(400, "watch: must be true, false or null")
            faults.fail_next(
                code,
                count,
                path=str(body.get("path", "")),
                method=str(body.get("method", "")),
                watch=watch,
            )
        elif action == "delay":
            seconds = body.get("seconds")
            count = body.get("count")
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                raise ApiError(400, "seconds: must be a non-negative number")
            if count is not None and (not isinstance(count, int) or count < 0):
                raise ApiError(400, "count: must be a non-negative integer or null")
            faults.delay_next(float(seconds), count)
        elif action == "drop-watches":
            return _json({"dropped": faults.drop_watches(abort=bool(body.get("abort", True)))})
        elif action == "drop-watch-after":
            events = body.get("events")
            if events is not None and (not isinstance(events, int) or events < 1):
                raise ApiError(400, "events: must be a positive integer or null")
            faults.drop_watch_after = events
        elif action == "compact":
            request.app[STORE].compact()
        elif action == "clear":
            faults.clear()
        else:
            raise ApiError(404, f"unknown fault action {action!r}")
    except ApiError as exc:
        return _error(exc)
    return _json({"ok": True})


async def _fault_stats(request: web.Request) -> web.Response:
    faults = request.app[FAULTS]
    store = request.app[STORE]
    return _json(
        {
            "requests": faults.requests,
            "byVerb": faults.by_verb,
            "injected": faults.injected,
            "resourceVersion": store.rv,
            "compacted": store.compacted,
            "watches": sum(1 for _ in store.all_subscriptions()),
        }
    )


@web.middleware
async def _no_tracebacks(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own 404/405 become Status bodies, as every API error is.
        return _error(ApiError(exc.status, f"{exc.reason}: {request.method} {request.path}"))
    except ApiError as exc:
        return _error(exc)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:  # a bug in the fake must still answer like an API server
        log.exception("fake API server failed on %s %s", request.method, request.path)
        return _error(ApiError(500, f"internal error: {type(exc).__name__}: {exc}"))


def create_app(
    store: Store | None = None,
    *,
    faults: Faults | None = None,
    settings: ServerSettings | None = None,
    access: AccessPolicy | None = None,
) -> web.Application:
    """Build the fake API server; `store`, `faults` and `access` stay reachable for the test."""
    app = web.Application(middlewares=[_no_tracebacks], client_max_size=64 * 2**20)
    app[STORE] = store or Store()
    app[FAULTS] = faults or Faults()
    app[FAULTS].store = app[STORE]
    app[SETTINGS] = settings or ServerSettings()
    app[ACCESS] = access or AccessPolicy()
    app[PAGES] = _Pages()
    for path in ("/version", "/api", "/api/v1", "/apis", "/apis/{group}/{version}"):
        # Clients ask for discovery documents with and without a trailing slash.
        app.router.add_get(path, _discovery)
        app.router.add_get(path + "/", _discovery)
    for path in ("/healthz", "/readyz", "/livez"):
        app.router.add_get(path, _health)
    app.router.add_post("/_fake/{action}", _fault_endpoint)
    app.router.add_get("/_fake/stats", _fault_stats)
    app.router.add_route("*", "/api/{tail:.+}", _serve)
    app.router.add_route("*", "/apis/{tail:.+}", _serve)
    app.on_shutdown.append(_end_watches)
    return app


async def _end_watches(app: web.Application) -> None:
    # Open watches would otherwise hold shutdown until their timeout.
    app[FAULTS].drop_watches(abort=False)


# ----- running it ------------------------------------------------------------------------
def kubeconfig(url: str, token: str | None, *, namespace: str = "default") -> Obj:
    """A kubeconfig that kubernetes-asyncio (and kubectl) can load to reach `url`."""
    user: Obj = {"token": token} if token else {}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "epcsched-fake", "cluster": {"server": url}}],
        "users": [{"name": "epcsched-fake", "user": user}],
        "contexts": [
            {
                "name": "epcsched-fake",
                "context": {
                    "cluster": "epcsched-fake",
                    "user": "epcsched-fake",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "epcsched-fake",
    }


class FakeApiServer:
    """The fake API server on a loopback port, for tests and the demo.

    `store` and `faults` are the live objects the server uses: a test seeds objects through the
    store and injects failures through `faults`, while the code under test uses HTTP.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        history: int = 10_000,
        bookmark_interval: float = 1.0,
        watch_timeout: float = 1800.0,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token if token is not None else secrets.token_hex(16)
        self.store = Store(history=history)
        self.faults = Faults()
        self.access = AccessPolicy()
        """Tokens and grants that TokenReviews and SubjectAccessReviews are answered from."""
        self.settings = ServerSettings(
            token=self.token, bookmark_interval=bookmark_interval, watch_timeout=watch_timeout
        )
        self.app = create_app(
            self.store, faults=self.faults, settings=self.settings, access=self.access
        )
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FakeApiServer:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeApiServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def kubeconfig(self) -> Obj:
        return kubeconfig(self.url, self.token)

    def write_kubeconfig(self, path: str | Path) -> Path:
        target = Path(path)
        target.write_text(yaml.safe_dump(self.kubeconfig(), sort_keys=False))
        target.chmod(0o600)
        return target

    def load(self, path: str | Path) -> int:
        """Load every known object in a JSON/YAML file (a List, a list, or documents)."""
        return self.store.load_many(read_objects(path))


def read_objects(path: str | Path) -> list[Obj]:
    """Objects in a `kubectl get -o json|yaml` file: a List, a bare list, or YAML documents."""
    text = Path(path).read_text()
    documents = [d for d in yaml.safe_load_all(text) if d is not None]
    objects: list[Obj] = []
    for doc in documents:
        if isinstance(doc, list):
            objects.extend(o for o in doc if isinstance(o, dict))
        elif isinstance(doc, dict) and isinstance(doc.get("items"), list):
            objects.extend(o for o in doc["items"] if isinstance(o, dict))
        elif isinstance(doc, dict):
            objects.append(doc)
    return objects


@contextlib.asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[FakeApiServer]:
    """`async with running() as api:` a started server, stopped on exit."""
    server = FakeApiServer(**kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m epcsched.testing.apiserver",
        description="Fake kube-apiserver for epcsched tests and demos (not for production).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--load",
        action="append",
        default=[],
        metavar="FILE",
        help="objects to start with (kubectl JSON/YAML); repeatable",
    )
    parser.add_argument(
        "--kubeconfig-out", metavar="FILE", help="write a kubeconfig for this server here"
    )
    parser.add_argument("--token", help="bearer token to require (default: random)")
    parser.add_argument("--bookmark-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def serve() -> None:
        server = FakeApiServer(
            host=args.host,
            port=args.port,
            token=args.token,
            bookmark_interval=args.bookmark_interval,
        )
        for path in args.load:
            count = server.load(path)
            log.info("loaded %d objects from %s", count, path)
        await server.start()
        if args.kubeconfig_out:
            server.write_kubeconfig(args.kubeconfig_out)
        print(f"fake API server on {server.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        return 0
    except (OSError, ApiError, yaml.YAMLError) as exc:
        print(f"apiserver: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["BY_KIND", "FakeApiServer", "Faults", "Store", "create_app", "kubeconfig", "running"]
