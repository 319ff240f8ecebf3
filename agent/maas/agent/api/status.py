"""The status report `maasctl status` and the gateway read (maas.compiler.status, the contract):
Plan + Observed + replica health, from a snapshot of the node."""

from __future__ import annotations

from maas.agent.reconcile.groups import group_status
from maas.agent.reconcile.health import ReplicaHealth
from maas.agent.reconcile.observe import ObservedContainer
from maas.agent.reconcile.snapshot import NodeSnapshot
from maas.compiler import (
    PHASES,
    ActionStatus,
    CachedModel,
    ContainerStatus,
    DeploymentStatus,
    DiagnosticStatus,
    ForeignGpuProcess,
    KeptContainer,
    NodeStatus,
    PassStatus,
    Phase,
    PlanDeployment,
    Preparing,
    ProgressBar,
    RemovalError,
    ReplicaStatus,
    RollBack,
    SourceStatus,
    TaskStatus,
)
from maas.host.progress import Progress

Healths = dict[tuple[str, int], ReplicaHealth]


def _phase(name: str) -> Phase:
    return next((p for p in PHASES if p == name), "pending")


def _container(c: ObservedContainer, health: ReplicaHealth | None) -> ContainerStatus:
    return ContainerStatus(
        id=c.id[:12],
        replica=c.replica,
        state=c.state,
        port=c.port,
        restarts=health.restarts if health else 0,
        rollouts=health.rollouts if health else 0,
        ready=bool(
            health
            and c.running
            and (
                (health.ready and not health.draining and health.container_id == c.id)
                or health.serving == c.id  # an old version that serves while the new one starts
            )
        ),
        spec_hash=c.spec_hash,
    )


def _bar(h: ReplicaHealth, budget_s: float, now: float) -> ProgressBar | None:
    """The replica's work in figures: the pull or download going on, or the startup budget."""
    if h.phase in ("pulling", "downloading") and isinstance(h.bar, Progress):
        return ProgressBar.model_validate(h.bar.as_dict())
    if h.phase == "starting" and h.started_at is not None:
        elapsed = round(max(0.0, now - h.started_at), 1)
        return ProgressBar(what="startup", done=elapsed, total=budget_s, unit="s")
    return None


def _replica(
    index: int, health: ReplicaHealth | None, now: float, budget_s: float
) -> ReplicaStatus:
    """What the agent knows of one replica, container or not (a failed pull has none)."""
    h = health or ReplicaHealth()
    return ReplicaStatus(
        replica=index,
        phase=_phase(h.phase),
        spec_hash=h.spec_hash,
        attempts=h.attempts,
        last_error=h.last_error,
        permanent=h.permanent,
        crash_loop=h.crash_loop,
        next_retry_at=h.next_retry_at(now),
        restarts=h.restarts,
        rollouts=h.rollouts,
        progress=_bar(h, budget_s, now),
    )


def deployment_status(
    planned: PlanDeployment,
    observed: list[ObservedContainer] | tuple[ObservedContainer, ...],
    health: Healths,
    now: float,
) -> DeploymentStatus:
    mine = [c for c in observed if c.deployment == planned.name and c.replica < planned.replicas]
    containers = [_container(c, health.get((c.deployment, c.replica))) for c in mine]
    # A container of an older spec hash is about to be recreated: it does not count as ready.
    ready = sum(1 for c in containers if c.ready and c.spec_hash == planned.spec_hash)
    replica_health = [health.get((planned.name, r)) for r in range(planned.replicas)]
    phases = [_phase(h.phase) if h else "pending" for h in replica_health]
    errors = [h.last_error for h in replica_health if h and h.last_error]
    state: Phase
    if (planned.replicas and ready == planned.replicas) or planned.replicas == 0:
        state = "running"
    else:
        state = min((p for p in phases if p != "running"), key=PHASES.index, default="starting")
    progress = next(
        (
            h.progress
            for h in replica_health
            if h and h.progress and h.phase in ("pulling", "downloading")
        ),
        None,
    )
    budget = float(planned.health.startup_timeout_s)
    replica_states = [_replica(r, h, now, budget) for r, h in enumerate(replica_health)]
    return DeploymentStatus(
        name=planned.name,
        state=state,
        replicas=planned.replicas,
        ready_replicas=ready,
        last_error=errors[0] if errors else None,
        progress=progress,
        backend=planned.backend,
        image=planned.image,
        aliases=list(planned.aliases),
        generic_proxy=planned.generic_proxy,
        spec_hash=planned.spec_hash,
        gpus=list(planned.placement.gpus),
        containers=containers,
        replica_states=replica_states,
        progress_bar=next((r.progress for r in replica_states if r.progress), None),
    )


