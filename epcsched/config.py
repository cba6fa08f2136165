"""One YAML configuration for every epcsched program, validated with the key path in each error.

Settings are dataclasses with a default and a docstring per field; YAML keys are the camelCase
forms of the field names (`max_body_bytes` is `maxBodyBytes`). `load_config` builds them once and
the programs pass them down; nothing reads configuration from globals.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from epcsched.core.snapshot import ACCOUNTING_MODES, Headroom
from epcsched.quantity import DEFAULT_EPC_RESOURCES, QuantityError, parse_int, parse_quantity
from epcsched.yamlfile import FileFormatError, load_document

T = typing.TypeVar("T")

STRATEGIES = ("binpack", "spread", "balanced")
EXPANDERS = ("least-waste", "cheapest", "priority")
PROVIDERS = ("clusterapi", "aks", "simulated")


class ConfigError(ValueError):
    """Invalid configuration; the message starts with the key path (and file, when known)."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds in a duration such as `30s`, `10m`, `1h30m` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: negative")
        return float(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"invalid duration {value!r}: expected e.g. 30s, 10m, 1h30m")
    text = value.strip()
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match[1]) * _DURATION_UNITS[match[2]]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid duration {value!r}: expected e.g. 30s, 10m, 1h30m")
    return total


def parse_headroom(value: object) -> Headroom:
    """`0.2` or `"20%"` keeps a share of each node's EPC free; `"16Mi"` keeps bytes free."""
    if isinstance(value, Headroom):
        return value
    if isinstance(value, bool):
        raise ValueError(f"invalid headroom {value!r}")
    if isinstance(value, int | float):
        fraction = Fraction(repr(value)) if isinstance(value, float) else Fraction(value)
    elif isinstance(value, str) and value.strip().endswith("%"):
        try:
            fraction = Fraction(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"invalid headroom {value!r}") from None
    elif isinstance(value, str):
        try:
            amount = parse_int(value)
        except QuantityError as exc:
            raise ValueError(str(exc)) from None
        if amount < 0:
            raise ValueError(f"invalid headroom {value!r}: negative")
        return Headroom(bytes=amount)
    else:
        raise ValueError(f"invalid headroom {value!r}")
    if not 0 <= fraction < 1:
        raise ValueError(f"invalid headroom {value!r}: a share must be in [0, 1)")
    return Headroom(fraction=fraction)


def _unit_bytes(value: object) -> int:
    try:
        amount = parse_quantity(value)  # type: ignore[arg-type]
    except QuantityError as exc:
        raise ValueError(str(exc)) from None
    if amount <= 0 or amount.denominator != 1:
        raise ValueError(f"invalid unit {value!r}: must be a positive whole number of bytes")
    return int(amount)


def _epc_resources(value: object) -> dict[str, int]:
    if not isinstance(value, dict) or not value:
        raise ValueError("must be a non-empty map of resource name to bytes per count")
    return {str(k): _unit_bytes(v) for k, v in value.items()}


def _choice(options: tuple[str, ...]) -> typing.Callable[[object], str]:
    def check(value: object) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
        return str(value)

    return check


def _bytes(value: object) -> int:
    try:
        amount = parse_int(value)  # type: ignore[arg-type]
    except QuantityError as exc:
        raise ValueError(str(exc)) from None
    if amount <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return amount


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"must be a port number 0..65535, got {value!r}")
    return value


def _fraction01(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"must be a number in (0, 1], got {value!r}")
    return float(value)


def _non_negative(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"must be a non-negative number, got {value!r}")
    return float(value)


def _parse(fn: typing.Callable[[object], Any]) -> dict[str, Any]:
    return {"parse": fn}


@dataclass
class EpcSettings:
    resources: dict[str, int] = field(
        default_factory=lambda: dict(DEFAULT_EPC_RESOURCES), metadata=_parse(_epc_resources)
    )
    """EPC resource names and the bytes in one count of each (`1` or `1Mi`)."""
    headroom: Headroom = field(default_factory=Headroom, metadata=_parse(parse_headroom))
    """EPC kept free on every node for aesmd and quoting enclaves: `20%`, `0.2` or `16Mi`."""


