"""Prometheus metrics, one registry per app (so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "promptshrink_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "promptshrink_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compress_latency = Histogram(
            "promptshrink_compression_duration_seconds",
            "time spent compressing, by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_in = Counter("promptshrink_tokens_in", "tokens before compression", ["method"], registry=r)
        self.tokens_out = Counter("promptshrink_tokens_out", "tokens after compression", ["method"], registry=r)
        self.errors = Counter("promptshrink_errors", "error responses by error code", ["code"], registry=r)
        self.upstream = Counter(
            "promptshrink_upstream_responses", "upstream responses by status", ["status"], registry=r
        )
        self.busy_slots = Gauge("promptshrink_queue_slots_used", "compression jobs running or queued", registry=r)
        self.batch_size = Histogram(
            "promptshrink_batch_size",
            "requests per micro-batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.batch_wait = Histogram(
            "promptshrink_batch_wait_seconds",
            "time a request waited for its micro-batch to start",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
            registry=r,
        )
        self.ready = Gauge("promptshrink_ready", "1 once the default method's models are loaded", registry=r)

    def record_compression(self, method: str, seconds: float, tokens_in: int, tokens_out: int) -> None:
        self.compress_latency.labels(method).observe(seconds)
        self.tokens_in.labels(method).inc(tokens_in)
        self.tokens_out.labels(method).inc(tokens_out)