def _preparing(snapshot: NodeSnapshot) -> list[Preparing]:
    """New versions still being pulled or downloaded (a job that ended meanwhile is left out:
    the next pass acts on it)."""
    return [
        Preparing(
            deployment=name,
            phase=job.phase,
            progress=job.progress,
            progress_bar=_progress_bar(job.bar),
        )
        for name, job in sorted(snapshot.preparing.items())
        if job.phase in ("pulling", "downloading")
    ]


def _progress_bar(bar: Progress | None) -> ProgressBar | None:
    return ProgressBar.model_validate(bar.as_dict()) if bar is not None else None


def _deployments(snapshot: NodeSnapshot, now: float) -> list[DeploymentStatus]:
    plan = snapshot.plan
    healths = dict(snapshot.healths)
    report = []
    for planned in plan.deployments if plan else []:
        status = deployment_status(planned, snapshot.observed, healths, now)
        if planned.group is not None:
            waiting = snapshot.group_waiting.get(planned.name, ())
            status = status.model_copy(update={"group": group_status(planned.group, waiting)})
        job = snapshot.preparing.get(planned.name)
        busy = job is not None and job.phase in ("pulling", "downloading")
        if job is not None and busy and status.state != "running":
            # The new version is pulled or downloaded while the old container serves.
            status = status.model_copy(
                update={
                    "state": _phase(job.phase),
                    "progress": job.progress,
                    "progress_bar": _progress_bar(job.bar),
                }
            )
        report.append(status)
    return report


def status_report(
    snapshot: NodeSnapshot,
    *,
    now: float,
    warnings: list[DiagnosticStatus],
    tasks: dict[str, TaskStatus],
    source: SourceStatus | None,
) -> NodeStatus:
    """The node's status document from a snapshot of it and the daemon's own facts."""
    last = snapshot.last
    planned = {d.name for d in snapshot.plan.deployments} if snapshot.plan else set()
    removing = sorted({c.deployment for c in snapshot.observed if c.deployment not in planned})
    kept: list[KeptContainer] | None = None
    if snapshot.refused:
        # Not "removing": the agent keeps them while it cannot read what is wanted. The
        # gateway keeps its last routes while it reads this.
        kept = [
            KeptContainer(
                deployment=c.deployment, replica=c.replica, id=c.id[:12], state=c.state, port=c.port
            )
            for c in snapshot.observed
            if c.deployment in removing
        ]
        removing = []
    return NodeStatus(
        node=snapshot.node_name,
        applied_at=snapshot.applied_at,
        errors=[DiagnosticStatus.model_validate(d.as_dict()) for d in snapshot.errors],
        warnings=warnings,
        tasks=tasks,
        last_pass=PassStatus(
            at=last.started,
            duration_s=round(last.duration_s, 4),
            ok=last.ok,
            actions=[
                ActionStatus.model_validate(a.__dict__) for a in last.actions if a.kind != "noop"
            ],
        ),
        source=source,
        removal_errors={
            name: RemovalError.model_validate(problem)
            for name, problem in snapshot.removal_errors.items()
        },
        gpu_foreign=[ForeignGpuProcess.model_validate(p.as_dict()) for p in snapshot.foreign],
        cache=[CachedModel.model_validate(m) for m in snapshot.cache_usage],
        rolled_back={
            name: RollBack(failed_spec_hash=bad, running_spec_hash=good.spec_hash, reason=why)
            for name, (bad, good, why) in sorted(snapshot.rollbacks.items())
        },
        preparing=_preparing(snapshot),
        deployments=_deployments(snapshot, now),
        removing=removing,
        # Before the first pass, an empty list means "not read yet", not "nothing".
        desired="refused" if snapshot.refused else "pending" if snapshot.passes == 0 else None,
        kept=kept,
    )