@dataclass
class ExtenderSettings:
    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = field(default=8888, metadata=_parse(_port))
    """Port to listen on."""
    metrics_host: str | None = None
    """Address for the metrics listener (default: `host`)."""
    metrics_port: int | None = field(default=None, metadata=_parse(_port))
    """Serve /metrics (and /healthz, /readyz for probes) on this port, apart from the extender
    verbs, so that a NetworkPolicy can let Prometheus reach the metrics and nothing else. Unset:
    /metrics is served on `port` beside the verbs."""
    tls_cert: str | None = None
    """PEM certificate (chain) to serve the verbs over HTTPS; re-read when the file changes."""
    tls_key: str | None = None
    """PEM private key of `tlsCert`."""
    tls_client_ca: str | None = None
    """PEM CA bundle: with it, clients must present a certificate it signed (mutual TLS)."""
    prefix: str = ""
    """URL prefix before each verb (kube-scheduler posts to urlPrefix + "/" + verb)."""
    strategy: str = field(default="binpack", metadata=_parse(_choice(STRATEGIES)))
    """Scoring strategy: binpack, spread or balanced."""
    max_body_bytes: int = field(default=8 * 2**20, metadata=_parse(_bytes))
    """Largest request body accepted; larger ones get 413. Memory grows with the body (up to
    about 55 MB per MB for a list of names the cache does not know; benchmarks/extender_memory.py
    measures it), so the default keeps the worst accepted request near 600 MB, within the
    sidecar's 1 Gi limit. A cache-mode body is about 40 bytes per node (200 KB at 5,000 nodes);
    full-Nodes mode needs about 10 KB per node: raise this and the memory limit together."""
    prefer_non_sgx: bool = True
    """Score nodes without EPC higher for pods that request no EPC."""
    bind: bool = False
    """Serve /bind with EPC reservations (for `ignoredByScheduler: true`)."""
    reservation_ttl: float = field(default=30.0, metadata=_parse(parse_duration))
    """How long a bind's reservation lasts if the API never shows the pod bound."""


@dataclass
class PrometheusSettings:
    url: str | None = None
    """Prometheus base URL; unset means decisions use requests alone."""
    interval: float = field(default=15.0, metadata=_parse(parse_duration))
    """How often to poll."""
    stale_after: float = field(default=120.0, metadata=_parse(parse_duration))
    """Data older than this is ignored and decisions fall back to requests."""
    accounting: str | None = field(default=None, metadata=_parse(_choice((*ACCOUNTING_MODES, ""))))
    """requests, usage or max; default max when url is set, requests otherwise."""
    node_label: str = "node"
    """Label that names the node in query results."""
    capacity_query: str = "sum by (node) (last_over_time(epcsched_node_epc_capacity_bytes[5m]))"
    """PromQL for EPC capacity in bytes per node (series of one node are summed). Values are
    looked back over a window so that one missed scrape (Prometheus marks the series stale at
    once) does not hide a node; staleAfter then decides by the newest sample's age."""
    used_query: str = (
        "sum by (node) (last_over_time(epcsched_node_epc_capacity_bytes[5m])"
        " - last_over_time(epcsched_node_epc_free_bytes[5m]))"
    )
    """PromQL for EPC in use in bytes per node (series of one node are summed)."""
    paging_query: str = "sum by (node) (irate(epcsched_node_epc_evicted_pages_total[5m]))"
    """PromQL for EPC pages evicted per second per node: the rate between each node's last two
    samples, so paging is seen one scrape after it starts and gone one scrape after it stops."""
    freshness_query: str = "max by (node) (timestamp(epcsched_node_epc_capacity_bytes))"
    """PromQL for the time (Unix seconds) of each node's newest sample; a node whose newest
    sample is older than staleAfter is left to requests. Empty skips the per-node check."""
    timeout: float = field(default=5.0, metadata=_parse(parse_duration))
    """How long one poll may wait for Prometheus before it counts as failed."""


