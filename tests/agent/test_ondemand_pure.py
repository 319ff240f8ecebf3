"""The on-demand decisions as tables (issue 18): idle stops, waking, making room in a group
(least recently used idle member first), never stopping a member with a request in flight."""

from __future__ import annotations

import pytest

from maas.agent.reconcile.ondemand import Activity, DemandBook, decide, fits, replica_times
from maas.compiler.plan import (
    Estimate,
    ModelRef,
    OnDemandPlan,
    Placement,
    Plan,
    PlanDeployment,
)

GIB = 1 << 30
GPU = "GPU-0"


def dep(
    name: str,
    vram_gib: float = 0,
    *,
    group: str | None = "g",
    idle: int = 60,
    on_demand: bool = True,
) -> PlanDeployment:
    return PlanDeployment(
        name=name,
        backend="vllm",
        backend_rule="explicit",
        image="img",
        command=[],
        port=1,
        model=ModelRef(source="local_path", path="/m", download=False),
        placement=Placement(mode="gpu", gpus=[GPU]),
        estimate=Estimate(vram_bytes=[int(vram_gib * GIB)], ram_bytes=0),
        on_demand=OnDemandPlan(idle_timeout_s=idle, group=group) if on_demand else None,
    )


PLAN = Plan(
    node="n",
    deployments=[dep("a", 10), dep("b", 10), dep("c", 4), dep("d", 4), dep("solo", 8, group=None)],
)
NOW = 1000.0


def idle(seconds: float, in_flight: int = 0) -> Activity:
    return Activity(last=NOW - seconds, in_flight=in_flight)


@pytest.mark.parametrize(
    ("running", "activity", "wakes", "runs", "stops"),
    [
        # used within its timeout: keeps running; past it: sleeps
        ({"a"}, {"a": idle(30)}, {}, {"a"}, {}),
        ({"a"}, {"a": idle(61)}, {}, set(), {"a": "idle for 61 s (timeout 60 s)"}),
        # a request in flight is never interrupted, however long ago the last one began
        ({"a"}, {"a": idle(500, in_flight=1)}, {}, {"a"}, {}),
        # no report of it at all: its idle clock starts now
        ({"a"}, {}, {}, {"a"}, {}),
        # a wake starts a sleeping deployment (no room needed in an empty group)
        (set(), {}, {"a": NOW}, {"a"}, {}),
        # the group holds one 10 GiB member: waking b evicts idle a
        ({"a"}, {"a": idle(5)}, {"b": NOW}, {"b"}, {"a": "evicted for b (group g)"}),
        # two 4 GiB members fit the 10 GiB reservation together: nothing is evicted
        ({"c"}, {"c": idle(5)}, {"d": NOW}, {"c", "d"}, {}),
        # a needs 10: of c and d both idle, the least recently used goes first, then the other
        (
            {"c", "d"},
            {"c": idle(5), "d": idle(9)},
            {"a": NOW},
            {"a"},
            {"c": "evicted for a (group g)", "d": "evicted for a (group g)"},
        ),
        # b is busy: a waits, and nothing is stopped
        ({"b"}, {"b": idle(500, in_flight=2)}, {"a": NOW}, {"b"}, {}),
        # an ungrouped on-demand deployment never evicts anyone
        ({"a"}, {"a": idle(1)}, {"solo": NOW}, {"a", "solo"}, {}),
        # two wakes in one group: the first asked starts, the second waits for it
        (set(), {}, {"a": NOW - 1, "b": NOW}, {"a"}, {}),
    ],
)
def test_decide(
    running: set[str],
    activity: dict[str, Activity],
    wakes: dict[str, float],
    runs: set[str],
    stops: dict[str, str],
) -> None:
    decision = decide(PLAN, running, activity, wakes, NOW)
    assert {n for n, r in decision.replicas.items() if r} == runs
    assert decision.stops == stops


def test_states_and_reasons() -> None:
    decision = decide(PLAN, {"b"}, {"b": idle(1, in_flight=1)}, {"a": NOW}, NOW)
    assert decision.states["a"].state == "waking"
    assert "waits for b" in decision.states["a"].reason
    assert decision.states["b"].state == "yielding" and decision.yielding == {"b": "a"}
    assert decision.states["b"].reason.startswith("yields to a (group g)")
    assert decision.states["c"].state == "sleeping"
    decision = decide(PLAN, {"a"}, {"a": idle(1)}, {"b": NOW}, NOW)
    assert decision.states["a"].state == "sleeping"
    assert decision.states["a"].reason == "evicted for b (group g)"
    assert decision.states["b"].state == "waking"


