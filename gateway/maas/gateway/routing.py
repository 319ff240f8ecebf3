"""The gateway's routing decision, as pure code on plain values.

The agent's status report (the contract of maas.compiler.status) becomes a `RouteTable` (model
name or alias -> deployment -> ready replicas). A `Balancer` picks one replica per request: least
outstanding requests first, ties broken round-robin, and replicas that failed mid-flight are
skipped until their ejection ends.
Time is an argument (`now`, seconds on any monotonic clock), so every decision is reproducible in
tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from maas.compiler import ContainerStatus, NodeStatus, OnDemandStatus, parse_status


@dataclass(frozen=True)
class Replica:
    """One ready container of a deployment, addressed by its container id (a restarted
    container gets a new id, so an ejection never outlives the container that failed)."""

    deployment: str
    container_id: str
    index: int
    url: str


@dataclass(frozen=True)
class Route:
    """One deployment as the gateway sees it."""

    name: str
    state: str
    replicas: int
    ready: tuple[Replica, ...]
    aliases: tuple[str, ...] = ()
    backend: str | None = None
    generic_proxy: bool = False
    on_demand: bool = False  # started by the gateway's first request when asleep
    reason: str = ""  # why an on-demand model sleeps or waits
    backend_load_s: float | None = None  # its last wake: replicas started to all ready


@dataclass(frozen=True)
class RouteTable:
    routes: Mapping[str, Route] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)

    def resolve(self, model: str) -> Route | None:
        """The deployment a request's `model` names: its own name first, then an alias."""
        route = self.routes.get(model)
        if route is None and model in self.aliases:
            route = self.routes.get(self.aliases[model])
        return route

    def merged_over(self, older: RouteTable) -> RouteTable:
        """This table, plus the routes of `older` it does not have."""
        routes = {**older.routes, **self.routes}
        aliases = {**older.aliases, **self.aliases}
        return RouteTable(
            routes=routes, aliases={a: n for a, n in aliases.items() if a not in routes}
        )


def _ready_replicas(name: str, containers: Iterable[ContainerStatus], host: str) -> list[Replica]:
    ready = []
    for c in containers:
        if c.ready and c.port is not None and c.port > 0:
            ready.append(Replica(name, c.id, c.replica, f"http://{host}:{c.port}"))
    return sorted(ready, key=lambda r: r.index)


def _on_demand(status: OnDemandStatus | None) -> dict[str, Any]:
    """The Route fields of a deployment's `on_demand` status (absent: always on)."""
    if status is None:
        return {}
    wake = status.wake
    load = (
        max(0.0, wake.ready_at - wake.started_at)
        if wake is not None and wake.started_at is not None and wake.ready_at is not None
        else None
    )
    return {"on_demand": True, "reason": status.reason, "backend_load_s": load}


def route_table_from_status(
    status: NodeStatus | Mapping[str, Any], host: str = "127.0.0.1"
) -> RouteTable:
    """The agent's `GET /v1/status` document (maas.compiler.status) -> RouteTable. Only
    containers the agent reports `ready` are routable; an alias that collides with a deployment
    name loses to the name. A document that does not fit the contract raises MaasError."""
    if not isinstance(status, NodeStatus):
        status = parse_status(status)
    routes: dict[str, Route] = {}
    aliases: dict[str, str] = {}
    for d in status.deployments:
        if d.group is not None and d.group.role == "worker":
            continue  # a distributed group's worker serves its primary, never a client
        name = d.name
        route = Route(
            name=name,
            state=d.state,
            replicas=d.replicas,
            ready=tuple(_ready_replicas(name, d.containers, host)),
            aliases=tuple(d.aliases),
            backend=d.backend,
            generic_proxy=d.generic_proxy,
            **_on_demand(d.on_demand),
        )
        routes[name] = route
        for alias in route.aliases:
            aliases.setdefault(alias, name)
    return RouteTable(routes=routes, aliases={a: n for a, n in aliases.items() if a not in routes})


@dataclass(frozen=True)
class Pick:
    route: Route
    replica: Replica


@dataclass(frozen=True)
class NoReadyReplica:
    """A known model that cannot take a request now; the client may retry after a while."""

    route: Route
    retry_after_s: int


class Balancer:
    """Least-outstanding-requests choice with passive ejection of failed replicas.

    State is two dictionaries keyed by container id; every method takes `now` explicitly.
    """

    def __init__(self, *, eject_s: float = 10.0, retry_after_s: int = 5) -> None:
        self.eject_s = eject_s
        self.retry_after_s = retry_after_s
        self.outstanding: dict[str, int] = {}
        self.ejected_until: dict[str, float] = {}
        self._turn = 0

    def choose_in(
        self, route: Route, now: float, exclude: frozenset[str] = frozenset()
    ) -> Pick | NoReadyReplica:
        usable = [
            r
            for r in route.ready
            if r.container_id not in exclude and self.ejected_until.get(r.container_id, 0) <= now
        ]
        if not usable:
            return NoReadyReplica(route, self._retry_after(route, now))
        # Rotating the starting point spreads ties (idle replicas) evenly instead of always
        # loading the first one.
        self._turn = (self._turn + 1) % len(usable)
        rotated = usable[self._turn :] + usable[: self._turn]
        best = min(rotated, key=lambda r: self.outstanding.get(r.container_id, 0))
        return Pick(route, best)

    def _retry_after(self, route: Route, now: float) -> int:
        ends = [self.ejected_until.get(r.container_id, 0.0) for r in route.ready]
        ends = [end for end in ends if end > now]
        if ends:
            return max(1, math.ceil(min(ends) - now))
        return self.retry_after_s

    def started(self, replica: Replica) -> None:
        self.outstanding[replica.container_id] = self.outstanding.get(replica.container_id, 0) + 1

    def finished(self, replica: Replica) -> None:
        left = self.outstanding.get(replica.container_id, 0) - 1
        if left > 0:
            self.outstanding[replica.container_id] = left
        else:
            self.outstanding.pop(replica.container_id, None)

    def failed(self, replica: Replica, now: float) -> None:
        """A replica that failed mid-flight (refused, reset, timed out) is skipped for eject_s."""
        self.ejected_until[replica.container_id] = now + self.eject_s

    def forget_except(self, table: RouteTable) -> None:
        """Drop ejections of containers that no longer exist, so the map cannot grow forever."""
        live = {r.container_id for route in table.routes.values() for r in route.ready}
        for container_id in [c for c in self.ejected_until if c not in live]:
            del self.ejected_until[container_id]
