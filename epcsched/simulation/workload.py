"""The pods a simulation submits: read from a trace CSV or drawn from a seeded generator.

Either way the result is the same column arrays (submit time, duration, EPC bytes, CPU
millicores, memory bytes), sorted by submit time; the position of a pod is its submission order.
Amounts are whole integers (EPC and memory in bytes) however the trace writes them. The third
kind, a Deployment scaled over a load curve (`deployment`), submits no jobs: the engine creates
its replicas as its scaler asks.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt

from epcsched.config import ConfigError
from epcsched.quantity import MIB
from epcsched.simulation.deployment import DeploymentSpec, parse_deployment

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

TRACE_COLUMNS = ("submit_s", "duration_s", "epc_mib", "cpu_m", "memory_mib")


@dataclass(frozen=True, slots=True)
class TraceSpec:
    path: Path


@dataclass(frozen=True, slots=True)
class Distribution:
    """One synthetic column: `fixed`, `choice` (with weights), `lognormal`, `uniform`, `pareto`."""

    kind: str
    values: tuple[Fraction, ...] = ()
    weights: tuple[float, ...] = ()
    params: tuple[float, ...] = ()
    cap: float | None = None

    def sample(self, rng: np.random.Generator, count: int) -> FloatArray | list[Fraction]:
        """Draws in the column's unit; `choice` and `fixed` return exact values."""
        if self.kind == "fixed":
            return [self.values[0]] * count
        if self.kind == "choice":
            p = np.asarray(self.weights, dtype=np.float64)
            picks = rng.choice(len(self.values), size=count, p=p / p.sum())
            return [self.values[int(i)] for i in picks]
        if self.kind == "lognormal":
            median, sigma = self.params
            draws = rng.lognormal(math.log(median), sigma, count)
        elif self.kind == "uniform":
            low, high = self.params
            draws = rng.uniform(low, high, count)
        else:
            scale, shape = self.params
            draws = (rng.pareto(shape, count) + 1.0) * scale
        if self.cap is not None:
            draws = np.minimum(draws, self.cap)
        return draws


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    count: int
    arrival_rate_per_min: float
    duration_s: Distribution
    epc_mib: Distribution
    cpu_m: Distribution
    memory_mib: Distribution


WorkloadSpec = TraceSpec | SyntheticSpec | DeploymentSpec


