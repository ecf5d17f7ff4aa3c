"""Prometheus metrics of one server (its own registry: several apps in one process never mix)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    """Requests, rows, batch sizes, generated tokens, queue depth and latencies, in the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("openpt_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry)
        self.rows = Counter("openpt_rows", "rows classified", registry=self.registry)
        self.batches = Counter("openpt_batches", "mixed batches scored", registry=self.registry)
        self.batch_rows = Histogram("openpt_batch_rows", "rows per mixed batch", buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram("openpt_batch_requests", "requests per mixed batch", buckets=BATCH_BUCKETS,
                                        registry=self.registry)
        self.batch_seconds = Histogram("openpt_batch_seconds", "seconds to score one mixed batch", buckets=LATENCY_BUCKETS,
                                       registry=self.registry)
        self.latency = Histogram("openpt_request_seconds", "request latency by route, queueing included", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.generation_inputs = Counter("openpt_generation_inputs", "inputs generated for", registry=self.registry)
        self.generated_tokens = Counter("openpt_generated_tokens", "tokens generated (every returned sequence, up to EOS)",
                                        registry=self.registry)
        self.generation_groups = Counter("openpt_generation_groups", "generation groups decoded (one prompt, one set of options)",
                                         registry=self.registry)
        self.group_inputs = Histogram("openpt_generation_group_inputs", "inputs per generation group", buckets=BATCH_BUCKETS,
                                      registry=self.registry)
        self.group_requests = Histogram("openpt_generation_group_requests", "requests per generation group", buckets=BATCH_BUCKETS,
                                        registry=self.registry)
        self.group_seconds = Histogram("openpt_generation_group_seconds", "seconds to decode one generation group",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_rows = Gauge("openpt_queue_rows", "rows waiting for a batch", registry=self.registry)
        self.prompts = Gauge("openpt_prompts", "prompts loaded", registry=self.registry)

    def observe_batch(self, rows: int, requests: int, seconds: float) -> None:
        """Record one scored batch (the batcher's observer)."""
        self.batches.inc()
        self.rows.inc(rows)
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)
        self.batch_seconds.observe(seconds)

    def observe_generation(self, inputs: int, requests: int, tokens: int, seconds: float) -> None:
        """Record one decoded generation group (the batcher's generation observer)."""
        self.generation_groups.inc()
        self.generation_inputs.inc(inputs)
        self.generated_tokens.inc(tokens)
        self.group_inputs.observe(inputs)
        self.group_requests.observe(requests)
        self.group_seconds.observe(seconds)

    def text(self) -> bytes:
        """Every metric in the Prometheus text exposition format."""
        return generate_latest(self.registry)
