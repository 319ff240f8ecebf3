"""The gateway's routing decision, as pure code on plain values.

The agent's status report becomes a `RouteTable` (model name or alias -> deployment -> ready
replicas). A `Balancer` picks one replica per request: least outstanding requests first, ties
broken round-robin, and replicas that failed mid-flight are skipped until their ejection ends.
Time is an argument (`now`, seconds on any monotonic clock), so every decision is reproducible in
tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


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


def _ready_replicas(name: str, containers: Iterable[Mapping[str, Any]], host: str) -> list[Replica]:
    ready = []
    for c in containers:
        port = c.get("port")
        if c.get("ready") is True and isinstance(port, int) and port > 0:
            url = f"http://{host}:{port}"
            ready.append(Replica(name, str(c.get("id", "")), int(c.get("replica", 0)), url))
    return sorted(ready, key=lambda r: r.index)


def route_table_from_status(status: Mapping[str, Any], host: str = "127.0.0.1") -> RouteTable:
    """The agent's `GET /v1/status` document -> RouteTable. Only containers the agent reports
    `ready` are routable; an alias that collides with a deployment name loses to the name."""
    routes: dict[str, Route] = {}
    aliases: dict[str, str] = {}
    for d in status.get("deployments") or []:
        if (d.get("group") or {}).get("role") == "worker":
            continue  # a distributed group's worker serves its primary, never a client
        name = str(d["name"])
        route = Route(
            name=name,
            state=str(d.get("state", "pending")),
            replicas=int(d.get("replicas", 0)),
            ready=tuple(_ready_replicas(name, d.get("containers") or [], host)),
            aliases=tuple(str(a) for a in d.get("aliases") or []),
            backend=d.get("backend"),
            generic_proxy=bool(d.get("generic_proxy", False)),
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


@dataclass(frozen=True)
class UnknownModel:
    model: str


Decision = Pick | NoReadyReplica | UnknownModel


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

    def choose(
        self, table: RouteTable, model: str, now: float, exclude: frozenset[str] = frozenset()
    ) -> Decision:
        route = table.resolve(model)
        if route is None:
            return UnknownModel(model)
        return self.choose_in(route, now, exclude)

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
