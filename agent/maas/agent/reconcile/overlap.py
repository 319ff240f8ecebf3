"""Overlapping roll-outs: a replica's new container starts beside the old one where the node has
the room, and the old one stops only once the new one is ready (issue 20).

Stop-then-start leaves a one-replica deployment without an answer for the stop, the creation,
the load and a gateway poll (bench/results/rollout-gap-2026-12-02.md). Where the node holds both
versions at once, the new container is created next to the old one, which keeps serving (status
reports it ready, so the gateway routes to it); when the new one passes its readiness probe the
old one leaves the routing, drains and is removed. Where there is no room, stop-then-start stays.

Room is the plan's ledger: the plan's totals already hold the new version, so the old one fits
beside it where each of its GPUs, and the host's memory, has at least the old version's estimate
as headroom. An old version whose need is unknown does not overlap (its memory may be all).

Ports (decided here): the plan gives each replica one host port, which the old container holds.
The new one takes a spare port: the lowest of the node's port range that the plan gives no
replica and no container of this node holds. It keeps it until its next change, which takes the
plan's port back (the old container then holds the spare). Status and the gateway follow the
port each container reports; the plan's port is where a replica is most of the time, not always.
The agent compiles with the spare ports its containers hold reserved (`spare_ports`), so a
deployment applied meanwhile is never given one.

An agent restarted in the middle of one finds both containers of the replica running, and no
memory of which serves: `adopted` takes the one of the plan's version for the replica's (it
starts, as after a creation) and the other for the one that serves until then, so the old one
drains and goes once the new one is ready, as if the agent had not restarted.

Pure: the reconciler asks `overlap` before a recreation, `serving_kept` before removals, and
`adopted` and `settle` each pass; it does the engine's work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from maas.agent.reconcile.containers import planned_port
from maas.agent.reconcile.diff import Action, Replica
from maas.agent.reconcile.health import ReplicaHealth
from maas.agent.reconcile.observe import ObservedContainer, Owner
from maas.compiler import Plan, PlanDeployment

GIB = 1 << 30


@dataclass(frozen=True)
class Overlap:
    """Whether a replica's new container may start beside its old one, on which host port, and
    why not where it may not."""

    ok: bool
    reason: str
    port: int | None = None


def overlap(
    plan: Plan,
    new: PlanDeployment,
    old: PlanDeployment | None,
    replica: int,
    *,
    observed: Sequence[ObservedContainer],
    port_range: tuple[int, int],
) -> Overlap:
    """The decision for one recreation of `replica` of `new`, whose running container is of
    version `old` (None: not known, after an agent restart)."""
    if new.security.host_network:
        return Overlap(False, "host network: both versions would listen on one port")
    if new.group is not None:
        return Overlap(False, "a distributed group's member listens where its group expects")
    if old is None:
        return Overlap(False, "the running version's memory is not known")
    short = _short(plan, old)
    if short:
        return Overlap(False, short)
    port = _port(plan, new, replica, observed, port_range)
    if port is None:
        return Overlap(False, f"no spare port in {port_range[0]}-{port_range[1]}")
    return Overlap(True, "room for both versions", port)


def overlaps(
    plan: Plan,
    actions: Sequence[Action],
    observed: Sequence[ObservedContainer],
    known: Sequence[PlanDeployment],
    *,
    port_range: tuple[int, int],
) -> dict[Action, Overlap]:
    """The decision for each recreation of a running container; `known`: the versions the
    agent has seen (the last pass's plan, the last good ones), where the old one is looked up
    by the spec hash its container carries."""
    running = {c.id: c for c in observed if c.running}
    decided: dict[Action, Overlap] = {}
    for action in actions:
        new = plan.deployment(action.deployment)
        container = running.get(action.container_id or "")
        if action.kind != "recreate" or new is None or container is None:
            continue
        old = next(
            (d for d in known if d.name == new.name and d.spec_hash == container.spec_hash), None
        )
        decided[action] = overlap(
            plan, new, old, action.replica, observed=observed, port_range=port_range
        )
    return decided


def beside_name(owner: Owner, new: PlanDeployment, replica: int) -> str:
    """The name of a new container that starts beside the old one of its replica (which holds
    the plain name): the plain name and the version's spec hash."""
    digest = new.spec_hash.rsplit(":", 1)[-1][:12]
    return f"{owner.container_name(new.name, replica)}-{digest}"


def _short(plan: Plan, old: PlanDeployment) -> str | None:
    """Why the old version's one replica does not fit beside the plan; None where it does."""
    totals = {t.uuid: t for t in plan.totals if t.uuid}
    vram = dict(zip(old.placement.gpus, old.estimate.vram_bytes, strict=False))
    for uuid in old.placement.gpus:
        total = totals.get(uuid)
        need = vram.get(uuid)
        if total is None or need is None:
            return f"the old version's need on GPU {uuid} is not known"
        if need > total.headroom_bytes:
            return (
                f"{total.device} has {max(0, total.headroom_bytes) / GIB:.1f} GiB of headroom, "
                f"the old version holds {need / GIB:.1f} GiB"
            )
    host = next((t for t in plan.totals if t.device == "host"), None)
    ram = max(old.estimate.ram_bytes or 0, old.limits.memory_bytes or 0)
    if host is None or (old.estimate.ram_bytes is None and old.limits.memory_bytes is None):
        return "the old version's host memory is not known"
    if ram > host.headroom_bytes:
        return (
            f"host memory has {max(0, host.headroom_bytes) / GIB:.1f} GiB of headroom, "
            f"the old version holds {ram / GIB:.1f} GiB"
        )
    return None


def _port(
    plan: Plan,
    new: PlanDeployment,
    replica: int,
    observed: Sequence[ObservedContainer],
    port_range: tuple[int, int],
) -> int | None:
    """The plan's port where no container holds it, else the lowest spare of the range."""
    held = {c.port for c in observed if c.port is not None}
    if planned_port(new, replica) not in held:
        return planned_port(new, replica)
    given = {p for d in plan.deployments for p in d.ports}
    low, high = port_range
    return next((p for p in range(low, high + 1) if p not in held | given), None)


def serving_kept(
    actions: Sequence[Action],
    healths: Mapping[Replica, ReplicaHealth],
    observed: Sequence[ObservedContainer],
) -> list[Action]:
    """`actions` without the removal of an old container that serves while its replica's new
    container is not ready yet (the diff sees it as a duplicate of the new one)."""
    running = {c.id for c in observed if c.running}
    kept = []
    for action in actions:
        health = healths.get((action.deployment, action.replica))
        if (
            action.kind == "remove"
            and health is not None
            and health.serving is not None
            and action.container_id == health.serving
            and not (health.ready and health.container_id in running)
        ):
            continue
        kept.append(action)
    return kept


def settle(
    plan: Plan, observed: Sequence[ObservedContainer], healths: Mapping[Replica, ReplicaHealth]
) -> dict[Replica, ReplicaHealth]:
    """Healths after the pass's look at overlapping roll-outs: an old container that is gone is
    no longer kept; one whose version the plan wants again (the new one was rolled back, or the
    change undone) is the replica's container again, ready as it was."""
    by_id = {c.id: c for c in observed}
    hashes = {d.name: d.spec_hash for d in plan.deployments}
    after: dict[Replica, ReplicaHealth] = {}
    for key, health in healths.items():
        if health.serving is None:
            continue
        old = by_id.get(health.serving)
        if old is None or not old.running:
            after[key] = dataclasses.replace(health, serving=None)
        elif hashes.get(key[0]) == old.spec_hash and health.container_id != old.id:
            after[key] = dataclasses.replace(
                health,
                container_id=old.id,
                spec_hash=old.spec_hash,
                serving=None,
                ready=True,
                phase="running",
                draining=False,
            )
    return after


def adopted(
    plan: Plan,
    observed: Sequence[ObservedContainer],
    healths: Mapping[Replica, ReplicaHealth],
    now: float,
) -> dict[Replica, ReplicaHealth]:
    """Healths for the overlapping roll-outs an agent finds in progress when it starts: a
    replica it knows nothing of, with two running containers, one of the plan's version."""
    hashes = {d.name: d.spec_hash for d in plan.deployments}
    running: dict[Replica, list[ObservedContainer]] = {}
    for c in observed:
        if c.running:
            running.setdefault((c.deployment, c.replica), []).append(c)
    after: dict[Replica, ReplicaHealth] = {}
    for key, found in running.items():
        known = healths.get(key)
        if len(found) != 2 or (known is not None and known.container_id is not None):
            continue
        new = [c for c in found if c.spec_hash == hashes.get(key[0])]
        old = [c for c in found if c.spec_hash != hashes.get(key[0])]
        if len(new) == 1 and len(old) == 1:
            health = dataclasses.replace(known or ReplicaHealth(), serving=old[0].id)
            health.started(new[0].id, now, new[0].spec_hash)
            after[key] = health
    return after


def spare_ports(observed: Sequence[ObservedContainer], plan: Plan | None) -> frozenset[int]:
    """The ports containers of this node hold that `plan` (the last one) gives no replica;
    none without a last plan (containers adopted after the state was lost keep their ports)."""
    if plan is None:
        return frozenset()
    given = {p for d in plan.deployments for p in d.ports}
    return frozenset(c.port for c in observed if c.port is not None and c.port not in given)
