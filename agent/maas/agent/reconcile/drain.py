"""Draining a replica before a roll-out stops it: it leaves the routing first.

The gateway routes by the status report, which it polls (maas.gateway.source, every
`poll_interval_s`, 1 s by default), so a replica stopped the moment it is replaced still gets
requests for up to one poll, and the ones it is answering are cut ("the connection closed before
the response"). A draining replica is reported not ready while it still runs, for `drain_s`:
the gateway stops sending to it and what it answers ends, as the other replicas serve. The only
replica drains too: its gap grows by `drain_s`, but the requests it answers end instead of being
cut, and a backend that waits for a busy slot on SIGTERM (llama-server with --parallel 1 under
load: docker stop took 4.6 s of a 5 s timeout, 0.4 s idle) stops at once rather than at the
agent's stop timeout (30 s by default); bench/results/rollout-gap-2026-12-02.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from maas.agent.reconcile.diff import Action, Replica
from maas.agent.reconcile.health import ReplicaHealth


def drains(action: Action, health: Mapping[Replica, ReplicaHealth], drain_s: float) -> bool:
    """Whether the replica `action` stops drains first: a recreation (a roll-out) of a ready
    replica."""
    if action.kind != "recreate" or not action.container_id or drain_s <= 0:
        return False
    own = health.get((action.deployment, action.replica))
    return own is not None and own.ready and own.container_id == action.container_id
