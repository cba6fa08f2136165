"""The high-throughput profile (`manifests/components/high-throughput/`) is base/ with EPC
bin-packing moved into kube-scheduler and nothing else changed.

Rendered with the real `kubectl kustomize` as an operator's overlay of base/ would render it:
kube-scheduler's NodeResourcesFit scores `MostAllocated` over exactly the EPC names epcsched
knows, with the extender's weight; the extender is asked to filter and preempt only (no
`prioritizeVerb`, no weight), still for pods that request EPC; every other setting, object and
mount is base/'s, and the scheduler reads the replaced configuration.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from epcsched.quantity import DEFAULT_EPC_RESOURCES
from tests.test_manifests import (
    MANIFESTS,
    ROOT,
    SCHEDULER_FIELDS,
    SCHEDULER_NAME,
    extender_block,
    generated_configmap,
    kustomize,
    one,
    pod_spec,
    scheduler_config,
)

Obj = dict[str, Any]
COMPONENT = MANIFESTS / "components" / "high-throughput"

# kubescheduler.config.k8s.io/v1 Plugins / PluginSet / Plugin / PluginConfig, and
# NodeResourcesFitArgs with its ScoringStrategy (k8s.io/kube-scheduler/config/v1/types*.go).
PROFILE_FIELDS = {
    "plugins": {
        "preEnqueue",
        "queueSort",
        "preFilter",
        "filter",
        "postFilter",
        "preScore",
        "score",
        "reserve",
        "permit",
        "preBind",
        "bind",
        "postBind",
        "multiPoint",
    },
    "pluginSet": {"enabled", "disabled"},
    "plugin": {"name", "weight"},
    "pluginConfig": {"name", "args"},
    "nodeResourcesFitArgs": {
        "apiVersion",
        "kind",
        "ignoredResources",
        "ignoredResourceGroups",
        "scoringStrategy",
    },
    "scoringStrategy": {"type", "resources", "requestedToCapacityRatio"},
    "resource": {"name", "weight"},
}


def overlay(directory: Path, *components: str) -> list[Obj]:
    """An operator's overlay of base/ next to a checkout, with `components` added."""
    (directory / "epcsched").symlink_to(ROOT, target_is_directory=True)
    mine = directory / "my-cluster"
    mine.mkdir()
    lines = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization"]
    lines += ["resources:", "  - ../epcsched/manifests/base"]
    if components:
        lines += ["components:", *(f"  - ../epcsched/manifests/components/{c}" for c in components)]
    (mine / "kustomization.yaml").write_text("\n".join(lines) + "\n")
    return kustomize(mine)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    return overlay(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    return overlay(tmp_path_factory.mktemp("profile"), "high-throughput")


def test_kube_scheduler_bin_packs_on_every_epc_name(profile: list[Obj]) -> None:
    (only,) = scheduler_config(profile)["profiles"]
    assert only["schedulerName"] == SCHEDULER_NAME
    assert only["plugins"] == {"score": {"enabled": [{"name": "NodeResourcesFit", "weight": 5}]}}
    (fit,) = only["pluginConfig"]
    assert fit["name"] == "NodeResourcesFit"
    strategy = fit["args"]["scoringStrategy"]
    assert strategy["type"] == "MostAllocated"
    # Exactly the names epcsched reads as EPC: one missing would leave its pods unpacked, and
    # cpu or memory here would pack by those instead.
    assert sorted(r["name"] for r in strategy["resources"]) == sorted(DEFAULT_EPC_RESOURCES)
    # kube-scheduler accepts resource weights 1..100 and plugin weights of at least 1.
    assert all(type(r["weight"]) is int and 1 <= r["weight"] <= 100 for r in strategy["resources"])


def test_the_extender_filters_and_preempts_but_is_not_asked_to_prioritize(
    base: list[Obj], profile: list[Obj]
) -> None:
    ext = extender_block(profile)
    assert ext["filterVerb"] == "filter" and ext["preemptVerb"] == "preempt"
    assert "prioritizeVerb" not in ext
    # kube-scheduler rejects a weight without a prioritize verb to weigh.
    assert "weight" not in ext
    assert ext["nodeCacheCapable"] is True
    assert ext["managedResources"] == extender_block(base)["managedResources"]
    assert sorted(m["name"] for m in ext["managedResources"]) == sorted(DEFAULT_EPC_RESOURCES)


def test_nothing_else_differs_from_base(base: list[Obj], profile: list[Obj]) -> None:
    expected = copy.deepcopy(scheduler_config(base))
    expected["profiles"][0]["plugins"] = scheduler_config(profile)["profiles"][0]["plugins"]
    expected["profiles"][0]["pluginConfig"] = scheduler_config(profile)["profiles"][0][
        "pluginConfig"
    ]
    del expected["extenders"][0]["prioritizeVerb"], expected["extenders"][0]["weight"]
    assert scheduler_config(profile) == expected

    def rest(objs: list[Obj]) -> str:
        """Every other object, with the generated ConfigMap's hashed name made plain."""
        config = generated_configmap(objs, "epcsched-scheduler-config")["metadata"]["name"]
        others = [o for o in objs if o["metadata"]["name"] != config]
        return json.dumps(others, sort_keys=True).replace(config, "epcsched-scheduler-config")

    assert rest(profile) == rest(base)


def test_the_scheduler_reads_the_replaced_configuration(profile: list[Obj]) -> None:
    config = generated_configmap(profile, "epcsched-scheduler-config")
    spec = pod_spec(one(profile, "Deployment", SCHEDULER_NAME))
    mounted = [v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v]
    assert config["metadata"]["name"] in mounted
    assert "MostAllocated" in config["data"]["config.yaml"]


def test_profile_uses_only_known_fields(profile: list[Obj]) -> None:
    config = scheduler_config(profile)
    assert set(config) <= SCHEDULER_FIELDS[""]
    (only,) = config["profiles"]
    assert set(only) <= SCHEDULER_FIELDS["profiles"]
    assert set(only["plugins"]) <= PROFILE_FIELDS["plugins"]
    for plugin_set in only["plugins"].values():
        assert set(plugin_set) <= PROFILE_FIELDS["pluginSet"]
        for plugin in plugin_set.get("enabled", []) + plugin_set.get("disabled", []):
            assert set(plugin) <= PROFILE_FIELDS["plugin"]
    for entry in only["pluginConfig"]:
        assert set(entry) <= PROFILE_FIELDS["pluginConfig"]
        assert set(entry["args"]) <= PROFILE_FIELDS["nodeResourcesFitArgs"]
        strategy = entry["args"]["scoringStrategy"]
        assert set(strategy) <= PROFILE_FIELDS["scoringStrategy"]
        for resource in strategy["resources"]:
            assert set(resource) <= PROFILE_FIELDS["resource"]
    for ext in config["extenders"]:
        assert set(ext) <= SCHEDULER_FIELDS["extenders"]


def test_component_file_is_base_with_marked_changes_only() -> None:
    """Every line the component's copy adds or drops is a comment or is marked, so a change to
    base/ that the copy lacks shows up here rather than on a live cluster."""
    base_lines = (MANIFESTS / "base" / "scheduler" / "kube-scheduler-config.yaml").read_text()
    copy_lines = (COMPONENT / "kube-scheduler-config.yaml").read_text()
    settings = [
        ln for ln in base_lines.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    kept = [ln for ln in copy_lines.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    dropped = [ln.strip() for ln in settings if ln not in kept]
    assert dropped == ["prioritizeVerb: prioritize", "weight: 5"]
