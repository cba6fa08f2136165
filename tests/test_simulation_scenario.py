"""Scenario files: any value at any key either parses or fails with a ConfigError that starts
with a key path (never another exception, which would reach the user as a traceback); defaults
(initialSize is minSize, policies without cluster-autoscaler when autoscaling is off) and sweep
points are as documented."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epcsched.config import ConfigError
from epcsched.simulation.scenario import Variant, load_scenario, parse_scenario
from epcsched.simulation.workload import load_workload

BASE: dict[str, Any] = {
    "name": "fuzz",
    "seed": 1,
    "horizon": "1h",
    "nodePools": [
        {"name": "a", "sku": "Standard_DC4s_v3", "initialSize": 1, "maxSize": 4},
        {
            "name": "b",
            "template": {"resources": {"sgx.intel.com/epc": "8Gi", "cpu": "2", "memory": "8Gi"}},
            "minSize": 1,
            "maxSize": 3,
            "costPerHour": 0.2,
        },
    ],
    "workload": {
        "synthetic": {
            "count": 10,
            "arrivalRatePerMin": 2,
            "durationS": {"lognormal": {"median": 60, "sigma": 1}},
            "epcMiB": {"choice": [0, 64], "weights": [1, 3]},
            "cpuM": 100,
            "memoryMiB": {"uniform": {"low": 64, "high": 128}},
        }
    },
    "autoscaler": {"interval": "30s", "provisionDelay": "1m"},
    "pagingModel": {"slowdownPerOvercommit": 4},
    "sweep": {"seeds": [1, 2], "initialSize": {"a": [1, 2]}},
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += _paths(inner, (*prefix, i))
    return found


PATHS = _paths(BASE)
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["1h", "-1m", "8Gi", "binpack", "Standard_DC1s_v3", "0"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def test_the_base_scenario_parses() -> None:
    scenario = parse_scenario(copy.deepcopy(BASE), base=Path("."))
    assert [p.initial_size for p in scenario.pools] == [1, 1]
    assert scenario.policies == (
        "binpack",
        "spread",
        "balanced",
        "kube-default",
        "epc-unaware",
        "cluster-autoscaler",
    )
    assert scenario.provision_delay == 60
    assert scenario.sweep == (
        Variant(1, (("a", 1),)),
        Variant(1, (("a", 2),)),
        Variant(2, (("a", 1),)),
        Variant(2, (("a", 2),)),
    )
    assert scenario.variant(scenario.sweep[3]).pools[0].initial_size == 2
    without = {**copy.deepcopy(BASE), "autoscaler": {"enabled": False}}
    assert "cluster-autoscaler" not in parse_scenario(without, base=Path(".")).policies


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATHS), VALUES)
def test_any_value_anywhere_parses_or_names_the_key(path: tuple[Any, ...], value: Any) -> None:
    data = copy.deepcopy(BASE)
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        parse_scenario(data, base=Path("."), source="s.yaml")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("s.yaml: ")
        assert "\n" not in message
        assert message.split(": ")[1]


@pytest.mark.parametrize("key", ["name", "horizon", "nodePools", "workload"])
def test_required_keys_are_named(key: str) -> None:
    data = copy.deepcopy(BASE)
    del data[key]
    with pytest.raises(ConfigError, match=rf"^s.yaml: {key}"):
        parse_scenario(data, base=Path("."), source="s.yaml")


def test_files_that_are_not_text_are_one_line_errors(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_bytes(b"\xff\xfe name")
    with pytest.raises(ConfigError, match=r"s.yaml: not UTF-8 text$"):
        load_scenario(scenario)
    (tmp_path / "jobs.csv").write_bytes(b"submit_s,duration_s,epc_mib,cpu_m,memory_mib\n\xff,1\n")
    scenario.write_text(
        "name: t\nhorizon: 1h\nnodePools: [{name: a, sku: Standard_DC8_v2}]\n"
        "workload: {trace: jobs.csv}\n"
    )
    parsed = load_scenario(scenario)
    with pytest.raises(ConfigError, match=r"jobs.csv: not UTF-8 text$"):
        load_workload(parsed.workload, parsed.seed)
