"""Sleeping on-demand deployments keep their containers, stopped (issue 18's wake time): tables
of what one pass decides (diff and step, no Docker), and which deployments the book counts as
running when some of their containers are kept stopped."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from maas.agent.reconcile.diff import diff
from maas.agent.reconcile.health import ReplicaHealth
from maas.agent.reconcile.observe import ObservedContainer
from maas.agent.reconcile.ondemand import DemandBook, asleep
from maas.agent.reconcile.step import step
from maas.compiler.plan import (
    Estimate,
    ModelRef,
    OnDemandPlan,
    Placement,
    Plan,
    PlanDeployment,
)
from support.observed import observed_container

NOW = 1000.0
HASH = "v1:new"
GIB = 1 << 30


def dep(name: str = "a", replicas: int = 1, *, on_demand: bool = True) -> PlanDeployment:
    return PlanDeployment(
        name=name,
        backend="vllm",
        backend_rule="explicit",
        image="img",
        command=[],
        port=1,
        replicas=replicas,
        model=ModelRef(source="local_path", path="/m", download=False),
        placement=Placement(mode="gpu", gpus=["GPU-0"]),
        estimate=Estimate(vram_bytes=[10 * GIB], ram_bytes=0),
        on_demand=OnDemandPlan(idle_timeout_s=60, group="g") if on_demand else None,
        spec_hash=HASH,
    )


def box(
    state: str = "exited", cid: str = "c1", spec_hash: str = HASH, replica: int = 0, name: str = "a"
) -> ObservedContainer:
    return observed_container(cid, name, replica, spec_hash, state)


AWAKE = Plan(node="n", deployments=[dep()])
ASLEEP = Plan(node="n", deployments=[dep(replicas=0)])


@dataclass(frozen=True)
class Row:
    why: str
    acted: Plan  # the plan the pass acts on (a sleeping deployment at 0 replicas)
    observed: tuple[ObservedContainer, ...]
    actions: tuple[tuple[str, str], ...]  # (kind, how the reason starts), in the pass's order


ROWS = [
    Row("falls asleep: stopped, not removed", ASLEEP, (box("running"),), (("stop", "asleep"),)),
    Row("asleep: the stopped container is kept", ASLEEP, (box(),), (("noop", "asleep; contai"),)),
    Row("asleep, no container: nothing yet", ASLEEP, (), (("noop", "asleep; a request"),)),
    Row(
        "asleep: a container of an older spec hash is removed",
        ASLEEP,
        (box(spec_hash="v1:old"),),
        (("remove", "asleep; spec hash v1:old"), ("noop", "asleep; a request")),
    ),
    Row(
        "asleep: a duplicate is removed, the kept one stays",
        ASLEEP,
        (box(cid="c1"), box(cid="c2")),
        (("remove", "duplicate"), ("noop", "asleep; container kept")),
    ),
    Row(
        "asleep: a replica beyond the planned count is removed",
        ASLEEP,
        (box(), box(cid="c9", replica=1)),
        (("remove", "replica no longer wanted"), ("noop", "asleep; container kept")),
    ),
    Row(
        "asleep: an orphan of a removed deployment is removed",
        ASLEEP,
        (box(), box(cid="c9", name="gone")),
        (("remove", "deployment removed"), ("noop", "asleep; container kept")),
    ),
    Row("woken: the kept container is started", AWAKE, (box(),), (("start", "container exi"),)),
    Row(
        "woken: a kept container of an older spec hash is recreated",
        AWAKE,
        (box(spec_hash="v1:old"),),
        (("recreate", "spec hash v1:old -> v1:new"),),
    ),
    Row("woken without a container: created", AWAKE, (), (("create", "no container"),)),
    Row("awake and running: up to date", AWAKE, (box("running"),), (("noop", "up to date"),)),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.why for r in ROWS])
def test_one_pass(row: Row) -> None:
    sleeping = asleep(AWAKE, row.acted)
    assert set(sleeping) == ({"a"} if row.acted is ASLEEP else set())
    actions = diff(row.acted, row.observed, asleep=sleeping)
    got = [(a.kind, a.reason) for a in actions]
    assert len(got) == len(row.actions), got
    for (kind, reason), (want_kind, want_reason) in zip(got, row.actions, strict=True):
        assert kind == want_kind and reason.startswith(want_reason), got


def test_without_asleep_a_sleeping_deployment_is_removed_as_before() -> None:
    ((action,),) = [diff(ASLEEP, (box("running"),))]
    assert (action.kind, action.reason) == ("remove", "replica no longer wanted")


def test_a_container_stopped_for_sleep_is_no_crash() -> None:
    health = ReplicaHealth(container_id="c1", started_at=900.0, phase="running", spec_hash=HASH)
    health.asleep()
    actions, after = step(ASLEEP, (box(),), {("a", 0): health}, NOW, asleep(AWAKE, ASLEEP))
    assert [a.kind for a in actions] == ["noop"]
    assert after[("a", 0)].phase == "asleep" and after[("a", 0)].restarts == 0
    # woken: started at once (no back-off: it never failed)
    actions, _ = step(AWAKE, (box(),), after, NOW + 1)
    assert [(a.kind, a.container_id) for a in actions] == [("start", "c1")]


def test_always_on_deployments_are_never_asleep() -> None:
    full = Plan(node="n", deployments=[dep("x", on_demand=False)])
    assert (
        asleep(full, full.model_copy(update={"deployments": [dep("x", 0, on_demand=False)]})) == {}
    )


@pytest.mark.parametrize(
    ("kept", "running", "with_container", "counted"),
    [
        # a kept, stopped container of a sleeping deployment: not running
        (set(), set(), {"a"}, set()),
        # an awake one whose container crashed, or one woken whose container is not started
        # yet: running (a crash is restarted with back-off)
        ({"a"}, set(), {"a"}, {"a"}),
        # a running container counts whatever the book remembers
        (set(), {"a"}, {"a"}, {"a"}),
    ],
)
def test_what_counts_as_running(
    kept: set[str], running: set[str], with_container: set[str], counted: set[str]
) -> None:
    book = DemandBook()
    book.kept = set(kept)
    times = {n: (NOW - 5, None) for n in with_container}
    assert book._awake(running, times) == counted


GROUP = Plan(node="n", deployments=[dep("a"), dep("b")])  # the group holds one at a time


def test_a_wake_that_waited_for_room_still_evicts() -> None:
    """A wake that waits (its group's member is busy) leaves its kept container stopped; once
    the member is idle, the wake evicts it instead of starting beside it."""
    book = DemandBook()
    book.apply(GROUP, {"b"}, {"a": (NOW - 60, None), "b": (NOW - 9, NOW - 8)}, NOW - 7)
    book.report({"b": (0.0, 1, 0)}, NOW)  # a request in flight on b
    book.wake("a", NOW)
    acted = book.apply(GROUP, {"b"}, {"a": (NOW - 60, None), "b": (NOW - 9, NOW - 8)}, NOW)
    assert [d.replicas for d in acted.deployments] == [0, 1]
    assert book.states["a"].reason.startswith("waits for b")
    book.report({"b": (0.5, 0, 0)}, NOW + 1)  # b is done
    acted = book.apply(GROUP, {"b"}, {"a": (NOW - 60, None), "b": (NOW - 9, NOW - 8)}, NOW + 1)
    assert [d.replicas for d in acted.deployments] == [1, 0]
    assert book.states["b"].reason == "evicted for a (group g)"


def test_found_stopped_at_start_none_is_started() -> None:
    """Kept containers found when the agent starts (no memory of the last pass) stay asleep:
    a group's members are never all started at once."""
    book = DemandBook()
    acted = book.apply(GROUP, set(), {"a": (None, None), "b": (None, None)}, NOW)
    assert [d.replicas for d in acted.deployments] == [0, 0]
    assert set(asleep(GROUP, acted)) == {"a", "b"}


def test_preview_remembers_nothing() -> None:
    book = DemandBook()
    acted, sleeping = book.preview(AWAKE, set(), {}, NOW)
    assert [d.replicas for d in acted.deployments] == [0] and set(sleeping) == {"a"}
    assert book.states == {} and book.counts == {}
    # the preview of `maasctl apply`: a sleeping deployment is not shown as created
    assert [a.kind for a in diff(acted, (), asleep=sleeping)] == ["noop"]
    book.wake("a", NOW)
    acted, sleeping = book.preview(AWAKE, set(), {}, NOW)
    assert [d.replicas for d in acted.deployments] == [1] and sleeping == {}
    assert book.counts == {}
