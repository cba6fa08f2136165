"""The autoscaler's state machine at the edges a mutation audit found untested, worked out by hand.

Protects: the exact status ConfigMap mapping (every key, RFC 3339 UTC times with milliseconds,
unset fields left out) and its reading back (each kind of damage refused with a one-line message
naming the key, times with an offset, without one and as YAML timestamps, whatever the process's
time zone); the `--dry-run` JSON of a decision; every `autoscaler` setting reaching the policy;
the backoff at its first step, its doubling, its cap and its reset instant; every reason a pool
decision gives, word for word; nodes asked for counted as in flight (also while a node is
drained); a removal completing when its node leaves the API; the cost, priority, last scale-up
and planner knobs reaching the plan; one removal per pool with the others' timers kept; nodes
whose drain failed or that were handed over for removal skipped until their time; and what
`removal_done` / `removal_failed` leave in the state.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from collections.abc import Iterator

import pytest
import yaml

from epcsched.config import AutoscalerSettings, BackoffSettings
from epcsched.core.autoscale import (
    NONE,
    SCALE_DOWN,
    SCALE_UP,
    Backoff,
    ControllerPolicy,
    ControllerState,
    Decision,
    PoolDecision,
    PoolMemory,
    PoolView,
    decide,
    removal_done,
    removal_failed,
)
from epcsched.core.plan import Plan, PlanPolicy
from epcsched.core.snapshot import ClusterSnapshot
from tests.test_autoscale_core import POLICY, TEMPLATE, node, pod, snap

# 2026-03-01T12:00:00Z: 56 years since 1970 with 14 leap days (1972..2024) is 20454 days, plus
# January and February 2026 (59) is 20513 days = 1 772 323 200 s, plus 12 h (43 200 s).
T = 1_772_366_400.0
T_TEXT = "2026-03-01T12:00:00.000Z"


def view(s: ClusterSnapshot, name: str = "p", **kw: object) -> PoolView:
    """Pool `name` holds the snapshot's nodes named `name-*`; those with EPC are usable."""
    names = tuple(sorted(n.name for n in s.nodes() if n.name.startswith(f"{name}-")))
    usable = tuple(
        sorted(n.name for n in s.nodes() if n.name in names and n.ready and n.epc_total > 0)
    )
    kw.setdefault("target", len(names))
    kw.setdefault("max_size", 5)
    min_size = kw.pop("min_size", 0)
    max_size = kw.pop("max_size")
    return PoolView(name, TEMPLATE, min_size, max_size, names, usable, **kw)  # type: ignore[arg-type]


def one(
    state: ControllerState,
    s: ClusterSnapshot,
    now: float,
    policy: ControllerPolicy = POLICY,
    **kw: object,
) -> tuple[ControllerState, PoolDecision, Decision]:
    new, decision = decide(state, [view(s, "p", **kw)], s, policy, now)
    return new, decision.pool("p"), decision


def unneeded_quickly(**kw: object) -> ControllerPolicy:
    """Nodes are removable the moment they are unneeded: no timer to wait for."""
    return ControllerPolicy(
        plan=PlanPolicy(scale_down_unneeded_time=0, scale_down_delay_after_add=0, **kw)  # type: ignore[arg-type]
    )


# --- Backoff ---------------------------------------------------------------------------------


def test_backoff_starts_at_initial_without_a_step_or_without_a_failure() -> None:
    b = Backoff(initial=300, max=1800, reset=10800)
    # A status written before backoffSeconds existed: a failure 10 s ago but no step yet.
    assert b.next_step(0.0, T - 10, T) == 300
    # A step but no failure on record.
    assert b.next_step(600.0, None, T) == 300


def test_backoff_doubles_a_step_shorter_than_a_second() -> None:
    b = Backoff(initial=0.5, max=8, reset=100)
    # 0.5 s doubles to 1 s, which doubles to 2 s (a tiny step is a step, not "none yet").
    assert b.next_step(0.5, T, T + 1) == 1.0
    assert b.next_step(1.0, T, T + 1) == 2.0


