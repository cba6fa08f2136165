"""Scenario files: node pools, a workload, autoscaler settings and the policies to compare.

A scenario uses the keys of the one configuration file (`autoscaler.nodePools` entries and the
`autoscaler` section) plus a few of its own (`sku`, `initialSize`, `provisionDelay`), and is
validated by the same `build` so that every error names the file and the key path.

A scenario whose workload is a Deployment (`simulation/deployment.py`) compares the Deployment's
scalers instead of placement policies: it names one placement policy (default `binpack`), and
its runs are named after the scalers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from epcsched.config import (
    AutoscalerSettings,
    ConfigError,
    NodePoolSettings,
    build,
    parse_duration,
    parse_headroom,
)
from epcsched.core.snapshot import Headroom
from epcsched.model import NodeInfo
from epcsched.objects import template_node
from epcsched.quantity import DEFAULT_EPC_RESOURCES
from epcsched.simulation.deployment import DeploymentSpec
from epcsched.simulation.workload import WorkloadSpec, parse_workload
from epcsched.skus import lookup
from epcsched.yamlfile import FileFormatError, load_document

#: epcsched's scoring strategies, then the baselines they are compared with.
POLICIES = ("binpack", "spread", "balanced", "kube-default", "epc-unaware", "cluster-autoscaler")
EPCSCHED_POLICIES = ("binpack", "spread", "balanced")
_TOP_KEYS = (
    "name",
    "seed",
    "horizon",
    "epcResource",
    "headroom",
    "nodePools",
    "workload",
    "autoscaler",
    "policies",
    "pagingModel",
    "sweep",
    "description",
)


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """One node pool of the simulated cluster."""

    settings: NodePoolSettings
    template: NodeInfo
    """One node of the pool (its name is replaced per node)."""
    initial_size: int
    sku: str | None = None


@dataclass(frozen=True, slots=True)
class PagingModel:
    """How much enclaves slow down on a node whose enclaves need more EPC than it has.

    With `demand / capacity = r > 1`, every enclave on the node runs `min(max_slowdown,
    1 + slowdown_per_overcommit * (r - 1))` times slower: at 50% over, the default gives 5x, the
    average reported for EPC paging (Azure FAQ; VAULT, ASPLOS 2018), capped at the 100x worst case.
    """

    slowdown_per_overcommit: float = 8.0
    """Extra slowdown per unit of overcommit: at `r = 1.5` the default runs 5x slower."""
    max_slowdown: float = 100.0
    """The worst slowdown, however far the node is overcommitted."""

    def slowdown(self, demand: int, capacity: int) -> float:
        if demand <= capacity:
            return 1.0
        if capacity <= 0:
            return self.max_slowdown
        over = (demand - capacity) / capacity
        return min(self.max_slowdown, 1.0 + self.slowdown_per_overcommit * over)


@dataclass(frozen=True, slots=True)
class Variant:
    """One point of a sweep: a seed and pool sizes."""

    seed: int
    initial_sizes: tuple[tuple[str, int], ...] = ()

    def label(self) -> str:
        sizes = ",".join(f"{pool}={size}" for pool, size in self.initial_sizes)
        return f"seed={self.seed}" + (f" {sizes}" if sizes else "")


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario file."""

    name: str
    seed: int
    """Seed of the synthetic workload (a trace ignores it)."""
    horizon: float
    """Simulated seconds; pods still running then are counted as running."""
    pools: tuple[PoolSpec, ...]
    workload: WorkloadSpec
    policies: tuple[str, ...]
    autoscaler: AutoscalerSettings | None = None
    """None when the scenario turns autoscaling off."""
    provision_delay: float = 180.0
    """Seconds from asking for a node to its being Ready."""
    epc_resource: str = "sgx.intel.com/epc"
    """The EPC resource name the nodes advertise and the pods request."""
    headroom: Headroom = field(default_factory=Headroom)
    """EPC kept free on every node, as `epc.headroom` in the configuration."""
    paging: PagingModel = field(default_factory=PagingModel)
    sweep: tuple[Variant, ...] = ()
    """Extra variants beyond the base one (empty: no sweep)."""
    description: str = ""
    source: str = ""

    @property
    def epc_resources(self) -> dict[str, int]:
        resources = dict(DEFAULT_EPC_RESOURCES)
        resources.setdefault(self.epc_resource, 1)
        return resources

    @property
    def deployment(self) -> DeploymentSpec | None:
        """The Deployment this scenario scales, if its workload is one."""
        return self.workload if isinstance(self.workload, DeploymentSpec) else None

    @property
    def runs(self) -> tuple[str, ...]:
        """What the scenario compares: its policies, or its Deployment's scalers."""
        if self.deployment is not None:
            return tuple(s.name for s in self.deployment.scalers)
        return self.policies

    def variant(self, variant: Variant) -> Scenario:
        """This scenario with a sweep point's seed and pool sizes."""
        sizes = dict(variant.initial_sizes)
        pools = tuple(
            replace(p, initial_size=sizes.get(p.settings.name, p.initial_size)) for p in self.pools
        )
        return replace(self, seed=variant.seed, pools=pools)


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _int(value: object, where: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(where, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _duration(value: object, where: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _fail(where, str(exc)) from None


def _pool(data: object, where: str, epc_resource: str, units: dict[str, int]) -> PoolSpec:
    if not isinstance(data, dict):
        raise _fail(where, "must be a map")
    rest = dict(data)
    sku = rest.pop("sku", None)
    initial = rest.pop("initialSize", None)
    settings = build(NodePoolSettings, rest, where)
    if not settings.name:
        raise _fail(f"{where}.name", "required")
    if settings.min_size < 0:
        raise _fail(f"{where}.minSize", "must be >= 0")
    if settings.max_size < settings.min_size:
        raise _fail(f"{where}.maxSize", "must be >= minSize")
    if settings.cost_per_hour < 0:
        raise _fail(f"{where}.costPerHour", "must be >= 0")
    labels = {"agentpool": settings.name}
    if sku is not None:
        if settings.template is not None:
            raise _fail(f"{where}.sku", "give either sku or template, not both")
        if not isinstance(sku, str):
            raise _fail(f"{where}.sku", f"must be a string, got {sku!r}")
        try:
            size = lookup(sku)
        except KeyError as exc:
            raise _fail(f"{where}.sku", str(exc.args[0])) from None
        resources = size.resources(epc_resource, units[epc_resource])
        labels.update(settings.node_selector)
        taints: list[dict[str, str]] = []
    elif settings.template is not None:
        resources = settings.template.resources
        labels.update(settings.template.labels)
        taints = settings.template.taints
    else:
        raise _fail(where, "needs sku or template")
    try:
        template = template_node(
            f"{settings.name}-template", resources, units, labels=labels, taints=taints
        )
    except ValueError as exc:
        raise _fail(f"{where}.template", str(exc)) from None
    if initial is None:
        initial_size = settings.min_size
    else:
        initial_size = _int(initial, f"{where}.initialSize")
        if not settings.min_size <= initial_size <= settings.max_size:
            raise _fail(f"{where}.initialSize", "must be between minSize and maxSize")
    return PoolSpec(settings=settings, template=template, initial_size=initial_size, sku=sku)


def _autoscaler(data: object) -> tuple[AutoscalerSettings | None, float]:
    if data is None:
        return None, 180.0
    if not isinstance(data, dict):
        raise _fail("autoscaler", "must be a map")
    rest = dict(data)
    delay = _duration(rest.pop("provisionDelay", "3m"), "autoscaler.provisionDelay")
    if "nodePools" in rest:
        raise _fail("autoscaler.nodePools", "scenarios list pools at the top level (nodePools)")
    settings = build(AutoscalerSettings, rest, "autoscaler")
    if settings.interval <= 0:
        raise _fail("autoscaler.interval", "must be positive")
    return (settings if settings.enabled else None), delay


def _policies(data: object, autoscaling: bool) -> tuple[str, ...]:
    if data is None:
        default = [p for p in POLICIES if autoscaling or p != "cluster-autoscaler"]
        return tuple(default)
    if not isinstance(data, list) or not data:
        raise _fail("policies", "must be a non-empty list")
    for i, name in enumerate(data):
        if name not in POLICIES:
            raise _fail(f"policies[{i}]", f"unknown policy {name!r} (known: {', '.join(POLICIES)})")
        if name == "cluster-autoscaler" and not autoscaling:
            raise _fail(f"policies[{i}]", "cluster-autoscaler needs the autoscaler enabled")
    if len(set(data)) != len(data):
        raise _fail("policies", "lists a policy twice")
    return tuple(data)


def _paging(data: object) -> PagingModel:
    if data is None:
        return PagingModel()
    if not isinstance(data, dict):
        raise _fail("pagingModel", "must be a map")
    values: dict[str, float] = {}
    for key, attr in (
        ("slowdownPerOvercommit", "slowdown_per_overcommit"),
        ("maxSlowdown", "max_slowdown"),
    ):
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise _fail(f"pagingModel.{key}", f"must be a non-negative number, got {value!r}")
            values[attr] = float(value)
    unknown = set(data) - {"slowdownPerOvercommit", "maxSlowdown"}
    if unknown:
        raise _fail(f"pagingModel.{sorted(unknown)[0]}", "unknown key")
    model = PagingModel(**values)
    if model.max_slowdown < 1:
        raise _fail("pagingModel.maxSlowdown", "must be >= 1")
    return model


def _sweep(data: object, seed: int, pools: tuple[PoolSpec, ...]) -> tuple[Variant, ...]:
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise _fail("sweep", "must be a map with seeds and/or initialSize")
    unknown = set(data) - {"seeds", "initialSize"}
    if unknown:
        raise _fail(f"sweep.{sorted(unknown)[0]}", "unknown key (known: initialSize, seeds)")
    seeds_raw = data.get("seeds", [seed])
    if not isinstance(seeds_raw, list) or not seeds_raw:
        raise _fail("sweep.seeds", "must be a non-empty list of integers")
    seeds = [_int(s, f"sweep.seeds[{i}]") for i, s in enumerate(seeds_raw)]
    sizes_raw = data.get("initialSize", {})
    if not isinstance(sizes_raw, dict):
        raise _fail("sweep.initialSize", "must map pool names to lists of sizes")
    by_name = {p.settings.name: p for p in pools}
    axes: list[list[tuple[str, int]]] = []
    for pool_name, values in sizes_raw.items():
        where = f"sweep.initialSize.{pool_name}"
        pool = by_name.get(str(pool_name))
        if pool is None:
            raise _fail(where, "no such pool")
        if not isinstance(values, list) or not values:
            raise _fail(where, "must be a non-empty list of sizes")
        axis = []
        for i, value in enumerate(values):
            size = _int(value, f"{where}[{i}]")
            if not pool.settings.min_size <= size <= pool.settings.max_size:
                raise _fail(f"{where}[{i}]", "must be between minSize and maxSize")
            axis.append((str(pool_name), size))
        axes.append(axis)
    variants = [Variant(s, tuple(combo)) for s in seeds for combo in itertools.product(*axes)]
    return tuple(variants)


def parse_scenario(data: object, *, base: Path, source: str = "") -> Scenario:
    """Validate parsed YAML; `base` is the directory that relative paths start from."""
    try:
        return _parse(data, base)
    except ConfigError as exc:
        # A key or value may hold line breaks; the error stays on one line whatever they are.
        message = " ".join(str(exc).split())
        raise ConfigError(f"{source}: {message}" if source else message) from None


def _parse(data: object, base: Path) -> Scenario:
    if not isinstance(data, dict):
        raise _fail("(top level)", "must be a map")
    for key in data:
        if key not in _TOP_KEYS:
            raise _fail(str(key), f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise _fail("name", "required, a string")
    seed = _int(data.get("seed", 0), "seed")
    if "horizon" not in data:
        raise _fail("horizon", "required, e.g. 2h")
    horizon = _duration(data["horizon"], "horizon")
    if horizon <= 0:
        raise _fail("horizon", "must be positive")
    epc_resource = data.get("epcResource", "sgx.intel.com/epc")
    if not isinstance(epc_resource, str) or not epc_resource:
        raise _fail("epcResource", "must be a resource name")
    headroom = Headroom()
    if "headroom" in data:
        try:
            headroom = parse_headroom(data["headroom"])
        except ValueError as exc:
            raise _fail("headroom", str(exc)) from None
    units = dict(DEFAULT_EPC_RESOURCES)
    units.setdefault(epc_resource, 1)
    raw_pools = data.get("nodePools")
    if not isinstance(raw_pools, list) or not raw_pools:
        raise _fail("nodePools", "must be a non-empty list")
    pools = tuple(_pool(p, f"nodePools[{i}]", epc_resource, units) for i, p in enumerate(raw_pools))
    names = [p.settings.name for p in pools]
    for i, pool_name in enumerate(names):
        if names.index(pool_name) != i:
            raise _fail(f"nodePools[{i}].name", f"duplicate pool name {pool_name!r}")
    autoscaler, delay = _autoscaler(data.get("autoscaler"))
    workload = parse_workload(data.get("workload"), base=base, where="workload")
    if isinstance(workload, DeploymentSpec):
        policies = _policies(data.get("policies", ["binpack"]), autoscaler is not None)
        if len(policies) != 1:
            raise _fail("policies", "a deployment workload compares its scalers: name one policy")
    else:
        policies = _policies(data.get("policies"), autoscaler is not None)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _fail("description", "must be a string")
    return Scenario(
        name=name,
        seed=seed,
        horizon=horizon,
        pools=pools,
        workload=workload,
        policies=policies,
        autoscaler=autoscaler,
        provision_delay=delay,
        epc_resource=epc_resource,
        headroom=headroom,
        paging=_paging(data.get("pagingModel")),
        sweep=_sweep(data.get("sweep"), seed, pools),
        description=description,
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; errors start with the file name."""
    file = Path(path)
    try:
        data: Any = load_document(file)
    except FileFormatError as exc:
        raise ConfigError(str(exc)) from None
    scenario = parse_scenario(data, base=file.parent, source=str(file))
    return replace(scenario, source=str(file))
