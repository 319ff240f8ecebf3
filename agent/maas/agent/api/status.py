"""The status report `maasctl status` and the gateway read: Plan + Observed + replica health."""

from __future__ import annotations

import time
from typing import Any

from maas.agent.reconcile.groups import GroupGate, group_status
from maas.agent.reconcile.health import ReplicaHealth
from maas.agent.reconcile.observe import ObservedContainer
from maas.compiler.plan import Plan, PlanDeployment
from maas.host.progress import Progress

PHASE_ORDER = ("failed", "pulling", "downloading", "pending", "starting", "running")


def _container(c: ObservedContainer, health: ReplicaHealth | None) -> dict[str, Any]:
    return {
        "id": c.id[:12],
        "replica": c.replica,
        "state": c.state,
        "port": c.port,
        "restarts": health.restarts if health else 0,
        "rollouts": health.rollouts if health else 0,
        "ready": bool(health and health.ready and c.running and health.container_id == c.id),
        "spec_hash": c.spec_hash,
    }


def _bar(h: ReplicaHealth, budget_s: float, now: float) -> dict[str, Any] | None:
    """The replica's work in figures: the pull or download going on, or the startup budget."""
    if h.phase in ("pulling", "downloading") and isinstance(h.bar, Progress):
        return h.bar.as_dict()
    if h.phase == "starting" and h.started_at is not None:
        elapsed = round(max(0.0, now - h.started_at), 1)
        return Progress("startup", elapsed, budget_s, "s").as_dict()
    return None


def _replica(
    index: int, health: ReplicaHealth | None, now: float, budget_s: float
) -> dict[str, Any]:
    """What the agent knows of one replica, container or not (a failed pull has none)."""
    h = health or ReplicaHealth()
    return {
        "replica": index,
        "phase": h.phase,
        "spec_hash": h.spec_hash,
        "attempts": h.attempts,
        "last_error": h.last_error,
        "permanent": h.permanent,
        "crash_loop": h.crash_loop,
        "next_retry_at": h.next_retry_at(now),
        "restarts": h.restarts,
        "rollouts": h.rollouts,
        "progress": _bar(h, budget_s, now),
    }


def deployment_status(
    planned: PlanDeployment,
    observed: list[ObservedContainer],
    health: dict[tuple[str, int], ReplicaHealth],
    now: float | None = None,
    groups: GroupGate | None = None,
) -> dict[str, Any]:
    mine = [c for c in observed if c.deployment == planned.name and c.replica < planned.replicas]
    containers = [_container(c, health.get((c.deployment, c.replica))) for c in mine]
    # A container of an older spec hash is about to be recreated: it does not count as ready.
    ready = sum(1 for c in containers if c["ready"] and c["spec_hash"] == planned.spec_hash)
    replica_health = [health.get((planned.name, r)) for r in range(planned.replicas)]
    phases = [h.phase if h else "pending" for h in replica_health]
    errors = [h.last_error for h in replica_health if h and h.last_error]
    if (planned.replicas and ready == planned.replicas) or planned.replicas == 0:
        state = "running"
    else:
        state = min(
            (p for p in phases if p != "running"), key=PHASE_ORDER.index, default="starting"
        )
    progress = next(
        (
            h.progress
            for h in replica_health
            if h and h.progress and h.phase in ("pulling", "downloading")
        ),
        None,
    )
    at = time.time() if now is None else now
    budget = float(planned.health.startup_timeout_s)
    replica_states = [_replica(r, h, at, budget) for r, h in enumerate(replica_health)]
    return {
        "name": planned.name,
        "state": state,
        "replicas": planned.replicas,
        "ready_replicas": ready,
        "last_error": errors[0] if errors else None,
        "progress": progress,
        "backend": planned.backend,
        "image": planned.image,
        "aliases": list(planned.aliases),
        "generic_proxy": planned.generic_proxy,
        "spec_hash": planned.spec_hash,
        "gpus": list(planned.placement.gpus),
        "containers": containers,
        "replica_states": replica_states,
        "progress_bar": next((r["progress"] for r in replica_states if r["progress"]), None),
        "group": group_status(planned.group, groups or GroupGate(), planned.name),
    }


def status_report(
    node: str,
    plan: Plan | None,
    observed: list[ObservedContainer],
    health: dict[tuple[str, int], ReplicaHealth],
    extra: dict[str, Any],
    *,
    groups: GroupGate | None = None,
) -> dict[str, Any]:
    deployments = [
        deployment_status(d, observed, health, groups=groups)
        for d in (plan.deployments if plan else [])
    ]
    planned = {d.name for d in plan.deployments} if plan else set()
    removing = sorted({c.deployment for c in observed if c.deployment not in planned})
    return {"node": node, **extra, "deployments": deployments, "removing": removing}