@dataclass(frozen=True, slots=True)
class Workload:
    """Pods in submission order, as columns."""

    ids: tuple[str, ...]
    submit: FloatArray
    duration: FloatArray
    epc: IntArray
    """EPC request in bytes (0: not an enclave)."""
    cpu_milli: IntArray
    memory: IntArray
    """Memory request in bytes."""

    def __len__(self) -> int:
        return len(self.ids)


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _number(value: object, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(where, f"must be a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise _fail(where, f"must be {'positive' if positive else 'non-negative'}, got {value!r}")
    return float(value)


def _exact(value: object, where: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _fail(where, f"must be a number, got {value!r}")
    try:
        amount = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        raise _fail(where, f"must be a number, got {value!r}") from None
    if amount < 0:
        raise _fail(where, f"must be non-negative, got {value!r}")
    return amount


def _params(
    data: object, keys: tuple[str, ...], where: str
) -> tuple[tuple[float, ...], float | None]:
    if not isinstance(data, dict):
        raise _fail(where, f"must be a map with {', '.join(keys)}")
    unknown = set(data) - {*keys, "max"}
    if unknown:
        raise _fail(f"{where}.{sorted(unknown)[0]}", "unknown key")
    values = []
    for key in keys:
        if key not in data:
            raise _fail(f"{where}.{key}", "required")
        values.append(_number(data[key], f"{where}.{key}", positive=key != "low"))
    cap = _number(data["max"], f"{where}.max", positive=True) if "max" in data else None
    return tuple(values), cap


def parse_distribution(data: object, where: str) -> Distribution:
    """A number, or a one-key map: fixed, choice (+ weights), lognormal, uniform, pareto."""
    if isinstance(data, int | float | str) and not isinstance(data, bool):
        return Distribution("fixed", values=(_exact(data, where),))
    if not isinstance(data, dict):
        raise _fail(where, "must be a number or a map such as {lognormal: {median, sigma}}")
    kinds = set(data) - {"weights"}
    unknown = kinds - {"fixed", "choice", "lognormal", "uniform", "pareto"}
    if unknown:
        raise _fail(f"{where}.{sorted(unknown)[0]}", "unknown key")
    if len(kinds) != 1:
        raise _fail(where, "needs exactly one of fixed, choice, lognormal, uniform, pareto")
    kind = kinds.pop()
    if kind != "choice" and "weights" in data:
        raise _fail(f"{where}.weights", "only choice takes weights")
    if kind == "fixed":
        return Distribution("fixed", values=(_exact(data["fixed"], f"{where}.fixed"),))
    if kind == "choice":
        raw = data["choice"]
        if not isinstance(raw, list) or not raw:
            raise _fail(f"{where}.choice", "must be a non-empty list")
        values = tuple(_exact(v, f"{where}.choice[{i}]") for i, v in enumerate(raw))
        weights_raw = data.get("weights", [1] * len(values))
        if not isinstance(weights_raw, list) or len(weights_raw) != len(values):
            raise _fail(f"{where}.weights", "must be a list as long as choice")
        weights = tuple(_number(w, f"{where}.weights[{i}]") for i, w in enumerate(weights_raw))
        if sum(weights) <= 0:
            raise _fail(f"{where}.weights", "must not all be zero")
        return Distribution("choice", values=values, weights=weights)
    if kind == "lognormal":
        params, cap = _params(data[kind], ("median", "sigma"), f"{where}.lognormal")
    elif kind == "uniform":
        params, cap = _params(data[kind], ("low", "high"), f"{where}.uniform")
        if params[1] < params[0]:
            raise _fail(f"{where}.uniform.high", "must be >= low")
    elif kind == "pareto":
        params, cap = _params(data[kind], ("scale", "shape"), f"{where}.pareto")
    else:
        raise _fail(f"{where}.{kind}", "unknown distribution (fixed, choice, lognormal, ...)")
    return Distribution(kind, params=params, cap=cap)


_SYNTHETIC_KEYS = ("count", "arrivalRatePerMin", "durationS", "epcMiB", "cpuM", "memoryMiB")


def parse_workload(data: object, *, base: Path, where: str) -> WorkloadSpec:
    """`{trace: file.csv}` (relative to `base`), `{synthetic: {...}}` or `{deployment: {...}}`."""
    if (
        not isinstance(data, dict)
        or len(data) != 1
        or next(iter(data)) not in ("trace", "synthetic", "deployment")
    ):
        raise _fail(where, "must be {trace: FILE.csv}, {synthetic: {...}} or {deployment: {...}}")
    if "deployment" in data:
        return parse_deployment(data["deployment"], f"{where}.deployment")
    if "trace" in data:
        if not isinstance(data["trace"], str) or not data["trace"]:
            raise _fail(f"{where}.trace", "must be a file name")
        path = base / data["trace"]
        if not path.is_file():
            raise _fail(f"{where}.trace", f"no such file: {path}")
        return TraceSpec(path)
    syn = data["synthetic"]
    where = f"{where}.synthetic"
    if not isinstance(syn, dict):
        raise _fail(where, "must be a map")
    for key in syn:
        if key not in _SYNTHETIC_KEYS:
            raise _fail(f"{where}.{key}", f"unknown key (known: {', '.join(_SYNTHETIC_KEYS)})")
    for key in ("count", "arrivalRatePerMin", "durationS", "epcMiB"):
        if key not in syn:
            raise _fail(f"{where}.{key}", "required")
    count = syn["count"]
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise _fail(f"{where}.count", f"must be a positive integer, got {count!r}")
    return SyntheticSpec(
        count=count,
        arrival_rate_per_min=_number(
            syn["arrivalRatePerMin"], f"{where}.arrivalRatePerMin", positive=True
        ),
        duration_s=parse_distribution(syn["durationS"], f"{where}.durationS"),
        epc_mib=parse_distribution(syn["epcMiB"], f"{where}.epcMiB"),
        cpu_m=parse_distribution(syn.get("cpuM", 100), f"{where}.cpuM"),
        memory_mib=parse_distribution(syn.get("memoryMiB", 128), f"{where}.memoryMiB"),
    )


def _whole(draws: FloatArray | list[Fraction], unit: int) -> IntArray:
    """Round each draw up to a whole count of `unit` bytes (EPC and memory are never floats)."""
    if isinstance(draws, list):
        return np.fromiter((math.ceil(v * unit) for v in draws), dtype=np.int64, count=len(draws))
    return np.ceil(draws).astype(np.int64) * unit


def generate(spec: SyntheticSpec, seed: int) -> Workload:
    """Poisson arrivals and independent draws per column, all from one seeded generator."""
    rng = np.random.default_rng(seed)
    count = spec.count
    submit = np.cumsum(rng.exponential(60.0 / spec.arrival_rate_per_min, count))
    duration_draws = spec.duration_s.sample(rng, count)
    duration = np.asarray([float(v) for v in duration_draws], dtype=np.float64)
    duration = np.maximum(duration, 1.0)
    epc = _whole(spec.epc_mib.sample(rng, count), MIB)
    cpu = _whole(spec.cpu_m.sample(rng, count), 1)
    memory = _whole(spec.memory_mib.sample(rng, count), MIB)
    ids = tuple(f"job-{i:06d}" for i in range(count))
    return Workload(ids, submit.astype(np.float64), duration, epc, cpu, memory)


def _cell(row: dict[str, str], column: str, where: str) -> Fraction:
    text = (row.get(column) or "").strip()
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise _fail(f"{where}: {column}", f"not a number: {text!r}") from None
    if value < 0:
        raise _fail(f"{where}: {column}", f"must be non-negative, got {text!r}")
    return value


def read_trace(path: Path) -> Workload:
    """Read `submit_s,duration_s,epc_mib,cpu_m,memory_mib[,id]`; errors name file, line, column."""
    try:
        return _read_trace(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise ConfigError(f"{path}: not CSV: {exc}") from None


def _read_trace(path: Path) -> Workload:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in TRACE_COLUMNS if c not in header]
        if missing:
            raise ConfigError(f"{path}: header: missing column(s) {', '.join(missing)}")
        rows: list[tuple[float, float, int, int, int, str]] = []
        for row in reader:
            where = f"{path}: line {reader.line_num}"
            submit = _cell(row, "submit_s", where)
            duration = _cell(row, "duration_s", where)
            if duration == 0:
                raise ConfigError(f"{where}: duration_s: must be positive")
            rows.append(
                (
                    float(submit),
                    float(duration),
                    math.ceil(_cell(row, "epc_mib", where) * MIB),
                    math.ceil(_cell(row, "cpu_m", where)),
                    math.ceil(_cell(row, "memory_mib", where) * MIB),
                    (row.get("id") or "").strip() or f"job-{len(rows):06d}",
                )
            )
    if not rows:
        raise ConfigError(f"{path}: no jobs")
    ids = [r[5] for r in rows]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: id: duplicate job ids")
    # Submission order is by time; equal times keep the file's order.
    order = sorted(range(len(rows)), key=lambda i: rows[i][0])
    return Workload(
        ids=tuple(ids[i] for i in order),
        submit=np.asarray([rows[i][0] for i in order], dtype=np.float64),
        duration=np.asarray([rows[i][1] for i in order], dtype=np.float64),
        epc=np.asarray([rows[i][2] for i in order], dtype=np.int64),
        cpu_milli=np.asarray([rows[i][3] for i in order], dtype=np.int64),
        memory=np.asarray([rows[i][4] for i in order], dtype=np.int64),
    )


def load_workload(spec: WorkloadSpec, seed: int) -> Workload:
    """The pods of a scenario: the trace as written, or the generator drawn with `seed`; none
    for a Deployment, whose replicas come and go during the run."""
    if isinstance(spec, TraceSpec):
        return read_trace(spec.path)
    if isinstance(spec, DeploymentSpec):
        empty = np.zeros(0, dtype=np.int64)
        return Workload((), np.zeros(0), np.zeros(0), empty, empty, empty)
    return generate(spec, seed)
