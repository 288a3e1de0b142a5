"""Prometheus metrics, in a registry of the server's own (so several servers can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "serving_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_latency = Histogram(
            "serving_request_latency_seconds",
            "Time from request to the last byte sent, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "serving_time_to_first_token_seconds",
            "Time from a completion request to its first generated token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("serving_prompt_tokens", "Prompt tokens prefilled", registry=r)
        self.generation_tokens = Counter("serving_generation_tokens", "Tokens generated", registry=r)
        self.batch_size = Histogram(
            "serving_batch_size", "Sequences per decode step", buckets=BATCH_BUCKETS, registry=r
        )
        self.prefill_batch_size = Histogram(
            "serving_prefill_batch_size", "Sequences per prefill forward", buckets=BATCH_BUCKETS, registry=r
        )
        self.running = Gauge("serving_running_sequences", "Sequences in the decode batch", registry=r)
        self.waiting = Gauge("serving_waiting_sequences", "Sequences waiting for a slot", registry=r)
        self.finished = Counter(
            "serving_sequences_finished",
            "Sequences finished, by reason (stop, length, cancelled, error)",
            ["reason"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
