"""Prometheus metrics of the agent (maas_agent_*), served on a localhost port."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from maas.agent.api.demand import DemandCollector
from maas.agent.api.status import deployment_status
from maas.agent.reconcile.ondemand import DemandBook
from maas.agent.reconcile.snapshot import NodeSnapshot, PassResult


class _StateCollector(Collector):
    """Gauges computed at scrape time from the node's latest snapshot."""

    def __init__(self, snapshot: Callable[[], NodeSnapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Any:
        snapshot = self.snapshot()
        by_state = GaugeMetricFamily(
            "maas_agent_deployments", "Deployments by state", labels=["state"]
        )
        restarts = GaugeMetricFamily(
            "maas_agent_restarts", "Restarts per deployment", labels=["deployment"]
        )
        gpus = InfoMetricFamily(
            "maas_agent_deployment_gpu", "GPUs a deployment runs on", labels=["deployment", "gpu"]
        )
        counts: dict[str, int] = {}
        plan = snapshot.plan
        health = dict(snapshot.healths)
        now = time.time()
        for d in plan.deployments if plan else []:
            # The same state as `maasctl status` shows.
            state = deployment_status(d, snapshot.observed, health, now).state
            counts[state] = counts.get(state, 0) + 1
            restarts.add_metric(
                [d.name], sum(h.restarts for (name, _), h in health.items() if name == d.name)
            )
            for uuid in d.placement.gpus:
                gpus.add_metric([d.name, uuid], {})
        for state in ("pending", "pulling", "downloading", "starting", "running", "failed"):
            by_state.add_metric([state], counts.get(state, 0))
        yield by_state
        yield restarts
        yield gpus


class _TaskCollector(Collector):
    """Each long-running task: up (running), failed passes, restarts (from the supervisor)."""

    def __init__(self, supervisor: Any) -> None:
        self.supervisor = supervisor

    def collect(self) -> Any:
        up = GaugeMetricFamily("maas_agent_task_up", "1 while the task runs", labels=["task"])
        failures = CounterMetricFamily(
            "maas_agent_task_failures", "Passes that raised an exception", labels=["task"]
        )
        restarts = CounterMetricFamily(
            "maas_agent_task_restarts",
            "Times the task ended and was started again",
            labels=["task"],
        )
        for name, state in sorted(self.supervisor.tasks.items()):
            up.add_metric([name], 1 if state.alive else 0)
            failures.add_metric([name], state.failures)
            restarts.add_metric([name], state.restarts)
        yield up
        yield failures
        yield restarts


class Metrics:
    def __init__(
        self,
        snapshot: Callable[[], NodeSnapshot],
        supervisor: Any = None,
        demand: DemandBook | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.passes = Counter(
            "maas_agent_reconcile_passes", "Reconcile passes", ["result"], registry=self.registry
        )
        self.duration = Histogram(
            "maas_agent_reconcile_duration_seconds",
            "Reconcile pass duration",
            registry=self.registry,
        )
        self.last_success = Gauge(
            "maas_agent_last_success_timestamp_seconds",
            "When the last pass succeeded",
            registry=self.registry,
        )
        self.actions = Counter(
            "maas_agent_actions", "Actions executed", ["kind"], registry=self.registry
        )
        self.registry.register(_StateCollector(snapshot))
        if demand is not None:
            self.registry.register(DemandCollector(demand))
        if supervisor is not None:
            self.registry.register(_TaskCollector(supervisor))

    def observe_pass(self, result: PassResult) -> None:
        self.passes.labels("ok" if result.ok else "error").inc()
        self.duration.observe(result.duration_s)
        if result.ok:
            self.last_success.set(result.started + result.duration_s)
        for action in result.actions:
            if action.kind != "noop":
                self.actions.labels(action.kind).inc()

    def serve(self, address: str, port: int) -> None:
        if port:
            start_http_server(port, addr=address, registry=self.registry)
