"""Prometheus metrics of the gateway, per model (the deployment name, never the client's string,
so an unknown or alias name cannot grow the label set)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from maas.gateway.usage import Usage

UNKNOWN = ""  # the model label of requests that named no known model
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
FIRST_BYTE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "maas_gateway_requests",
            "Requests answered, by model, route and HTTP status.",
            ["model", "route", "code"],
            registry=self.registry,
        )
        self.errors = Counter(
            "maas_gateway_errors",
            "Requests that failed, by model, route and reason.",
            ["model", "route", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "maas_gateway_request_duration_seconds",
            "Time from request to the end of the response (streams included).",
            ["model", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.first_byte = Histogram(
            "maas_gateway_time_to_first_byte_seconds",
            "Time from request to the replica's response headers.",
            ["model", "route"],
            buckets=FIRST_BYTE_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "maas_gateway_tokens",
            "Tokens reported in responses' usage, by model and kind (prompt, completion).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.outstanding = Gauge(
            "maas_gateway_outstanding_requests",
            "Requests in flight to replicas, by model.",
            ["model"],
            registry=self.registry,
        )
        # Issue 18: models started by requests (wake.py).
        self.wake = Histogram(
            "maas_gateway_wake_seconds",
            "Requests that waited for a sleeping model: arrival to the replica's first byte.",
            ["model"],
            buckets=FIRST_BYTE_BUCKETS,
            registry=self.registry,
        )
        self.wake_platform = Histogram(
            "maas_gateway_wake_platform_seconds",
            "The platform's part of a wake: its wake time minus the backend's own load "
            "(replicas started to ready, as the agent reports it).",
            ["model"],
            buckets=FIRST_BYTE_BUCKETS,
            registry=self.registry,
        )
        self.wake_held = Gauge(
            "maas_gateway_wake_held_requests",
            "Requests held while their sleeping model starts, by model.",
            ["model"],
            registry=self.registry,
        )

        self.keys_file_errors = Counter(
            "maas_gateway_keys_file_errors",
            "Reloads of the keys file that found malformed lines or could not read it.",
            registry=self.registry,
        )
        self._supervisor: Any = None
        self.registry.register(_TaskCollector(self))

        # Looking children up by label values costs microseconds per call; a request touches
        # six of them, so they are bound once per (model, route).
        self._bound: dict[tuple[str, str], RouteMetrics] = {}

    def route(self, model: str, route: str) -> RouteMetrics:
        bound = self._bound.get((model, route))
        if bound is None:
            bound = self._bound[(model, route)] = RouteMetrics(self, model, route)
        return bound

    def answered(self, model: str, route: str, code: int, seconds: float) -> None:
        self.route(model, route).answered(code, seconds)

    def error(self, model: str, route: str, reason: str) -> None:
        self.route(model, route).error(reason)

    def woke(self, model: str, seconds: float, backend_load_s: float | None) -> None:
        self.wake.labels(model).observe(seconds)
        if backend_load_s is not None:
            self.wake_platform.labels(model).observe(max(0.0, seconds - backend_load_s))

    def watch_tasks(self, supervisor: Any) -> None:
        self._supervisor = supervisor

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _TaskCollector(Collector):
    """Each background task: up (running) and failed passes (from the supervisor)."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Any:
        up = GaugeMetricFamily("maas_gateway_task_up", "1 while the task runs", labels=["task"])
        failures = CounterMetricFamily(
            "maas_gateway_task_failures", "Passes that raised an exception", labels=["task"]
        )
        supervisor = self.metrics._supervisor
        for name, state in sorted(supervisor.tasks.items()) if supervisor else []:
            up.add_metric([name], 1 if state.alive else 0)
            failures.add_metric([name], state.failures)
        yield up
        yield failures


class RouteMetrics:
    """The children of the gateway's metrics for one model and route."""

    def __init__(self, metrics: GatewayMetrics, model: str, route: str) -> None:
        self._metrics = metrics
        self.model = model
        self.route = route
        self.latency = metrics.latency.labels(model, route)
        self.first_byte = metrics.first_byte.labels(model, route)
        self.outstanding = metrics.outstanding.labels(model)
        self.prompt_tokens = metrics.tokens.labels(model, "prompt")
        self.completion_tokens = metrics.tokens.labels(model, "completion")
        self._codes: dict[int, Any] = {}

    def answered(self, code: int, seconds: float) -> None:
        counter = self._codes.get(code)
        if counter is None:
            counter = self._codes[code] = self._metrics.requests.labels(
                self.model, self.route, str(code)
            )
        counter.inc()
        if self.model != UNKNOWN:
            self.latency.observe(seconds)

    def error(self, reason: str) -> None:
        self._metrics.errors.labels(self.model, self.route, reason).inc()

    def used(self, usage: Usage) -> None:
        if usage.prompt_tokens:
            self.prompt_tokens.inc(usage.prompt_tokens)
        if usage.completion_tokens:
            self.completion_tokens.inc(usage.completion_tokens)
