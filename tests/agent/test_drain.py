"""Which replica a roll-out drains before it stops it (maas.agent.reconcile.drain), and that a
draining replica is reported not ready (what the gateway routes by)."""

from __future__ import annotations

from maas.agent.api.status import _container
from maas.agent.reconcile.diff import Action
from maas.agent.reconcile.drain import drains
from maas.agent.reconcile.health import ReplicaHealth
from support.observed import observed_container


def ready(container_id: str) -> ReplicaHealth:
    health = ReplicaHealth()
    health.started(container_id, 0.0, "h1")
    health.probe_result(True, 1.0, startup_timeout_s=60)
    return health


def recreate(replica: int, container_id: str) -> Action:
    return Action("recreate", "m", replica, "spec changed", container_id)


def test_a_ready_replica_drains_before_a_roll_out_stops_it() -> None:
    both = {("m", 0): ready("c0"), ("m", 1): ready("c1")}
    assert drains(recreate(0, "c0"), both, 2.0)
    assert not drains(recreate(0, "c0"), both, 0.0)  # drain_s: 0 turns it off
    assert not drains(Action("remove", "m", 0, "removed", "c0"), both, 2.0)
    # The only replica too: what it answers ends, and a backend busy at SIGTERM stops at once.
    assert drains(recreate(0, "c0"), {("m", 0): ready("c0")}, 2.0)
    not_ready_yet = {("m", 0): ReplicaHealth(), ("m", 1): ready("c1")}
    assert not drains(recreate(0, "c0"), not_ready_yet, 2.0)  # not routed to: nothing to drain
    another_container = {("m", 0): ready("c9")}
    assert not drains(recreate(0, "c0"), another_container, 2.0)


def test_a_draining_replica_is_reported_not_ready_until_it_starts_again() -> None:
    health = ready("c0")
    container = observed_container("c0", "m", 0, "h1", name="maas-n-m-0")
    assert _container(container, health).ready is True
    health.draining = True
    health.probe_result(True, 2.0, startup_timeout_s=60)  # probes go on meanwhile
    assert _container(container, health).ready is False
    health.started("c2", 3.0, "h2")
    assert not health.draining
