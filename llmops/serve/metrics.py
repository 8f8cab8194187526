"""Prometheus metrics of one app, in an app-owned CollectorRegistry (two apps in one process never mix).

    llmops_requests_total{route,model,adapter,chain,status}     answered requests, by HTTP status
    llmops_request_seconds{route,model,adapter,chain}           latency histogram (whole request)
    llmops_time_to_first_token_seconds{route,model,adapter,chain}  streams: until the first delta
    llmops_tokens_total{kind,model,adapter,chain}               prompt / completion tokens
    llmops_errors_total{route,model,adapter,chain,code}         failed requests, by error code
    llmops_queue_depth{model}, llmops_active_requests{model}    per engine, read at scrape time
    llmops_in_flight_requests                                   generation requests being answered
"""

from __future__ import annotations

from typing import Any

__all__ = ["Metrics"]

_LABELS = ("route", "model", "adapter", "chain")
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("llmops_requests", "Answered requests", (*_LABELS, "status"), registry=r)
        self.latency = Histogram("llmops_request_seconds", "Request latency", _LABELS, buckets=_BUCKETS, registry=r)
        self.ttft = Histogram("llmops_time_to_first_token_seconds", "Time to the first streamed delta", _LABELS,
                              buckets=_BUCKETS, registry=r)
        self.tokens = Counter("llmops_tokens", "Tokens processed", ("kind", "model", "adapter", "chain"), registry=r)
        self.errors = Counter("llmops_errors", "Failed requests", (*_LABELS, "code"), registry=r)
        self.queue_depth = Gauge("llmops_queue_depth", "Requests waiting for a batch slot", ("model",), registry=r)
        self.active = Gauge("llmops_active_requests", "Requests being decoded", ("model",), registry=r)
        self.in_flight = Gauge("llmops_in_flight_requests", "Generation requests being answered", registry=r)

    def observe(self, route: str, labels: dict[str, str], *, status: int, seconds: float,
                prompt_tokens: int = 0, completion_tokens: int = 0, error_code: str | None = None) -> None:
        values = {k: labels.get(k, "") for k in ("model", "adapter", "chain")}
        self.requests.labels(route=route, status=str(status), **values).inc()
        self.latency.labels(route=route, **values).observe(seconds)
        if prompt_tokens:
            self.tokens.labels(kind="prompt", **values).inc(prompt_tokens)
        if completion_tokens:
            self.tokens.labels(kind="completion", **values).inc(completion_tokens)
        if error_code is not None or status >= 400:
            self.errors.labels(route=route, code=error_code or str(status), **values).inc()

    def first_token(self, route: str, labels: dict[str, str], seconds: float) -> None:
        self.ttft.labels(route=route, **{k: labels.get(k, "") for k in ("model", "adapter", "chain")}).observe(seconds)

    def render(self, engines: dict[str, Any], in_flight: int) -> bytes:
        """The text exposition, with the engines' queue gauges read now."""
        from prometheus_client import generate_latest

        for name, engine in engines.items():
            self.queue_depth.labels(model=name).set(getattr(engine, "queue_depth", 0))
            self.active.labels(model=name).set(getattr(engine, "active", 0))
        self.in_flight.set(in_flight)
        return generate_latest(self.registry)
