"""What a node's kernel tells about its EPC, read from files under a root directory.

Kernels differ in what they expose, so every source is optional and read on its own:

- mainline kernels: total EPC per NUMA node in
  `sys/devices/system/node/node*/x86/sgx_total_bytes`;
- Intel's out-of-tree `isgx` driver, patched to publish its counters as module parameters under
  `sys/module/isgx/parameters/` (`sgx_nr_total_epc_pages`, `sgx_nr_free_pages`,
  `sgx_nr_evicted`, `sgx_loaded_back`, ...), counted in 4 KiB pages;
- the proposed SGX EPC misc cgroup controller: `sgx_epc <bytes>` lines in `misc.capacity` at the
  cgroup root and in `misc.current` of each cgroup, so kubelet's pod cgroups show what each pod
  holds, and `sgx_epc.max <count>` in each cgroup's `misc.events`: how often a charge was refused
  because it would have gone over the cgroup's `misc.max` (the enclave wanted more than its limit).

The root is a parameter because the exporter runs in a DaemonSet pod that sees the host's `/sys`
mounted wherever the manifest puts it, and because tests build these trees as plain files. A
value that cannot be read or parsed is left out (None, or missing from a map): a made-up zero
would tell the scheduler a node has no EPC in use when the truth is that nobody knows.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("epcsched.exporter")

EPC_PAGE_BYTES = 4096
"""SGX EPC pages are always 4 KiB, whatever the kernel's page size."""

MISC_RESOURCE = "sgx_epc"
"""The misc cgroup resource name of the SGX EPC controller."""

# kubelet names pod cgroups `pod<uid>` with the cgroupfs driver and
# `kubepods[-<qos>]-pod<uid with _ for ->.slice` with the systemd driver; Guaranteed pods sit
# directly under kubepods, Burstable and BestEffort ones one level down.
_SYSTEMD_POD = re.compile(r"^kubepods(?:-burstable|-besteffort)?-pod([0-9a-fA-F_-]+)\.slice$")
_CGROUPFS_POD = re.compile(r"^pod([0-9a-fA-F-]+)$")
_POD_PARENTS = (
    ("kubepods.slice", _SYSTEMD_POD),
    ("kubepods.slice/kubepods-burstable.slice", _SYSTEMD_POD),
    ("kubepods.slice/kubepods-besteffort.slice", _SYSTEMD_POD),
    ("kubepods", _CGROUPFS_POD),
    ("kubepods/burstable", _CGROUPFS_POD),
    ("kubepods/besteffort", _CGROUPFS_POD),
)


@dataclass(frozen=True, slots=True)
class EpcReading:
    """One read of every EPC figure the kernel offers; None where it offers nothing readable."""

    capacity: int | None = None
    """Total EPC of the node in bytes."""
    free: int | None = None
    """EPC not held by any enclave, in bytes."""
    evicted_pages: int | None = None
    """EPC pages written out to normal memory since boot (the driver's `sgx_nr_evicted`)."""
    loaded_back_pages: int | None = None
    """EPC pages read back in since boot (the driver's `sgx_loaded_back`)."""
    pods: dict[str, int] = field(default_factory=dict)
    """EPC charged to each pod's cgroup in bytes, by pod UID."""
    pod_max_events: dict[str, int] = field(default_factory=dict)
    """Times each pod's cgroup was refused EPC over its `misc.max` (`misc.events`), by pod UID."""
    sources: tuple[str, ...] = ()
    """Which kernel interfaces answered: `numa`, `isgx`, `misc`."""


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        log.debug("ignoring %s: not an integer: %r", path, text[:40])
        return None
    return value if value >= 0 else None


def _read_misc(path: Path, key: str = MISC_RESOURCE) -> int | None:
    """The `key` value (`sgx_epc` by default) of a flat-keyed misc cgroup file, or None."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            try:
                value = int(parts[1])
            except ValueError:
                return None
            return value if value >= 0 else None
    return None


def _numa_total(root: Path) -> int | None:
    nodes = root / "sys/devices/system/node"
    values = [_read_int(p) for p in sorted(nodes.glob("node[0-9]*/x86/sgx_total_bytes"))]
    known = [v for v in values if v is not None]
    # A partial sum would understate capacity; better to say nothing.
    if not known or len(known) != len(values):
        return None
    return sum(known)


def _misc_root(root: Path) -> Path | None:
    """The misc controller's root: the unified hierarchy (v2) or its own v1 mount."""
    for candidate in (root / "sys/fs/cgroup", root / "sys/fs/cgroup/misc"):
        if (candidate / "misc.capacity").is_file():
            return candidate
    return None


def _pod_usage(base: Path) -> tuple[dict[str, int], dict[str, int]]:
    """EPC held and `max` events of each pod cgroup under `base`, by pod UID."""
    pods: dict[str, int] = {}
    events: dict[str, int] = {}
    for parent, pattern in _POD_PARENTS:
        try:
            entries = list((base / parent).iterdir())
        except OSError:
            continue
        for entry in entries:
            match = pattern.match(entry.name)
            if match is None:
                continue
            # Pods come and go between the listing and the read; a vanished one is skipped.
            uid = match[1].replace("_", "-")
            value = _read_misc(entry / "misc.current")
            if value is not None:
                pods[uid] = value
            # Hierarchical count (it includes the pod's containers), only on kernels that
            # have misc.events; absent there means unknown, not zero.
            hits = _read_misc(entry / "misc.events", f"{MISC_RESOURCE}.max")
            if hits is not None:
                events[uid] = hits
    return pods, events


def read_epc(root: Path) -> EpcReading:
    """Read every EPC figure available under `root` (`/` on a node, a tmp dir in tests)."""
    sources: list[str] = []
    numa_total = _numa_total(root)
    if numa_total is not None:
        sources.append("numa")

    params = root / "sys/module/isgx/parameters"
    driver_total = _read_int(params / "sgx_nr_total_epc_pages")
    driver_free = _read_int(params / "sgx_nr_free_pages")
    evicted = _read_int(params / "sgx_nr_evicted")
    loaded_back = _read_int(params / "sgx_loaded_back")
    if any(v is not None for v in (driver_total, driver_free, evicted, loaded_back)):
        sources.append("isgx")

    misc_capacity: int | None = None
    misc_used: int | None = None
    pods: dict[str, int] = {}
    pod_events: dict[str, int] = {}
    base = _misc_root(root)
    if base is not None:
        misc_capacity = _read_misc(base / "misc.capacity")
        # Only newer kernels show misc.current in the root cgroup; without it the node-wide
        # figure is unknown (pods' cgroups do not cover aesmd or other host enclaves).
        misc_used = _read_misc(base / "misc.current")
        pods, pod_events = _pod_usage(base)
        if misc_capacity is not None or pods:
            sources.append("misc")

    # The sources measure the same EPC; prefer the kernel's own total, then the driver's.
    capacity = numa_total
    if capacity is None and driver_total is not None:
        capacity = driver_total * EPC_PAGE_BYTES
    if capacity is None:
        capacity = misc_capacity

    free: int | None = None
    if driver_free is not None:
        free = driver_free * EPC_PAGE_BYTES
    elif misc_capacity is not None and misc_used is not None:
        free = max(misc_capacity - misc_used, 0)

    return EpcReading(
        capacity=capacity,
        free=free,
        evicted_pages=evicted,
        loaded_back_pages=loaded_back,
        pods=pods,
        pod_max_events=pod_events,
        sources=tuple(sources),
    )