def test_backoff_caps_at_max_and_resets_exactly_after_reset_seconds() -> None:
    b = Backoff(initial=300, max=1800, reset=10800)
    assert b.next_step(900, T, T + 1) == 1800  # 2 x 900 is exactly the max
    assert b.next_step(1200, T, T + 1) == 1800  # 2400 capped
    assert b.next_step(1800, T, T + 10799.999) == 1800
    assert b.next_step(1800, T, T + 10800) == 300  # 3 h without a failure, to the second


# --- ControllerPolicy.from_settings ----------------------------------------------------------


def test_policy_from_settings_maps_every_setting() -> None:
    settings = AutoscalerSettings(
        expander="cheapest",
        target_utilization=0.7,
        tolerance=0.05,
        scale_down_utilization=0.4,
        scale_down_unneeded_time=120.0,
        scale_down_delay_after_add=240.0,
        max_node_provision_time=420.0,
        backoff=BackoffSettings(initial=60.0, max=480.0, reset=3600.0),
    )
    assert ControllerPolicy.from_settings(settings) == ControllerPolicy(
        plan=PlanPolicy(
            expander="cheapest",
            target_utilization=0.7,
            tolerance=0.05,
            scale_down_utilization=0.4,
            scale_down_unneeded_time=120.0,
            scale_down_delay_after_add=240.0,
            strategy="binpack",
        ),
        max_node_provision_time=420.0,
        backoff=Backoff(initial=60.0, max=480.0, reset=3600.0),
        drain_retry_after=300.0,
    )


def test_policy_from_settings_passes_the_strategy_and_overrides_to_the_planner() -> None:
    policy = ControllerPolicy.from_settings(
        AutoscalerSettings(), strategy="spread", epc_aware=False, pressure=False
    )
    assert (policy.plan.strategy, policy.plan.epc_aware, policy.plan.pressure) == (
        "spread",
        False,
        False,
    )
    assert policy.plan.epc_pods_only is True
    assert ControllerPolicy.from_settings(AutoscalerSettings()).plan.strategy == "binpack"


# --- ControllerState.to_dict / from_dict -----------------------------------------------------

FULL = ControllerState(
    pools={
        "p": PoolMemory(
            target=3,
            asked=(T, T + 1.5),
            last_scale_up=T + 1.5,
            last_scale_down=T - 60,
            backoff_until=T + 300,
            backoff_step=300,
            last_failure=T,
            failure="quota",
            removing="p-1",
            removing_since=T + 2,
        ),
        "a": PoolMemory(target=None),
    },
    unneeded_since={"p-2": T - 600, "p-1": T - 0.25},
    drain_failed={"p-3": T + 300},
    removed={"p-4": T},
)
# Each time from T: 1.5 s is 12:00:01.500, -60 s 11:59:00, +300 s 12:05:00, -600 s 11:50:00,
# -0.25 s 11:59:59.750. Pools and nodes come out in name order.
FULL_DICT = {
    "pools": {
        "a": {"target": None, "inFlight": 0},
        "p": {
            "target": 3,
            "inFlight": 2,
            "askedAt": [T_TEXT, "2026-03-01T12:00:01.500Z"],
            "lastScaleUp": "2026-03-01T12:00:01.500Z",
            "lastScaleDown": "2026-03-01T11:59:00.000Z",
            "backoffUntil": "2026-03-01T12:05:00.000Z",
            "lastFailure": T_TEXT,
            "removingSince": "2026-03-01T12:00:02.000Z",
            "backoffSeconds": 300,
            "failure": "quota",
            "removing": "p-1",
        },
    },
    "unneededNodes": {
        "p-1": "2026-03-01T11:59:59.750Z",
        "p-2": "2026-03-01T11:50:00.000Z",
    },
    "drainFailedNodes": {"p-3": "2026-03-01T12:05:00.000Z"},
    "removedNodes": {"p-4": T_TEXT},
}


def test_the_status_mapping_names_every_field() -> None:
    out = FULL.to_dict()
    assert out == FULL_DICT
    assert list(out["pools"]) == ["a", "p"]
    assert list(out["unneededNodes"]) == ["p-1", "p-2"]


def test_the_status_mapping_of_an_empty_state() -> None:
    assert ControllerState().to_dict() == {
        "pools": {},
        "unneededNodes": {},
        "drainFailedNodes": {},
        "removedNodes": {},
    }


