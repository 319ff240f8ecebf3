"""Draining a replica before a roll-out stops it: it leaves the routing first.

The gateway routes by the status report, which it polls (maas.gateway.source, every
`poll_interval_s`, 1 s by default), so a replica stopped the moment it is replaced still gets
requests for up to one poll, and the ones it is answering are cut ("the connection closed before
the response"). A draining replica is reported not ready while it still runs, for `drain_s`:
the gateway stops sending to it and what it answers ends, as the other replicas serve. Only
where another replica of the deployment is ready: the only replica's drain would turn the
requests it could still answer into refusals and lengthen the gap of a one-replica change.
"""

from __future__ import annotations

from collections.abc import Mapping

from maas.agent.reconcile.diff import Action, Replica
from maas.agent.reconcile.health import ReplicaHealth


def drains(action: Action, health: Mapping[Replica, ReplicaHealth], drain_s: float) -> bool:
    """Whether the replica `action` stops drains first: a recreation (a roll-out) of a ready
    replica while another replica of its deployment is ready to take its requests."""
    if action.kind != "recreate" or not action.container_id or drain_s <= 0:
        return False
    own = health.get((action.deployment, action.replica))
    if own is None or not own.ready or own.container_id != action.container_id:
        return False
    return any(
        h.ready and not h.draining
        for (deployment, replica), h in health.items()
        if deployment == action.deployment and replica != action.replica
    )