@dataclass
class PressureSettings:
    paging_rate: float | None = field(default=None, metadata=_parse(_non_negative))
    """Pages evicted per second above which a node takes no new EPC pods."""
    usage_watermark: float | None = field(default=None, metadata=_parse(_fraction01))
    """Measured share of EPC in use above which a node takes no new EPC pods."""


@dataclass
class BackoffSettings:
    initial: float = field(default=300.0, metadata=_parse(parse_duration))
    max: float = field(default=1800.0, metadata=_parse(parse_duration))
    reset: float = field(default=10800.0, metadata=_parse(parse_duration))


@dataclass
class NodeTemplate:
    resources: dict[str, str | int | float] = field(default_factory=dict)
    """Allocatable of one new node (EPC names, cpu, memory, pods)."""
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)


@dataclass
class NodePoolSettings:
    name: str = ""
    """Pool name, unique."""
    provider: str = field(default="simulated", metadata=_parse(_choice(PROVIDERS)))
    min_size: int = 0
    max_size: int = 10
    node_selector: dict[str, str] = field(default_factory=dict)
    """Labels that mark this pool's nodes."""
    template: NodeTemplate | None = None
    """One new node, for scale-from-zero."""
    cost_per_hour: float = 0.0
    priority: int = 0
    clusterapi: dict[str, str] = field(default_factory=dict)
    aks: dict[str, str] = field(default_factory=dict)


@dataclass
class AutoscalerSettings:
    enabled: bool = True
    interval: float = field(default=30.0, metadata=_parse(parse_duration))
    expander: str = field(default="least-waste", metadata=_parse(_choice(EXPANDERS)))
    target_utilization: float = field(default=0.8, metadata=_parse(_fraction01))
    tolerance: float = field(default=0.1, metadata=_parse(_non_negative))
    scale_down_utilization: float = field(default=0.5, metadata=_parse(_fraction01))
    scale_down_unneeded_time: float = field(default=600.0, metadata=_parse(parse_duration))
    scale_down_delay_after_add: float = field(default=600.0, metadata=_parse(parse_duration))
    max_node_provision_time: float = field(default=900.0, metadata=_parse(parse_duration))
    """A node asked for that is not Ready with EPC allocatable by then is given up."""
    max_pod_eviction_time: float = field(default=120.0, metadata=_parse(parse_duration))
    """How long scale-down retries evictions refused by a PodDisruptionBudget before it gives
    the node back (uncordons it)."""
    batch_idle: float = field(default=1.0, metadata=_parse(parse_duration))
    """After a new unschedulable EPC pod, wait this long for more before deciding."""
    batch_max: float = field(default=10.0, metadata=_parse(parse_duration))
    """Decide at the latest this long after the first unschedulable pod of a burst."""
    backoff: BackoffSettings = field(default_factory=BackoffSettings)
    node_pools: list[NodePoolSettings] = field(default_factory=list)


@dataclass
class MetricsApiSettings:
    host: str = "0.0.0.0"
    """Address `epcsched metrics-api` listens on (the aggregator reaches it via its Service)."""
    port: int = field(default=6443, metadata=_parse(_port))
    """HTTPS port."""
    tls_cert: str | None = None
    """PEM serving certificate (chain) file; unset: a self-signed one is made at start-up."""
    tls_key: str | None = None
    """PEM private key file of tlsCert."""
    window: float = field(default=120.0, metadata=_parse(parse_duration))
    """How old a pod's newest EPC sample may be, and the window rates are taken over."""
    cache_ttl: float = field(default=10.0, metadata=_parse(parse_duration))
    """How long one Prometheus answer serves every request."""
    auth_cache_ttl: float = field(default=10.0, metadata=_parse(parse_duration))
    """How long a TokenReview or SubjectAccessReview answer is reused."""
    pod_label: str = "pod"
    """Label of the per-pod series that holds the pod UID."""
    usage_query: str = "max by (pod) (last_over_time(epcsched_cgroup_epc_bytes[{window}]))"
    """PromQL for EPC bytes per pod UID; `{window}` becomes the window."""
    limit_hits_query: str = "max by (pod) (rate(epcsched_cgroup_epc_max_events_total[{window}]))"
    """PromQL for EPC limit hits per second per pod UID."""
    paging_query: str = "sum by (node) (rate(epcsched_node_epc_evicted_pages_total[{window}]))"
    """PromQL for EPC pages evicted per second per node (node label: prometheus.nodeLabel)."""


