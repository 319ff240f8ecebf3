"""The agent's API for on-demand deployments (issue 18): wake one, take the gateway's activity
reports, and the `on_demand` part of each deployment's status.

`POST /v1/wake/{name}` asks for a sleeping deployment's replicas (answered at once: the caller
polls the status until a replica is ready); `POST /v1/activity` takes the gateway's report
`{"models": {name: {"in_flight": n, "queued": q, "idle_s": s}}}`
(maas.agent.reconcile.ondemand says why).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from maas.agent.reconcile.ondemand import DemandBook, facts
from maas.agent.reconcile.snapshot import NodeSnapshot
from maas.compiler import NodeStatus, OnDemandStatus

MAX_MODELS = 10_000


class DemandApi:
    def __init__(self, agent: Any, body: Any) -> None:
        self.agent = agent  # maas.agent.daemon.Agent
        self.body = body  # the API's JSON body reader (time limit, errors)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/wake/{name}", self.wake), web.post("/v1/activity", self.activity)]

    async def wake(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        reconciler = self.agent.reconciler
        plan = reconciler.snapshot.plan
        planned = plan.deployment(name) if plan is not None else None
        if planned is None:
            return web.json_response(
                {"error": f"no deployment named '{name}'", "diagnostics": []}, status=404
            )
        if planned.on_demand is None:
            return web.json_response({"name": name, "on_demand": False})
        reconciler.demand.wake(name, time.time())
        self.agent.wake()
        return web.json_response({"name": name, "on_demand": True, "state": "waking"})

    async def activity(self, request: web.Request) -> web.Response:
        body = await self.body(request)
        models = body.get("models")
        if not isinstance(models, dict) or len(models) > MAX_MODELS:
            raise web.HTTPBadRequest(reason="'models' must map deployment names to activity")
        report: dict[str, tuple[float, int, int]] = {}
        for name, entry in models.items():
            try:
                idle_s, in_flight = float(entry["idle_s"]), int(entry["in_flight"])
                queued = int(entry.get("queued", 0))  # an older gateway does not say
            except (TypeError, KeyError, ValueError, AttributeError):
                raise web.HTTPBadRequest(
                    reason=f"activity of '{name}' needs numbers idle_s and in_flight"
                ) from None
            if idle_s < 0 or in_flight < 0 or queued < 0:
                raise web.HTTPBadRequest(reason=f"activity of '{name}' must not be negative")
            if queued > in_flight:
                raise web.HTTPBadRequest(
                    reason=f"activity of '{name}': queued requests are counted in in_flight"
                )
            report[str(name)] = (idle_s, in_flight, queued)
        book = self.agent.reconciler.demand
        now = time.time()
        book.report(report, now)
        if book.due(now):
            self.agent.wake()  # an idle deployment is put to sleep now, not at the next resync
        return web.json_response({"accepted": len(report)})


def add_demand_status(
    report: NodeStatus, snapshot: NodeSnapshot, book: DemandBook, now: float
) -> NodeStatus:
    """Each on-demand deployment's `on_demand` status; its `state` becomes `sleeping` or
    `waking` while it has no ready replica because of that (the gateway then wakes it)."""
    plan = snapshot.plan
    if plan is None:
        return report
    _, times = facts(plan, list(snapshot.observed), dict(snapshot.healths))
    deployments = []
    for d in report.deployments:
        shown = book.status_of(d.name, times.get(d.name, (None, None)), now)
        if shown is None:
            deployments.append(d)
            continue
        demand = OnDemandStatus.model_validate(shown)
        state = d.state
        if demand.state == "sleeping" or (demand.state == "waking" and d.state == "running"):
            state = demand.state  # type: ignore[assignment]  # both are deployment states
        elif demand.state == "yielding":
            state = "waking"  # its next ready replica comes after a wake: the gateway holds
        deployments.append(d.model_copy(update={"on_demand": demand, "state": state}))
    return report.model_copy(update={"deployments": deployments})


class DemandCollector(Collector):
    """maas_agent_on_demand_*: cold starts, stops by reason, backend load, deployments by
    state (issue 18); the gateway has the requests' side (maas_gateway_wake_*)."""

    def __init__(self, book: DemandBook) -> None:
        self.book = book

    def collect(self) -> Any:
        book = self.book
        with book.lock:
            counts = dict(book.counts)
            load_count, load_sum = book.load_total
            states = [s.state for s in book.states.values()]
        yield CounterMetricFamily(
            "maas_agent_on_demand_cold_starts",
            "On-demand deployments started by a request",
            value=counts.get("cold_starts", 0),
        )
        stops = CounterMetricFamily(
            "maas_agent_on_demand_stops",
            "On-demand deployments stopped, by reason (idle, evicted for another of its group)",
            labels=["reason"],
        )
        stops.add_metric(["idle"], counts.get("idle_stops", 0))
        stops.add_metric(["evicted"], counts.get("evictions", 0))
        yield stops
        yield SummaryMetricFamily(
            "maas_agent_on_demand_backend_load_seconds",
            "A woken deployment's own load: its replicas started to all ready",
            count_value=load_count,
            sum_value=load_sum,
        )
        by_state = GaugeMetricFamily(
            "maas_agent_on_demand_deployments", "On-demand deployments by state", labels=["state"]
        )
        for state in ("awake", "waking", "sleeping", "yielding"):
            by_state.add_metric([state], states.count(state))
        yield by_state
