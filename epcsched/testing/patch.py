"""The three PATCH formats kube-apiserver accepts, applied to plain JSON objects.

kubernetes-asyncio sends a dict body as a strategic merge patch and a list body as a JSON patch;
CustomObjectsApi sends merge patches. The fake API server applies each as Kubernetes would for the
fields epcsched touches (labels, annotations, `spec.unschedulable`, taints, conditions, replicas).
Strategic merge knows the merge keys of the lists those objects carry; any other list is replaced,
which is also what Kubernetes does for lists without a merge key. Failures are `PatchError`
(answered with 422 or 400, never 500).
"""

from __future__ import annotations

import copy
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

#: Lists merged item by item under strategic merge, by the field that identifies an item.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "conditions": "type",
    "ownerReferences": "uid",
    "addresses": "type",
}
"""Node taints, pod tolerations and container statuses have no patch strategy in the API
types (`+listType=atomic`): a strategic merge patch replaces them whole, which is why
`kubectl taint` sends the node's full list."""


class PatchError(ValueError):
    """A patch that cannot be applied; the message says why."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, `null` deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    """Kubernetes strategic merge for the objects epcsched patches.

    Maps merge as in a merge patch (with `$patch: replace|delete` honoured); lists named in
    `MERGE_KEYS` merge by key (an item `{"$patch": "delete", key: ...}` removes one); other lists
    are replaced.
    """
    if isinstance(patch, dict):
        directive = patch.get("$patch")
        if directive == "delete":
            return None
        body = {k: v for k, v in patch.items() if k != "$patch"}
        if directive == "replace":
            return copy.deepcopy(body)
        if directive is not None:
            raise PatchError(f"{field or 'patch'}: unknown $patch directive {directive!r}")
        result = dict(target) if isinstance(target, dict) else {}
        for key, value in body.items():
            if key.startswith("$setElementOrder/") or key.startswith("$deleteFromPrimitiveList/"):
                continue
            if value is None:
                result.pop(key, None)
                continue
            merged = strategic_merge_patch(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        return result
    if isinstance(patch, list) and field in MERGE_KEYS and isinstance(target, list):
        return _merge_list(target, patch, MERGE_KEYS[field], field)
    return copy.deepcopy(patch)


def _merge_list(target: list[Any], patch: list[Any], key: str, field: str) -> list[Any]:
    result = [copy.deepcopy(item) for item in target]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"{field}: every item of a strategic merge list needs {key!r}")
        index = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, dict) and old.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append(strategic_merge_patch(None, item, field))
        else:
            result[index] = strategic_merge_patch(result[index], item, field)
    return result


def _pointer(path: object) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer {path!r}")
    if path == "":
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise PatchError(f"path {path!r} does not exist")
    return node


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 `add`, `remove`, `replace` and `test`."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for i, op in enumerate(operations):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise PatchError(f"operation {i}: must be an object with 'op'")
        path = op.get("path")
        parts = _pointer(path)
        kind = op["op"]
        if kind not in ("add", "remove", "replace", "test"):
            raise PatchError(f"operation {i}: unsupported op {kind!r}")
        if kind != "remove" and "value" not in op:
            raise PatchError(f"operation {i}: {kind} needs a value")
        if not parts:
            if kind in ("add", "replace"):
                doc = copy.deepcopy(op["value"])
                continue
            raise PatchError(f"operation {i}: cannot {kind} the whole document")
        parent = _parent(doc, parts, str(path))
        last = parts[-1]
        if isinstance(parent, dict):
            exists = last in parent
            if kind == "test":
                if not exists or parent[last] != op["value"]:
                    raise PatchError(f"operation {i}: test failed at {path}")
            elif kind == "add":
                parent[last] = copy.deepcopy(op["value"])
            elif not exists:
                raise PatchError(f"operation {i}: path {path!r} does not exist")
            elif kind == "remove":
                del parent[last]
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif isinstance(parent, list):
            if last == "-" and kind == "add":
                parent.append(copy.deepcopy(op["value"]))
                continue
            if not last.isdigit():
                raise PatchError(f"operation {i}: {last!r} is not a list index")
            index = int(last)
            limit = len(parent) + (1 if kind == "add" else 0)
            if index >= limit:
                raise PatchError(f"operation {i}: index {index} out of range at {path}")
            if kind == "add":
                parent.insert(index, copy.deepcopy(op["value"]))
            elif kind == "remove":
                del parent[index]
            elif kind == "replace":
                parent[index] = copy.deepcopy(op["value"])
            elif parent[index] != op["value"]:
                raise PatchError(f"operation {i}: test failed at {path}")
        else:
            raise PatchError(f"operation {i}: path {path!r} does not exist")
    return doc


def apply_patch(content_type: str, target: Any, patch: Any) -> Any:
    """Apply `patch` of the given media type to a copy of `target`."""
    media = content_type.split(";")[0].strip().lower()
    if media == MERGE_PATCH:
        return merge_patch(target, patch)
    if media == STRATEGIC_MERGE_PATCH:
        if not isinstance(patch, dict):
            raise PatchError("a strategic merge patch must be a JSON object")
        return strategic_merge_patch(target, patch)
    if media == JSON_PATCH:
        return json_patch(target, patch)
    raise PatchError(f"unsupported patch type {content_type!r}")