def test_members_take_turns_first_asked_first_served() -> None:
    """b serves without pause; a's wake makes it yield: no new requests reach b (its own
    are held at the gateway, and ask for its wake), and once the ones it answers end it is
    evicted for a, though requests of its own wait. Then b's turn comes the same way."""
    busy = {"b": Activity(NOW - 1, in_flight=3, queued=0)}
    first = decide(PLAN, {"b"}, busy, {"a": NOW}, NOW, ready={"b"})
    assert first.yielding == {"b": "a"} and first.replicas["a"] == 0
    answered = {"b": Activity(NOW, in_flight=2, queued=2)}  # 2 held for b, none relayed
    wakes = {"a": NOW, "b": NOW + 1}
    second = decide(PLAN, {"b"}, answered, wakes, NOW + 2, ready={"b"})
    assert second.stops == {"b": "evicted for a (group g)"} and second.replicas["a"] == 1
    # a loads (woken, not ready): b's wake waits and a is not told to yield
    loading = {"a": Activity(NOW + 2, in_flight=1, queued=1), "b": Activity(NOW, 2, 2)}
    third = decide(PLAN, {"a"}, loading, {"a": NOW, "b": NOW + 1}, NOW + 3, ready=set())
    assert third.replicas == {"a": 1, "b": 0, "c": 0, "d": 0, "solo": 0}
    assert third.yielding == {} and third.states["b"].state == "waking"
    # a ready and answering: now a yields to b
    serving = {"a": Activity(NOW + 4, in_flight=1), "b": Activity(NOW, 2, 2)}
    fourth = decide(PLAN, {"a"}, serving, {"b": NOW + 1}, NOW + 5, ready={"a"})
    assert fourth.yielding == {"a": "b"}


def test_always_on_is_left_alone() -> None:
    plan = Plan(node="n", deployments=[dep("x", 20, on_demand=False), *PLAN.deployments])
    decision = decide(plan, {"x"}, {"x": idle(10_000)}, {"a": NOW}, NOW)
    assert "x" not in decision.replicas and "x" not in decision.stops


def test_unknown_need_runs_alone() -> None:
    group = [dep("u", 0), dep("v", 4)]
    assert not fits(group, group)
    assert fits(group[:1], group)


def test_book_applies_and_counts() -> None:
    book = DemandBook()
    plan = Plan(node="n", deployments=[dep("a", 10, idle=30), dep("b", 10, idle=30)])
    acted = book.apply(plan, set(), {}, NOW)
    assert [d.replicas for d in acted.deployments] == [0, 0]
    book.wake("a", NOW)
    acted = book.apply(plan, set(), {}, NOW + 0.1)
    assert [d.replicas for d in acted.deployments] == [1, 0]
    assert book.counts == {"cold_starts": 1} and book.fast_probes()
    # started at +0.2, ready at +2.2: the wake is complete, the load took 2 s
    acted = book.apply(plan, {"a"}, {"a": (NOW + 0.2, NOW + 2.2)}, NOW + 3)
    assert not book.fast_probes() and book.loads == [pytest.approx(2.0)]
    status = book.status_of("a", (NOW + 0.2, NOW + 2.2), NOW + 3)
    assert status is not None and status["state"] == "awake"
    # the gateway reports a request 1 s ago: not idle; later, no requests for 31 s: due
    book.report({"a": (1.0, 0, 0)}, NOW + 10)
    assert not book.due(NOW + 10)
    book.report({"a": (31.0, 0, 0)}, NOW + 40)
    assert book.due(NOW + 40)
    acted = book.apply(plan, {"a"}, {"a": (NOW + 0.2, NOW + 2.2)}, NOW + 40)
    assert [d.replicas for d in acted.deployments] == [0, 0]
    status = book.status_of("a", (None, None), NOW + 41)
    assert status is not None and status["state"] == "sleeping"
    assert str(status["reason"]).startswith("idle for")
    assert book.counts["idle_stops"] == 1


def test_stale_report_counts_no_request_in_flight() -> None:
    book = DemandBook()
    book.report({"a": (0.0, 3, 0)}, NOW)
    assert book._activity(NOW + 5)["a"].in_flight == 3
    assert book._activity(NOW + 60)["a"].in_flight == 0


def test_replica_times() -> None:
    assert replica_times([(1.0, True, 3.0), (2.0, True, 4.0)]) == (2.0, 4.0)
    assert replica_times([(1.0, True, 3.0), (2.0, False, None)]) == (2.0, None)
    assert replica_times([]) == (None, None)