@dataclass
class Config:
    epc: EpcSettings = field(default_factory=EpcSettings)
    extender: ExtenderSettings = field(default_factory=ExtenderSettings)
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    pressure: PressureSettings = field(default_factory=PressureSettings)
    autoscaler: AutoscalerSettings = field(default_factory=AutoscalerSettings)
    metrics_api: MetricsApiSettings = field(default_factory=MetricsApiSettings)

    @property
    def accounting(self) -> str:
        if self.prometheus.accounting:
            return self.prometheus.accounting
        return "max" if self.prometheus.url else "requests"


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _convert(tp: Any, value: object, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path)
    if dataclasses.is_dataclass(tp):
        return build(typing.cast(type, tp), value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: must be a list, got {type(value).__name__}")
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: must be a map, got {type(value).__name__}")
        return {str(k): _convert(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: must be a string, got {value!r}")
        return value
    if origin is None and tp is typing.Any:
        return value
    if args and all(a in (str, int, float) for a in args):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{path}: must be a string or a number, got {value!r}")
        return value
    return value


def build(cls: type[T], data: object, path: str = "") -> T:
    """Build settings `cls` from parsed YAML, naming the key path of the first bad value."""
    where = path or "(top level)"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a map, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {camel(f.name): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        spec = known.get(str(key))
        if spec is None:
            raise ConfigError(f"{sub}: unknown key (known: {', '.join(sorted(known))})")
        parser = spec.metadata.get("parse")
        if parser is not None and value is not None:
            try:
                kwargs[spec.name] = parser(value)
            except ValueError as exc:
                raise ConfigError(f"{sub}: {exc}") from None
        else:
            kwargs[spec.name] = _convert(hints[spec.name], value, sub)
    return cls(**kwargs)


def _validate(config: Config) -> None:
    names: set[str] = set()
    for i, pool in enumerate(config.autoscaler.node_pools):
        where = f"autoscaler.nodePools[{i}]"
        if not pool.name:
            raise ConfigError(f"{where}.name: required")
        if pool.name in names:
            raise ConfigError(f"{where}.name: duplicate pool name {pool.name!r}")
        names.add(pool.name)
        if pool.min_size < 0:
            raise ConfigError(f"{where}.minSize: must be >= 0")
        if pool.max_size < pool.min_size:
            raise ConfigError(f"{where}.maxSize: must be >= minSize")
    if config.extender.reservation_ttl <= 0:
        raise ConfigError("extender.reservationTtl: must be positive")
    prom = config.prometheus
    for key, seconds in (
        ("interval", prom.interval),
        ("staleAfter", prom.stale_after),
        ("timeout", prom.timeout),
    ):
        if seconds <= 0:
            raise ConfigError(f"prometheus.{key}: must be positive")
    url = prom.url
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"prometheus.url: must start with http:// or https://, got {url!r}")


def config_from_mapping(data: object, *, source: str = "") -> Config:
    try:
        config = build(Config, data)
        _validate(config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
    return config


def load_config(path: str | Path | None) -> Config:
    """Read and validate a config file; None gives the defaults."""
    if path is None:
        return Config()
    try:
        data = load_document(path)
    except FileFormatError as exc:
        raise ConfigError(str(exc)) from None
    return config_from_mapping(data, source=str(path))