def test_the_status_mapping_reads_back_through_yaml() -> None:
    text = yaml.safe_dump(FULL.to_dict(), sort_keys=False)
    assert ControllerState.from_dict(yaml.safe_load(text)) == FULL


def test_a_pool_entry_with_only_a_target_reads_as_defaults() -> None:
    state = ControllerState.from_dict({"pools": {"p": {"target": 2}}})
    assert state == ControllerState(pools={"p": PoolMemory(target=2)})
    assert state.pool("p").backoff_step == 0.0


def test_an_empty_status_reads_as_an_empty_state() -> None:
    assert ControllerState.from_dict({}) == ControllerState()
    assert ControllerState.from_dict({"pools": None}) == ControllerState()


def test_asked_times_are_read_oldest_first() -> None:
    state = ControllerState.from_dict(
        {"pools": {"p": {"askedAt": ["2026-03-01T12:00:01.500Z", T_TEXT]}}}
    )
    assert state.pool("p").asked == (T, T + 1.5)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ([], "status: must be a map"),
        ({"pools": ["p"]}, "status.pools: must be a map"),
        ({"pools": {"p": "x"}}, "status.pools.p: must be a map"),
        ({"pools": {"p": {"target": "3"}}}, "status.pools.p.target: must be an integer"),
        ({"pools": {"p": {"target": True}}}, "status.pools.p.target: must be an integer"),
        ({"pools": {"p": {"askedAt": "x"}}}, "status.pools.p.askedAt: must be a list"),
        (
            {"pools": {"p": {"askedAt": ["yesterday"]}}},
            "status.pools.p.askedAt: must be an RFC 3339 time, got 'yesterday'",
        ),
        (
            {"pools": {"p": {"askedAt": [5]}}},
            "status.pools.p.askedAt: must be an RFC 3339 time, got 5",
        ),
        (
            {"pools": {"p": {"backoffSeconds": "300"}}},
            "status.pools.p.backoffSeconds: must be a number",
        ),
        (
            {"pools": {"p": {"backoffSeconds": True}}},
            "status.pools.p.backoffSeconds: must be a number",
        ),
        (
            {"pools": {"p": {"lastScaleUp": "x"}}},
            "status.pools.p.lastScaleUp: must be an RFC 3339 time, got 'x'",
        ),
        (
            {"pools": {"p": {"lastScaleDown": "x"}}},
            "status.pools.p.lastScaleDown: must be an RFC 3339 time, got 'x'",
        ),
        (
            {"pools": {"p": {"backoffUntil": "x"}}},
            "status.pools.p.backoffUntil: must be an RFC 3339 time, got 'x'",
        ),
        (
            {"pools": {"p": {"lastFailure": "x"}}},
            "status.pools.p.lastFailure: must be an RFC 3339 time, got 'x'",
        ),
        (
            {"pools": {"p": {"removingSince": "x"}}},
            "status.pools.p.removingSince: must be an RFC 3339 time, got 'x'",
        ),
        ({"pools": {"p": {"failure": 5}}}, "status.pools.p.failure: must be a string"),
        ({"pools": {"p": {"removing": ["p-1"]}}}, "status.pools.p.removing: must be a string"),
        ({"unneededNodes": []}, "status.unneededNodes: must be a map"),
        (
            {"unneededNodes": {"n": "x"}},
            "status.unneededNodes.n: must be an RFC 3339 time, got 'x'",
        ),
        ({"drainFailedNodes": ["n"]}, "status.drainFailedNodes: must be a map"),
        (
            {"drainFailedNodes": {"n": None}},
            "status.drainFailedNodes.n: must be an RFC 3339 time, got None",
        ),
        ({"removedNodes": "n"}, "status.removedNodes: must be a map"),
        (
            {"removedNodes": {"n": 1.5}},
            "status.removedNodes.n: must be an RFC 3339 time, got 1.5",
        ),
    ],
)
def test_a_damaged_status_names_the_key_to_fix(status: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        ControllerState.from_dict(status)
    assert str(caught.value) == message


def test_backoff_seconds_may_be_an_integer() -> None:
    state = ControllerState.from_dict({"pools": {"p": {"backoffSeconds": 600}}})
    assert state.pool("p").backoff_step == 600.0


def test_times_with_an_offset_or_without_one_or_with_a_fraction() -> None:
    state = ControllerState.from_dict(
        {
            "unneededNodes": {
                # 14:00 at +02:00 is 12:00 UTC.
                "offset": "2026-03-01T14:00:00+02:00",
                # No offset: read as UTC.
                "naive": "2026-03-01T12:00:00",
                "fraction": "2026-03-01T12:00:00.250Z",
            }
        }
    )
    assert state.unneeded_since == {"offset": T, "naive": T, "fraction": T + 0.25}


def test_times_that_yaml_read_as_timestamps() -> None:
    # A person who unquotes the times gets datetimes from the YAML reader.
    status = yaml.safe_load(
        "unneededNodes:\n"
        "  utc: 2026-03-01T12:00:00Z\n"
        "  offset: 2026-03-01T09:30:00-02:30\n"  # 09:30 at -02:30 is 12:00 UTC
        "  naive: 2026-03-01 12:00:00\n"
    )
    assert isinstance(status["unneededNodes"]["naive"], dt.datetime)
    state = ControllerState.from_dict(status)
    assert state.unneeded_since == {"utc": T, "offset": T, "naive": T}


@pytest.fixture
def local_time_utc_plus_3() -> Iterator[None]:
    """The controller's process in a time zone three hours east of UTC (POSIX TZ `EPC-3`)."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "EPC-3"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


@pytest.mark.usefixtures("local_time_utc_plus_3")
def test_times_without_an_offset_are_utc_whatever_the_local_time_zone() -> None:
    # Read as local time they would be 09:00 UTC, 3 h (10 800 s) early.
    state = ControllerState.from_dict(
        {
            "unneededNodes": {"text": "2026-03-01T12:00:00"},
            "removedNodes": {"datetime": dt.datetime(2026, 3, 1, 12)},
        }
    )
    assert state.unneeded_since == {"text": T}
    assert state.removed == {"datetime": T}


def test_a_lower_case_z_is_rfc_3339_utc() -> None:
    # RFC 3339 section 5.6: "T" and "Z" may be lower case; a hand-edited ConfigMap may say so.
    state = ControllerState.from_dict(
        {"unneededNodes": {"n": "2026-03-01T12:00:00z", "m": "2026-03-01t12:00:00.000Z"}}
    )
    assert state.unneeded_since == {"n": T, "m": T}
    # A Z anywhere but at the end is not an offset.
    with pytest.raises(ValueError, match="must be an RFC 3339 time"):
        ControllerState.from_dict({"unneededNodes": {"n": "2026-03-01TZ12:00:00"}})


# --- Decision.to_json ------------------------------------------------------------------------


def test_the_dry_run_json_names_every_field() -> None:
    decision = Decision(
        pools=(
            PoolDecision("a", 1, 2, SCALE_UP, "1 pending EPC pod(s) need 1 new node(s)"),
            PoolDecision("b", 3, 2, SCALE_DOWN, "why", ("b-1",), drain="b-1"),
        ),
        unschedulable=(("team-x/web-0", "pool a: backed off"),),
        plan=Plan((), (), {}, {}),
    )
    assert decision.to_json() == {
        "pools": [
            {
                "name": "a",
                "currentSize": 1,
                "targetSize": 2,
                "action": "scale-up",
                "reason": "1 pending EPC pod(s) need 1 new node(s)",
                "nodesToRemove": [],
            },
            {
                "name": "b",
                "currentSize": 3,
                "targetSize": 2,
                "action": "scale-down",
                "reason": "why",
                "nodesToRemove": ["b-1"],
            },
        ],
        "unschedulable": [{"namespace": "team-x", "name": "web-0", "reason": "pool a: backed off"}],
    }


def test_the_dry_run_json_splits_a_pod_key_at_its_first_slash() -> None:
    # A namespace never holds a slash, so whatever follows the first one is the name.
    decision = Decision((), (("ns/a/b", "r"),), Plan((), (), {}, {}))
    assert decision.to_json() == {
        "pools": [],
        "unschedulable": [{"namespace": "ns", "name": "a/b", "reason": "r"}],
    }


def test_the_dry_run_json_of_nothing_to_do() -> None:
    assert Decision((), (), Plan((), (), {}, {})).to_json() == {"pools": [], "unschedulable": []}


# --- decide: reasons and sizes ---------------------------------------------------------------


def test_a_scale_up_for_pending_pods_says_how_many_pods_and_nodes() -> None:
    s = snap()
    pod(s, "a", 10)
    pod(s, "b", 10)
    state, d, decision = one(ControllerState(), s, T)
    # 10 + 10 GiB cannot share a 16 GiB node: two nodes, one per pod.
    assert d == PoolDecision(
        "p",
        0,
        2,
        SCALE_UP,
        "2 pending EPC pod(s) need 2 new node(s)",
        in_flight=2,
        pods=("default/a", "default/b"),
    )
    assert state.pool("p") == PoolMemory(target=2, asked=(T, T), last_scale_up=T)
    assert decision.plan.targets == {"p": 2}
    assert decision.unschedulable == ()


def test_pending_pods_and_min_size_in_one_pool_add_up_with_both_reasons() -> None:
    s = snap()
    pod(s, "a", 10)
    # One node for the pod, then minSize 3 still lacks 3 - 1 = 2.
    state, d, _ = one(ControllerState(), s, T, min_size=3)
    assert d == PoolDecision(
        "p",
        0,
        3,
        SCALE_UP,
        "1 pending EPC pod(s) need 1 new node(s); 2 node(s) to reach minSize",
        in_flight=3,
        pods=("default/a",),
    )
    assert state.pool("p").asked == (T, T, T)


def test_a_scale_up_to_min_size_says_so() -> None:
    s = snap()
    node(s, "p-0")
    # One asked for a minute ago, not joined: 1 in flight + 1 usable, minSize 3 lacks 1.
    state = ControllerState(pools={"p": PoolMemory(target=2, asked=(T - 60,))})
    state, d, _ = one(state, s, T, target=2, min_size=3)
    assert d == PoolDecision("p", 2, 3, SCALE_UP, "1 node(s) to reach minSize", in_flight=2)
    assert state.pool("p") == PoolMemory(target=3, asked=(T - 60, T), last_scale_up=T)


def test_a_scale_up_for_epc_pressure_says_so() -> None:
    s = snap()
    node(s, "p-0")
    pod(s, "hot", 15, "p-0")
    # 15/16 of the EPC in use against a 0.8 target is 1.171875 > 1 + 0.1 tolerance:
    # ceil(1 x 1.171875) - 1 = 1 more node.
    _, d, _ = one(ControllerState(), s, T)
    assert d == PoolDecision(
        "p",
        1,
        2,
        SCALE_UP,
        "EPC pressure: 1 node(s) to bring utilization under target",
        in_flight=1,
    )


def test_a_pool_with_nothing_to_do_says_no_change() -> None:
    s = snap()
    node(s, "p-0")
    pod(s, "keep", 10, "p-0")
    state, d, _ = one(ControllerState(), s, T)
    assert d == PoolDecision("p", 1, 1, NONE, "no change")
    assert state.pool("p") == PoolMemory(target=1)


def test_nodes_asked_for_and_not_usable_yet_are_counted_in_the_reason() -> None:
    s = snap()
    node(s, "p-0")
    pod(s, "keep", 10, "p-0")
    state = ControllerState(pools={"p": PoolMemory(target=3, asked=(T - 20, T - 10))})
    state, d, _ = one(state, s, T, target=3)
    assert d == PoolDecision("p", 3, 3, NONE, "2 node(s) asked for, not usable yet", in_flight=2)
    assert state.pool("p") == PoolMemory(target=3, asked=(T - 20, T - 10))


def test_the_current_size_is_the_providers_target_when_it_is_known() -> None:
    s = snap()
    node(s, "p-0")
    pod(s, "keep", 10, "p-0")
    # The provider says 2; one node has joined, the other counts from now.
    state, d, _ = one(ControllerState(), s, T, target=2)
    assert (d.current_size, d.target_size, d.reason) == (
        2,
        2,
        "1 node(s) asked for, not usable yet",
    )
    assert state.pool("p").asked == (T,)


def test_without_the_providers_target_the_node_count_stands_in() -> None:
    s = snap()
    node(s, "p-0")
    node(s, "p-1")
    pod(s, "keep", 10, "p-0")
    pod(s, "keep2", 10, "p-1")
    state, d, _ = one(ControllerState(), s, T, target=None)
    assert d == PoolDecision("p", 2, 2, NONE, "no change")
    assert state.pool("p").target == 2


def test_a_busy_provider_blocks_the_pool_and_the_pod_says_why() -> None:
    s = snap()
    pod(s, "a", 10)
    state, d, decision = one(ControllerState(), s, T, busy=True)
    why = "the provider is still carrying out the last change"
    assert d == PoolDecision("p", 0, 0, NONE, why)
    assert decision.unschedulable == (("default/a", f"pool p: {why}"),)
    assert state.pool("p") == PoolMemory(target=0)


def test_a_backed_off_pool_gives_the_end_of_its_backoff_and_the_failure() -> None:
    s = snap()
    pod(s, "a", 10)
    memory = PoolMemory(
        target=0, backoff_until=T + 300, backoff_step=300, last_failure=T, failure="quota"
    )
    state = ControllerState(pools={"p": memory})
    _, d, decision = one(state, s, T + 299.999)
    why = "backed off until 2026-03-01T12:05:00.000Z: quota"
    assert d == PoolDecision("p", 0, 0, NONE, why)
    assert decision.unschedulable == (("default/a", f"pool p: {why}"),)
    # At the instant the backoff ends the pool grows again.
    _, d, _ = one(state, s, T + 300)
    assert (d.action, d.target_size) == (SCALE_UP, 1)


def test_a_pool_whose_provider_cannot_be_read_gives_the_error() -> None:
    s = snap()
    node(s, "p-0")
    pod(s, "keep", 10, "p-0")
    _, d, _ = one(ControllerState(), s, T, error="HTTP 503")
    assert d == PoolDecision("p", 1, 1, NONE, "provider unavailable: HTTP 503")


def test_a_node_given_up_after_max_provision_time_is_reported_exactly() -> None:
    s = snap()
    node(s, "p-0", epc=False)
    pod(s, "a", 10)
    state = ControllerState(pools={"p": PoolMemory(target=1, asked=(T,), last_scale_up=T)})
    # Asked for at T, not usable at T + 900 (exactly maxNodeProvisionTime).
    state, d, decision = one(state, s, T + 900, target=1)
    why = "1 node(s) not Ready with EPC allocatable after 900s (maxNodeProvisionTime)"
    assert d == PoolDecision("p", 1, 0, SCALE_DOWN, f"gave up: {why}", ("p-0",), given_up=1)
    # The first backoff step is 300 s: until T + 1200 (12:20:00).
    assert state.pool("p") == PoolMemory(
        target=0,
        asked=(),
        last_scale_up=T,
        backoff_until=T + 1200,
        backoff_step=300,
        last_failure=T + 900,
        failure=why,
    )
    assert decision.unschedulable == (
        ("default/a", f"pool p: backed off until 2026-03-01T12:20:00.000Z: {why}"),
    )


# --- decide: nodes in flight -----------------------------------------------------------------


def test_nodes_in_flight_while_a_node_is_drained_hold_pending_pods() -> None:
    s = snap()
    node(s, "p-0")
    node(s, "p-1")
    pod(s, "x", 12, "p-0")
    pod(s, "y", 12, "p-1")
    pod(s, "a", 12)
    pod(s, "b", 12)
    # Target 3: p-0 usable, p-1 usable but being removed, one node asked for a minute ago.
    # The planner gets p-0 plus 3 - 1 - 1 = 1 node in flight (p-1 counts neither as a node nor
    # as one on its way); that node holds "a", and "b" waits for the drain to end.
    memory = PoolMemory(target=3, asked=(T - 60,), removing="p-1", removing_since=T - 30)
    state, d, decision = one(ControllerState(pools={"p": memory}), s, T, target=3)
    assert d == PoolDecision("p", 3, 3, NONE, "removing node p-1", in_flight=1)
    assert decision.unschedulable == (("default/b", "pool p: removing node p-1"),)
    assert state.pool("p") == memory


def test_a_removal_completes_when_the_node_leaves_the_api() -> None:
    s = snap()
    node(s, "p-0")
    pod(s, "keep", 10, "p-0")
    memory = PoolMemory(target=1, removing="p-1", removing_since=T - 30)
    state, d, _ = one(ControllerState(pools={"p": memory}), s, T, target=1)
    assert d == PoolDecision("p", 1, 1, NONE, "no change")
    # Nobody recorded the end of the scale-down: it ended when the node was seen gone.
    assert state.pool("p") == PoolMemory(target=1, last_scale_down=T)


def test_a_completed_removal_keeps_the_scale_down_time_already_recorded() -> None:
    s = snap()
    node(s, "p-0")
    pod(s, "keep", 10, "p-0")
    memory = PoolMemory(target=1, removing="p-1", removing_since=T - 30, last_scale_down=T - 10)
    state, _, _ = one(ControllerState(pools={"p": memory}), s, T, target=1)
    assert state.pool("p") == PoolMemory(target=1, last_scale_down=T - 10)


# --- decide: what reaches the planner --------------------------------------------------------


def test_the_cheapest_expander_reads_each_pools_cost() -> None:
    s = snap()
    pod(s, "x", 10)
    # Same template, one node each: 2.0/h for "a", 1.0/h for "b"; a tie would go to "a".
    views = [
        dataclasses.replace(view(s, "a"), cost_per_hour=2.0),
        dataclasses.replace(view(s, "b"), cost_per_hour=1.0),
    ]
    policy = ControllerPolicy(plan=PlanPolicy(expander="cheapest"))
    _, decision = decide(ControllerState(), views, s, policy, T)
    assert [(p.name, p.action, p.target_size) for p in decision.pools] == [
        ("a", NONE, 0),
        ("b", SCALE_UP, 1),
    ]


def test_the_priority_expander_reads_each_pools_priority() -> None:
    s = snap()
    pod(s, "x", 10)
    views = [view(s, "a"), dataclasses.replace(view(s, "b"), priority=10)]
    policy = ControllerPolicy(plan=PlanPolicy(expander="priority"))
    _, decision = decide(ControllerState(), views, s, policy, T)
    assert [(p.name, p.action) for p in decision.pools] == [("a", NONE), ("b", SCALE_UP)]


def test_no_scale_down_until_exactly_the_delay_after_the_last_scale_up() -> None:
    s = snap()
    node(s, "p-0")
    node(s, "p-1")
    unneeded = {"p-0": T - 600, "p-1": T - 600}
    # Last grown 599.999 s ago: within scaleDownDelayAfterAdd (600 s).
    recent = ControllerState(
        pools={"p": PoolMemory(target=2, last_scale_up=T - 599.999)}, unneeded_since=unneeded
    )
    _, d, _ = one(recent, s, T)
    assert d.action == NONE
    # Exactly 600 s ago: p-0 goes (both empty and unneeded as long; p-0 first by name).
    done = ControllerState(
        pools={"p": PoolMemory(target=2, last_scale_up=T - 600)}, unneeded_since=unneeded
    )
    _, d, _ = one(done, s, T)
    assert (d.action, d.drain) == (SCALE_DOWN, "p-0")


def test_the_planners_knobs_come_from_the_policy() -> None:
    s = snap()
    node(s, "p-0")
    state = ControllerState(pools={"p": PoolMemory(target=1)}, unneeded_since={"p-0": T - 60})
    policy = ControllerPolicy(plan=PlanPolicy(scale_down_unneeded_time=60))
    new, d, _ = one(state, s, T, policy)
    assert d == PoolDecision(
        "p",
        1,
        0,
        SCALE_DOWN,
        "utilization 0.00 below 0.5 for 60s; no pod to move",
        ("p-0",),
        drain="p-0",
    )
    assert new.pool("p") == PoolMemory(target=1, removing="p-0", removing_since=T)
    assert new.unneeded_since == {}
    # With the default 600 s the same node is not removable yet.
    _, d, _ = one(state, s, T, ControllerPolicy())
    assert d.action == NONE


# --- decide: scale-down one at a time --------------------------------------------------------


def test_one_removal_per_pool_and_the_others_keep_their_timers() -> None:
    s = snap()
    for name in ("p-0", "p-1", "q-0"):
        node(s, name)
    # All empty and removable at once: the planner removes p-0, p-1 and q-0; p takes only p-0,
    # and q still takes q-0 after p-1 was passed over.
    views = [view(s, "p"), view(s, "q")]
    new, decision = decide(ControllerState(), views, s, unneeded_quickly(), T)
    assert [(p.name, p.action, p.target_size, p.drain) for p in decision.pools] == [
        ("p", SCALE_DOWN, 1, "p-0"),
        ("q", SCALE_DOWN, 0, "q-0"),
    ]
    # p-1 was first seen unneeded now, and keeps that time.
    assert new.unneeded_since == {"p-1": T}


def test_a_node_kept_back_keeps_the_time_it_was_first_unneeded() -> None:
    s = snap()
    for name in ("p-0", "p-1"):
        node(s, name)
    state = ControllerState(unneeded_since={"p-0": T - 50, "p-1": T - 40})
    new, d, _ = one(state, s, T, unneeded_quickly())
    assert d.drain == "p-0"
    assert new.unneeded_since == {"p-1": T - 40}


def test_a_node_whose_drain_failed_is_passed_over_until_exactly_its_time() -> None:
    s = snap()
    for name in ("p-0", "p-1"):
        node(s, name)
    state = ControllerState(drain_failed={"p-0": T})
    new, d, _ = one(state, s, T - 0.001, unneeded_quickly())
    assert d.drain == "p-1"
    assert new.drain_failed == {"p-0": T}
    assert new.unneeded_since == {"p-0": T - 0.001}
    # At T the wait is over: p-0 may be chosen, and the entry is dropped.
    new, d, _ = one(state, s, T, unneeded_quickly())
    assert d.drain == "p-0"
    assert new.drain_failed == {}


def test_a_node_handed_over_for_removal_is_never_chosen_again() -> None:
    s = snap()
    for name in ("p-0", "p-1"):
        node(s, name)
    # p-0 is still in the API; "gone" is not, so its entry is dropped.
    state = ControllerState(removed={"p-0": T - 5, "gone": T - 5})
    new, d, _ = one(state, s, T, unneeded_quickly())
    assert d.drain == "p-1"
    assert new.removed == {"p-0": T - 5}
    assert new.unneeded_since == {"p-0": T}


# --- removal_done / removal_failed -----------------------------------------------------------

REMOVING = ControllerState(
    pools={"p": PoolMemory(target=2, last_scale_up=T - 900, removing="p-1", removing_since=T)},
    unneeded_since={"p-1": T - 600, "p-2": T - 300},
    drain_failed={"p-3": T + 100},
    removed={"p-4": T - 10},
)


def test_removal_done_ends_the_removal_and_remembers_the_node() -> None:
    new = removal_done(REMOVING, "p", "p-1", T + 40)
    assert new == ControllerState(
        pools={"p": PoolMemory(target=2, last_scale_up=T - 900, last_scale_down=T + 40)},
        unneeded_since={"p-2": T - 300},
        drain_failed={"p-3": T + 100},
        removed={"p-4": T - 10, "p-1": T + 40},
    )


def test_removal_done_of_another_node_leaves_the_removal_in_progress() -> None:
    new = removal_done(REMOVING, "p", "p-2", T + 40)
    assert new.pool("p") == dataclasses.replace(REMOVING.pool("p"), last_scale_down=T + 40)
    assert new.unneeded_since == {"p-1": T - 600}
    assert new.removed == {"p-4": T - 10, "p-2": T + 40}


def test_removal_failed_ends_the_removal_and_waits_drain_retry_after() -> None:
    policy = ControllerPolicy(drain_retry_after=120)
    new = removal_failed(REMOVING, "p", "p-1", T + 40, policy)
    assert new == ControllerState(
        pools={"p": PoolMemory(target=2, last_scale_up=T - 900)},
        unneeded_since={"p-2": T - 300},
        drain_failed={"p-3": T + 100, "p-1": T + 160},
        removed={"p-4": T - 10},
    )


def test_removal_failed_of_another_node_leaves_the_removal_in_progress() -> None:
    new = removal_failed(REMOVING, "p", "p-2", T + 40, ControllerPolicy())
    assert new.pool("p") == REMOVING.pool("p")
    assert new.unneeded_since == {"p-1": T - 600}
    assert new.drain_failed == {"p-3": T + 100, "p-2": T + 340}
