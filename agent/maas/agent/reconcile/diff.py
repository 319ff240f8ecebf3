"""The pure decision: Plan x Observed -> the Actions that move Observed towards the Plan.

Removals come first (they free GPUs and ports), then recreations (stop before create, because GPUs
are exclusive), then starts and creations. A replica the caller holds back (crash-loop back-off)
gets a noop with that reason instead of a start.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from maas.agent.reconcile.observe import ObservedContainer
from maas.compiler.plan import Plan, PlanDeployment

ActionKind = Literal["create", "recreate", "start", "remove", "noop"]
ORDER: dict[ActionKind, int] = {"remove": 0, "recreate": 1, "start": 2, "create": 3, "noop": 4}
Replica = tuple[str, int]


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    deployment: str
    replica: int
    reason: str
    container_id: str | None = None


def diff(
    plan: Plan, observed: Sequence[ObservedContainer], held: Collection[Replica] = ()
) -> list[Action]:
    wanted: dict[Replica, PlanDeployment] = {
        (d.name, r): d for d in plan.deployments for r in range(d.replicas)
    }
    by_replica: dict[Replica, list[ObservedContainer]] = {}
    actions: list[Action] = []
    for container in observed:
        key = (container.deployment, container.replica)
        if key not in wanted:
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
