"""One reconcile pass's decision as a value: (plan, observed, healths, now) -> (actions, healths').

Pure: no engine, no clock, no logging, and the healths passed in are never changed (a replica
whose health advances gets a new ReplicaHealth in the returned mapping; the others are the same
objects). The reconciler calls it with what it observed and the time it read once, then executes
the actions (and what it learned doing so) on the engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from maas.agent.reconcile.diff import Action, Replica, diff
from maas.agent.reconcile.health import ReplicaHealth
from maas.agent.reconcile.observe import ObservedContainer
from maas.compiler import Plan, PlanDeployment

Healths = Mapping[Replica, ReplicaHealth]


def _noticed(health: ReplicaHealth, container: ObservedContainer, now: float) -> ReplicaHealth:
    """The replica's health after seeing its container: adopted, crashed, or as it was."""
    if health.container_id is None:
        # Adopted after an agent restart: trust Docker's view of it.
        return dataclasses.replace(
            health,
            container_id=container.id,
            started_at=now,
            spec_hash=container.spec_hash,
            phase="starting" if container.running else "failed",
        )
    if (
        container.id == health.container_id
        and not container.running
        and health.phase in ("starting", "running")
    ):
        crashed = dataclasses.replace(health)
        crashed.fail(
            f"container {container.state} with exit code {container.exit_code}"
            + (f": {container.error}" if container.error else ""),
            now,
            "crash",
        )
        return crashed
    return health


def notice(
    observed: Sequence[ObservedContainer], healths: Healths, now: float
) -> dict[Replica, ReplicaHealth]:
    """Healths after seeing the containers: crashes recorded (with back-off), containers of an
    earlier agent adopted. Noticing twice changes nothing more."""
    after = dict(healths)
    for container in observed:
        key = (container.deployment, container.replica)
        after[key] = _noticed(after.get(key) or ReplicaHealth(), container, now)
    return after


def held(
    key: Replica, health: ReplicaHealth, planned: Mapping[str, PlanDeployment], now: float
) -> bool:
    """Whether the replica waits this pass (back-off, or a permanent failure of this spec)."""
    if health.refused:
        return False  # re-checked quietly each pass: fixing the host is enough
    if health.permanent:
        # Held for good, but only the spec that failed: a new spec is tried at once.
        wanted = planned.get(key[0])
        return wanted is None or wanted.spec_hash == health.spec_hash
    return health.held(now)


def step(
    plan: Plan,
    observed: Sequence[ObservedContainer],
    healths: Healths,
    now: float,
    asleep: Mapping[str, PlanDeployment] | None = None,
) -> tuple[list[Action], dict[Replica, ReplicaHealth]]:
    """The actions that bring `observed` to `plan` at `now`, and the healths they start from;
    `asleep`: on-demand deployments that sleep, whose containers are kept stopped (diff)."""
    after = notice(observed, healths, now)
    planned = {d.name: d for d in plan.deployments}
    waiting = {k for k, h in after.items() if held(k, h, planned, now)}
    return diff(plan, observed, waiting, asleep), after
