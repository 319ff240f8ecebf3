"""One reconcile pass's decision as a value: (plan, observed, healths, now) -> (actions, healths').

Table tests, no Docker: each row is a replica's health and its container as Docker reports it,
and what the pass decides at `now`."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import pytest

from maas.agent.reconcile.health import ReplicaHealth
from maas.agent.reconcile.observe import ObservedContainer
from maas.agent.reconcile.step import notice, step
from maas.compiler import compile_plan, load_sources
from maas.compiler.plan import Plan
from support.observed import observed_container
from support.paths import ROOT

NOW = 1000.0
SPEC = (
    "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n"
    "  source: huggingface\n  repo_id: org/web\n  backend: custom\n  image: x/web:1\n"
)


def plan_of(spec: str = SPEC) -> Plan:
    sources = {"web.yaml": spec, "n.yaml": (ROOT / "examples/nodes/gpu-01.yaml").read_text()}
    documents = load_sources(sources)
    return compile_plan(documents.deployments, documents.nodes[0].model)


PLAN = plan_of()
HASH = PLAN.deployments[0].spec_hash


def container(state: str = "running", cid: str = "c1", spec_hash: str = HASH) -> ObservedContainer:
    exit_code = 0 if state == "running" else 137
    return observed_container(cid, "web", 0, spec_hash, state, exit_code=exit_code)


def running(**kw: object) -> ReplicaHealth:
    base = ReplicaHealth(
        container_id="c1",
        started_at=900.0,
        ready=True,
        ready_since=901.0,
        phase="running",
        spec_hash=HASH,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Row:
    why: str
    health: ReplicaHealth | None
    observed: tuple[ObservedContainer, ...]
    action: tuple[str, str]  # kind, how the reason starts
    phase: str | None  # the replica's phase afterwards; None: no health
    restarts: int = 0


ROWS = [
    Row("converged", running(), (container(),), ("noop", "up to date"), "running"),
    Row("no container: created", None, (), ("create", "no container"), None),
    Row(
        "a crash is recorded and restarted at once",
        running(),
        (container("exited"),),
        ("start", "container exited"),
        "failed",
        restarts=1,
    ),
    Row(
        "a second crash backs off",
        running(next_delay_s=10.0, restarts=1),
        (container("exited"),),
        ("noop", "exited; backing off"),
        "failed",
        restarts=2,
    ),
    Row(
        "back-off over: started again",
        running(phase="failed", ready=False, hold_until=NOW - 1, restarts=2),
        (container("exited"),),
        ("start", "container exited"),
        "failed",
        restarts=2,
    ),
    Row(
        "a container of an earlier agent is adopted, not recreated",
        ReplicaHealth(),
        (container(),),
        ("noop", "up to date"),
        "starting",
    ),
    Row(
        "an adopted exited container counts as failed, without a restart",
        ReplicaHealth(),
        (container("exited"),),
        ("start", "container exited"),
        "failed",
    ),
    Row(
        "a permanent failure of this spec waits for a new submission",
        ReplicaHealth(phase="failed", permanent=True, hold_until=math.inf, spec_hash=HASH),
        (),
        ("noop", "no container; backing off"),
        "failed",
    ),
    Row(
        "a permanent failure of an older spec does not hold the new one",
        ReplicaHealth(phase="failed", permanent=True, hold_until=math.inf, spec_hash="v1:old"),
        (),
        ("create", "no container"),
        "failed",
    ),
    Row(
        "a refusal by the policy is checked again each pass",
        ReplicaHealth(phase="failed", refused=True, permanent=True, hold_until=math.inf),
        (),
        ("create", "no container"),
        "failed",
    ),
    Row(
        "a new spec recreates the container",
        running(spec_hash="v1:old"),
        (container(spec_hash="v1:old"),),
        ("recreate", "spec hash v1:old ->"),
        "running",
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.why for r in ROWS])
def test_one_pass(row: Row) -> None:
    healths = {} if row.health is None else {("web", 0): row.health}
    before = copy.deepcopy(healths)
    actions, after = step(PLAN, row.observed, healths, NOW)
    ((kind, reason),) = [(a.kind, a.reason) for a in actions]
    assert kind == row.action[0] and reason.startswith(row.action[1]), (kind, reason)
    assert healths == before  # the healths passed in are values: never changed
    health = after.get(("web", 0))
    assert (health.phase if health else None) == row.phase
    assert (health.restarts if health else 0) == row.restarts
    # The same inputs give the same decision: nothing but the arguments counts.
    again, after_again = step(PLAN, row.observed, before, NOW)
    assert (again, after_again) == (actions, after)


def test_a_crash_reads_the_time_it_is_given() -> None:
    _, after = step(PLAN, (container("exited"),), {("web", 0): running(restarts=1)}, NOW)
    crashed = after[("web", 0)]
    assert crashed.last_error == "container exited with exit code 137"
    assert crashed.cause == "crash" and crashed.attempts == 1
    assert crashed.hold_until == NOW  # the first crash: restarted at once


def test_noticing_twice_changes_nothing_more() -> None:
    healths = {("web", 0): running()}
    once = notice((container("exited"),), healths, NOW)
    twice = notice((container("exited"),), once, NOW + 5)
    assert twice == once and twice[("web", 0)] is once[("web", 0)]


def test_unchanged_healths_stay_the_same_objects() -> None:
    health = running()
    _, after = step(PLAN, (container(),), {("web", 0): health}, NOW)
    assert after[("web", 0)] is health
