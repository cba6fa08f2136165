"""Cluster state from files: what `kubectl get nodes,pods -A -o json` prints (JSON or YAML).

Used by `epcsched extender --snapshot` and `epcsched explain`, and by tests and benchmarks to
build a cluster without an API server.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from epcsched.config import Config
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.objects import Node, ObjectError, Pod, node_info, pod_info
from epcsched.yamlfile import FileFormatError, load_documents


class SnapshotError(ValueError):
    """A snapshot file epcsched cannot use; the message names the file and the field."""


def _documents(path: Path) -> list[Any]:
    try:
        return load_documents(path)
    except FileFormatError as exc:
        raise SnapshotError(str(exc)) from None


def _items(path: Path, documents: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    for d, doc in enumerate(documents):
        if isinstance(doc, list):
            items: Any = doc
            prefix = "" if d == 0 else f"document {d}: "
        elif isinstance(doc, dict) and "items" in doc:
            items = doc["items"]
            prefix = "" if d == 0 else f"document {d}: "
        elif isinstance(doc, dict):
            items = [doc]
            prefix = f"document {d}: " if d else ""
        else:
            raise SnapshotError(f"{path}: document {d}: expected a List, a Node or a Pod")
        if not isinstance(items, list):
            raise SnapshotError(f"{path}: {prefix}items: must be a list")
        for i, item in enumerate(items):
            yield f"{prefix}items[{i}]", item


def load_snapshot(
    paths: Iterable[str | Path], config: Config, *, snapshot: ClusterSnapshot | None = None
) -> ClusterSnapshot:
    """Read every file into one snapshot; later files replace objects of the same name."""
    snap = snapshot or ClusterSnapshot(
        config.epc.resources, headroom=config.epc.headroom, accounting=config.accounting
    )
    for raw_path in paths:
        path = Path(raw_path)
        for where, item in _items(path, _documents(path)):
            if not isinstance(item, dict):
                raise SnapshotError(f"{path}: {where}: must be an object")
            kind = item.get("kind")
            try:
                if kind == "Node":
                    snap.upsert_node(node_info(msgspec.convert(item, Node), config.epc.resources))
                elif kind == "Pod":
                    pod = pod_info(msgspec.convert(item, Pod), config.epc.resources)
                    if not pod.name:
                        raise ObjectError("metadata.name: a pod needs a name")
                    snap.upsert_pod(pod)
                else:
                    # Other kinds (Services, Events...) are harmless in a dump; skip them.
                    continue
            except msgspec.ValidationError as exc:
                raise SnapshotError(f"{path}: {where} ({kind}): {exc}") from None
            except ObjectError as exc:
                name = (
                    item.get("metadata", {}).get("name")
                    if isinstance(item.get("metadata"), dict)
                    else None
                )
                raise SnapshotError(f"{path}: {where} ({kind} {name}): {exc}") from None
    return snap
