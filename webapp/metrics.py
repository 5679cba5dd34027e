"""Prometheus metrics, fed off the request path.

Counters and histograms of requests are updated when the usage writer flushes (once a
second), not per request, so the hot path pays nothing for them; failures, probes and
health states are updated where they happen (rare events). Under gunicorn each worker
writes its values to ``PROMETHEUS_MULTIPROC_DIR`` (set by ``deploy/gunicorn.conf.py``)
and ``/metrics`` adds them up, so any worker answers for the whole process group.
"""

from __future__ import annotations

import bisect
import hmac
import os
from collections import Counter as Counter_
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from webapp.errors import AuthenticationFailed

bp = Blueprint("metrics", __name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter(
    "gateway_requests_total",
    "Proxied requests by model, server and status.",
    ["model", "server", "status"],
)
TOKENS = Counter("gateway_tokens_total", "Tokens by model and kind.", ["model", "kind"])
LATENCY = Histogram(
    "gateway_request_duration_seconds",
    "Whole request time by model.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
TTFT = Histogram(
    "gateway_time_to_first_token_seconds",
    "Time to the first streamed chunk by model.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
INFLIGHT = Gauge(
    "gateway_inflight_requests",
    "Requests being served (sampled each second).",
    multiprocess_mode="livesum",
)
UPSTREAM_FAILURES = Counter(
    "gateway_upstream_failures_total", "Failed attempts to reach a backend, by reason.", ["reason"]
)
SERVER_HEALTHY = Gauge(
    "gateway_server_healthy",
    "1 when a registered server is healthy and active, else 0.",
    ["server", "model"],
    multiprocess_mode="mostrecent",
)
PROBE_DURATION = Histogram(
    "gateway_probe_duration_seconds",
    "Health probe duration by outcome.",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)


def failure_kind(reason: str) -> str:
    """A low-cardinality label for a failure reason."""
    lowered = reason.lower()
    for needle, kind in (
        ("refused", "connection_refused"),
        ("timed out", "timeout"),
        ("http 5", "http_5xx"),
        ("closed", "connection_closed"),
        ("not allowed", "address_refused"),
    ):
        if needle in lowered:
            return kind
    return "other"


def _observe_many(histogram: Histogram, model: str, values: list[float]) -> None:
    """Add many observations at once: one write per bucket instead of one per value.

    In multiprocess mode every write goes to a memory-mapped file (~100 µs per request
    for this whole function when done value by value); the usage writer runs on the
    gevent hub, so a batch of a second's requests must cost well under a millisecond.
    """
    child = histogram.labels(model)
    buckets = getattr(child, "_buckets", None)
    bounds = getattr(child, "_upper_bounds", None)
    if buckets is None or bounds is None:  # a prometheus_client without these internals
        for value in values:
            child.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)
    child._sum.inc(sum(values))


def observe_requests(items: Iterable[dict[str, Any]], inflight: int) -> None:
    """Count a flushed batch of usage records (called by the usage writer)."""
    requests: Counter_[tuple[str, str, str]] = Counter_()
    tokens: Counter_[tuple[str, str]] = Counter_()
    latencies: dict[str, list[float]] = defaultdict(list)
    ttfts: dict[str, list[float]] = defaultdict(list)
    for item in items:
        model = item["model"] or "-"
        requests[(model, item["server_id"] or "-", str(item["status"]))] += 1
        latencies[model].append(item["latency_ms"] / 1000)
        if item["ttft_ms"] is not None:
            ttfts[model].append(item["ttft_ms"] / 1000)
        for kind in ("prompt_tokens", "completion_tokens"):
            if item[kind]:
                tokens[(model, kind.removesuffix("_tokens"))] += item[kind]
    for labels, count in requests.items():
        REQUESTS.labels(*labels).inc(count)
    for labels, count in tokens.items():
        TOKENS.labels(*labels).inc(count)
    for model, values in latencies.items():
        _observe_many(LATENCY, model, values)
    for model, values in ttfts.items():
        _observe_many(TTFT, model, values)
    INFLIGHT.set(inflight)


def observe_failure(reason: str) -> None:
    """One failed attempt to reach a backend."""
    UPSTREAM_FAILURES.labels(failure_kind(reason)).inc()


def observe_probe(ok: bool, seconds: float | None) -> None:
    """One health probe."""
    if seconds is not None:
        PROBE_DURATION.labels("ok" if ok else "failed").observe(seconds)


def observe_servers(
    states: Iterable[tuple[str, str, bool]], gone: Iterable[tuple[str, str]]
) -> None:
    """Health state per server, from the routing table's refresh."""
    for server_id, model, healthy in states:
        SERVER_HEALTHY.labels(server_id, model).set(1 if healthy else 0)
    for server_id, model in gone:
        # Removing a label set does not reach other workers' files; 0 does.
        SERVER_HEALTHY.labels(server_id, model).set(0)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format; needs ``Authorization: Bearer METRICS_TOKEN`` when that is set."""
    token = current_app.config["METRICS_TOKEN"]
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise AuthenticationFailed("send 'Authorization: Bearer <METRICS_TOKEN>'")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return Response(body, content_type=CONTENT_TYPE_LATEST)
