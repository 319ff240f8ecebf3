"""Prometheus metrics of the gateway, per model (the deployment name, never the client's string,
so an unknown or alias name cannot grow the label set)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from maas.agent.gateway.usage import Usage

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

    def answered(self, model: str, route: str, code: int, seconds: float) -> None:
        self.requests.labels(model, route, str(code)).inc()
        if model != UNKNOWN:
            self.latency.labels(model, route).observe(seconds)

    def error(self, model: str, route: str, reason: str) -> None:
        self.errors.labels(model, route, reason).inc()

    def used(self, model: str, usage: Usage) -> None:
        if usage.prompt_tokens:
            self.tokens.labels(model, "prompt").inc(usage.prompt_tokens)
        if usage.completion_tokens:
            self.tokens.labels(model, "completion").inc(usage.completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
