"""The pure decision: Plan x Observed -> the Actions that move Observed towards the Plan.

Removals and stops come first (they free GPUs and ports), then recreations (stop before create,
because GPUs are exclusive), then starts and creations. A replica the caller holds back
(crash-loop back-off) gets a noop with that reason instead of a start.

An on-demand deployment that sleeps (`asleep`: its planned version, while the plan acted on has
it at 0 replicas) keeps its containers of the planned spec hash, stopped: a wake is then one
start of the kept container instead of a create (and an eviction one stop instead of a remove),
which is most of the platform's share of a wake (bench/results/ondemand-2026-12-02.md). A kept
container of an older spec hash, or of a replica beyond the planned count, is removed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from maas.agent.reconcile.observe import ObservedContainer
from maas.compiler import Plan, PlanDeployment

ActionKind = Literal["create", "recreate", "start", "stop", "remove", "noop"]
ORDER: dict[ActionKind, int] = {
    "remove": 0,
    "stop": 0,
    "recreate": 1,
    "start": 2,
    "create": 3,
    "noop": 4,
}
Replica = tuple[str, int]


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    deployment: str
    replica: int
    reason: str
    container_id: str | None = None


def diff(
    plan: Plan,
    observed: Sequence[ObservedContainer],
    held: Collection[Replica] = (),
    asleep: Mapping[str, PlanDeployment] | None = None,
) -> list[Action]:
    asleep = asleep or {}
    wanted: dict[Replica, PlanDeployment] = {
        (d.name, r): d for d in plan.deployments for r in range(d.replicas)
    }
    kept: dict[Replica, PlanDeployment] = {
        (d.name, r): d for d in asleep.values() for r in range(d.replicas)
    }
    by_replica: dict[Replica, list[ObservedContainer]] = {}
    sleeping: dict[Replica, list[ObservedContainer]] = {}
    actions: list[Action] = []
    for container in observed:
        key = (container.deployment, container.replica)
        if key in kept and key not in wanted:
            sleeping.setdefault(key, []).append(container)
        elif key not in wanted:
            why = (
                "deployment removed"
                if container.deployment not in {d.name for d in plan.deployments}
                else "replica no longer wanted"
            )
            actions.append(Action("remove", *key, why, container.id))
        else:
            by_replica.setdefault(key, []).append(container)
    for key in sorted(wanted):
        actions.extend(_replica(key, wanted[key], by_replica.get(key, []), key in held))
    for key in sorted(k for k in kept if k not in wanted):
        actions.extend(_asleep(key, kept[key], sleeping.get(key, [])))
    return sorted(actions, key=lambda a: (ORDER[a.kind], a.deployment, a.replica))


def _replica(
    key: Replica, planned: PlanDeployment, found: list[ObservedContainer], held: bool
) -> list[Action]:
    if not found:
        # A create that failed (port taken, start error) backs off like a crash does.
        if held:
            return [Action("noop", *key, "no container; backing off")]
        return [Action("create", *key, "no container")]
    # Prefer a container with the planned hash, then a running one: duplicates are removed.
    found = sorted(found, key=lambda c: (c.spec_hash != planned.spec_hash, not c.running, c.id))
    keep, extra = found[0], found[1:]
    actions = [Action("remove", *key, "duplicate container", c.id) for c in extra]
    if keep.spec_hash != planned.spec_hash:
        reason = f"spec hash {keep.spec_hash or 'missing'} -> {planned.spec_hash}"
        actions.append(Action("recreate", *key, reason, keep.id))
    elif keep.running:
        actions.append(Action("noop", *key, "up to date", keep.id))
    elif held:
        actions.append(Action("noop", *key, f"{keep.state}; backing off", keep.id))
    else:
        actions.append(
            Action("start", *key, f"container {keep.state} (exit code {keep.exit_code})", keep.id)
        )
    return actions


def _asleep(key: Replica, planned: PlanDeployment, found: list[ObservedContainer]) -> list[Action]:
    """A sleeping replica: its container of the planned spec hash kept and stopped, the others
    removed; without one, nothing until a request wakes it (the preview says so)."""
    current = sorted(
        (c for c in found if c.spec_hash == planned.spec_hash), key=lambda c: (c.running, c.id)
    )
    old = [c for c in found if c.spec_hash != planned.spec_hash]
    actions = [
        Action("remove", *key, f"asleep; spec hash {c.spec_hash or 'missing'} is not planned", c.id)
        for c in old
    ]
    actions += [Action("remove", *key, "duplicate container", c.id) for c in current[1:]]
    if not current:
        actions.append(Action("noop", *key, "asleep; a request creates it"))
    elif current[0].running:
        actions.append(Action("stop", *key, "asleep; container kept, stopped", current[0].id))
    else:
        actions.append(Action("noop", *key, "asleep; container kept, stopped", current[0].id))
    return actions
