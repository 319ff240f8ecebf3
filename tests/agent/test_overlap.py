"""Overlapping roll-outs (maas.agent.reconcile.overlap): the decision whether a replica's new
container starts beside its old one (room per the plan's ledger, a free port), the old one kept
while the new one is not ready, and the replica's health once the old one is gone or wanted
again."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from maas.agent.reconcile.diff import Action
from maas.agent.reconcile.health import ReplicaHealth
from maas.agent.reconcile.observe import ObservedContainer, Owner
from maas.agent.reconcile.overlap import (
    Overlap,
    adopted,
    beside_name,
    overlap,
    overlaps,
    serving_kept,
    settle,
    spare_ports,
)
from maas.compiler import CompileOptions, compile_plan, load_sources
from maas.compiler.plan import Plan, PlanDeployment
from support.observed import observed_container
from support.paths import ROOT

NODE = (ROOT / "examples" / "nodes" / "cpu-01.yaml").read_text()

GIB = 1 << 30
RANGE = (40000, 40003)


def deployment(
    gpus: list[str] | None = None,
    vram: list[int] | None = None,
    ram: int | None = 2 * GIB,
    ports: list[int] | None = None,
    spec_hash: str = "new",
    **extra: Any,
) -> PlanDeployment:
    return PlanDeployment.model_validate(
        {
            "name": "m",
            "backend": "llama.cpp",
            "backend_rule": "gguf",
            "image": "x",
            "command": [],
            "port": 8080,
            "ports": ports or [40000],
            "model": {"source": "local_path", "path": "/x", "download": False},
            "placement": {"mode": "gpu" if gpus else "cpu", "gpus": gpus or []},
            "estimate": {"vram_bytes": vram or [], "ram_bytes": ram},
            "spec_hash": spec_hash,
            **extra,
        }
    )


def total(device: str, uuid: str | None, usable: int, allocated: int) -> dict[str, Any]:
    return {
        "device": device,
        "uuid": uuid,
        "name": device,
        "usable_bytes": usable,
        "allocated_bytes": allocated,
        "headroom_bytes": usable - allocated,
    }


def plan(new: PlanDeployment, gpu_headroom: int = 10 * GIB, host_headroom: int = 10 * GIB) -> Plan:
    totals = [
        total("gpu0", "GPU-a", 24 * GIB, 24 * GIB - gpu_headroom),
        total("host", None, 64 * GIB, 64 * GIB - host_headroom),
    ]
    return Plan.model_validate({"node": "n", "deployments": [new.model_dump()], "totals": totals})


def container(
    cid: str = "old", port: int | None = 40000, spec_hash: str = "old", state: str = "running"
) -> ObservedContainer:
    return observed_container(cid, "m", 0, spec_hash, state, name=f"maas-n-m-0-{cid}", port=port)


@dataclass(frozen=True)
class Row:
    name: str
    new: PlanDeployment
    old: PlanDeployment | None
    expected: Overlap
    gpu_headroom: int = 10 * GIB
    host_headroom: int = 10 * GIB
    observed: tuple[ObservedContainer, ...] = (container(),)


GPU_NEW = deployment(["GPU-a"], [6 * GIB])
GPU_OLD = deployment(["GPU-a"], [8 * GIB], spec_hash="old")

ROWS = [
    Row("cpu, room: a spare port", deployment(), deployment(spec_hash="old"),
        Overlap(True, "room for both versions", 40001)),
    Row("gpu, room for the old version's 8 GiB", GPU_NEW, GPU_OLD,
        Overlap(True, "room for both versions", 40001)),
    Row("gpu, headroom exactly the old version's need", GPU_NEW, GPU_OLD,
        Overlap(True, "room for both versions", 40001), gpu_headroom=8 * GIB),
    Row("gpu, too little headroom: stop first", GPU_NEW, GPU_OLD,
        Overlap(False, "gpu0 has 7.0 GiB of headroom, the old version holds 8.0 GiB"),
        gpu_headroom=7 * GIB),
    Row("host memory too small", deployment(), deployment(ram=12 * GIB, spec_hash="old"),
        Overlap(False, "host memory has 10.0 GiB of headroom, the old version holds 12.0 GiB")),
    Row("a container memory limit counts as the need",
        deployment(), deployment(spec_hash="old", limits={"memory_bytes": 11 * GIB}),
        Overlap(False, "host memory has 10.0 GiB of headroom, the old version holds 11.0 GiB")),
    Row("old version's host need unknown", deployment(), deployment(ram=None, spec_hash="old"),
        Overlap(False, "the old version's host memory is not known")),
    Row("old version's GPU need unknown", GPU_NEW, deployment(["GPU-a"], [], spec_hash="old"),
        Overlap(False, "the old version's need on GPU GPU-a is not known")),
    Row("old version not known (agent restarted)", deployment(), None,
        Overlap(False, "the running version's memory is not known")),
    Row("host network", deployment(security={"host_network": True}), deployment(spec_hash="o"),
        Overlap(False, "host network: both versions would listen on one port")),
    Row("the plan's port is free again: taken back", deployment(), deployment(spec_hash="old"),
        Overlap(True, "room for both versions", 40000), observed=(container(port=40001),)),
    Row("no spare port in the range", deployment(), deployment(spec_hash="old"),
        Overlap(False, "no spare port in 40000-40003"),
        observed=tuple(container(f"c{p}", p) for p in range(40000, 40004))),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_overlap_decision(row: Row) -> None:
    live = plan(row.new, row.gpu_headroom, row.host_headroom)
    assert (
        overlap(live, row.new, row.old, 0, observed=row.observed, port_range=RANGE) == row.expected
    )


def test_a_spare_port_is_none_the_plan_gives_another_replica() -> None:
    new = deployment(ports=[40000, 40001], replicas=2)
    live = plan(new)
    decided = overlap(
        live, new, deployment(spec_hash="old"), 0, observed=(container(),), port_range=RANGE
    )
    assert decided == Overlap(True, "room for both versions", 40002)


def serving(ready: bool, new_id: str = "new") -> ReplicaHealth:
    return ReplicaHealth(container_id=new_id, spec_hash="new", ready=ready, serving="old")


REMOVE_OLD = Action("remove", "m", 0, "duplicate container", "old")


def test_the_old_container_stays_while_the_new_one_is_not_ready() -> None:
    observed = [container(), container("new", 40001, "new")]
    assert serving_kept([REMOVE_OLD], {("m", 0): serving(False)}, observed) == []
    # Ready, yet its container no longer runs: the old one still stays.
    gone = [container(), container("new", 40001, "new", state="exited")]
    assert serving_kept([REMOVE_OLD], {("m", 0): serving(True)}, gone) == []


def test_the_old_container_goes_once_the_new_one_is_ready() -> None:
    observed = [container(), container("new", 40001, "new")]
    assert serving_kept([REMOVE_OLD], {("m", 0): serving(True)}, observed) == [REMOVE_OLD]
    # Other removals are never held.
    other = Action("remove", "m", 0, "duplicate container", "third")
    assert serving_kept([other], {("m", 0): serving(False)}, observed) == [other]


def test_settle_while_rolling_changes_nothing() -> None:
    new = deployment()
    observed = [container(), container("new", 40001, "new")]
    assert settle(plan(new), observed, {("m", 0): serving(False)}) == {}


def test_settle_forgets_an_old_container_that_is_gone() -> None:
    new = deployment()
    after = settle(plan(new), [container("new", 40001, "new")], {("m", 0): serving(False)})
    assert after[("m", 0)].serving is None
    assert after[("m", 0)].container_id == "new"


def test_settle_takes_the_old_container_back_when_its_version_is_wanted_again() -> None:
    # The new version failed its startup budget and was rolled back: the plan wants "old".
    back = deployment(spec_hash="old")
    failed = replace(serving(False), phase="failed", last_error="not ready within budget")
    observed = [container(), container("new", 40001, "new", state="exited")]
    after = settle(plan(back), observed, {("m", 0): failed})[("m", 0)]
    assert (after.container_id, after.spec_hash, after.serving) == ("old", "old", None)
    assert after.ready and after.phase == "running"
    assert failed.serving == "old"  # the health passed in is not changed


def test_an_agent_restarted_mid_roll_out_keeps_the_old_container_serving() -> None:
    new = deployment()
    observed = [container(), container("new", 40001, "new")]
    after = adopted(plan(new), observed, {}, 5.0)[("m", 0)]
    assert (after.container_id, after.serving, after.phase, after.started_at) == (
        "new",
        "old",
        "starting",
        5.0,
    )
    # ... so the removal of the old one waits for the new one's readiness.
    assert serving_kept([REMOVE_OLD], {("m", 0): after}, observed) == []
    # A replica the agent knows, or one without the plan's version, is left alone.
    assert adopted(plan(new), observed, {("m", 0): serving(False)}, 5.0) == {}
    assert adopted(plan(deployment(spec_hash="third")), observed, {}, 5.0) == {}
    assert adopted(plan(new), observed[:1], {}, 5.0) == {}


def test_the_spare_port_a_new_container_holds_is_reserved_for_the_next_compile() -> None:
    observed = [container(), container("new", 40001, "new")]
    assert spare_ports(observed, plan(deployment())) == {40001}
    assert spare_ports(observed, None) == frozenset()  # no last plan: nothing is known spare
    options = CompileOptions(reserved_ports=frozenset({40001}), port_range=(40000, 40002))
    text = (
        "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: other}\nspec:\n"
        "  source: local_path\n  path: /m\n  backend: custom\n  image: x/y\n"
        "  command: '--port {{port}}'\n  replicas: 2\n  allow_cpu_offload: true\n"
    )
    documents = load_sources({"d.yaml": text, "n.yaml": NODE})
    compiled = compile_plan(documents.deployments, documents.nodes[0].model, options=options)
    assert sorted(compiled.deployments[0].ports) == [40000, 40002]


def test_overlaps_finds_the_old_version_by_the_hash_its_container_carries() -> None:
    new = deployment()
    live = plan(new)
    recreate = Action("recreate", "m", 0, "spec hash old -> new", "old")
    start = Action("start", "m", 1, "container exited", "other")
    known = [deployment(spec_hash="older"), deployment(ram=12 * GIB, spec_hash="old")]
    decided = overlaps(live, [recreate, start], [container()], known, port_range=RANGE)
    assert decided == {
        recreate: Overlap(
            False, "host memory has 10.0 GiB of headroom, the old version holds 12.0 GiB"
        )
    }
    stopped = overlaps(live, [recreate], [container(state="exited")], known, port_range=RANGE)
    assert stopped == {}  # nothing serves: stop-then-start (a plain recreate)


def test_a_new_container_beside_the_old_one_has_a_name_of_its_own() -> None:
    new = deployment(spec_hash="v1:056519d87c2844c3a1b34b1f")
    assert beside_name(Owner("n1"), new, 0) == "maas-n1-m-0-056519d87c28"
