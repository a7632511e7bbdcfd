"""Every Prometheus metric the services export, in one place.

Dashboards and alerts in deploy/helm name these; a test scrapes a running
service and checks that each name used there is really exported. Label sets
are kept small and bounded (route templates, never raw paths).
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 120.0, 300.0, 900.0, 3600.0)

HTTP_REQUESTS = Counter(
    "orgdir_http_requests_total",
    "HTTP requests handled, by route template and status code.",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "orgdir_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["service", "method", "route"],
    buckets=LATENCY_BUCKETS,
)
EVENTS_PUBLISHED = Counter(
    "orgdir_events_published_total",
    "Domain events published to the broker with a publisher confirm.",
    ["service", "type"],
)
PUBLISH_FAILURES = Counter(
    "orgdir_events_publish_failures_total",
    "Outbox relay publish attempts that failed (broker down, nack, unroutable).",
    ["service"],
)
EVENTS_CONSUMED = Counter(
    "orgdir_events_consumed_total",
    "Events taken from a queue, by outcome: ok, retried, held (database away), dead, stale, other-version.",
    ["service", "queue", "type", "outcome"],
)
EVENT_HANDLING = Histogram(
    "orgdir_event_handling_seconds",
    "Time spent in a consumer's handler.",
    ["service", "queue"],
    buckets=LATENCY_BUCKETS,
)
EVENT_LAG = Histogram(
    "orgdir_event_lag_seconds",
    "Now minus the event's time when a consumer handled it.",
    ["service", "queue"],
    buckets=LAG_BUCKETS,
)
OUTBOX_BACKLOG = Gauge(
    "orgdir_outbox_backlog",
    "Events written but not yet published by the outbox relay.",
    ["service"],
)
OUTBOX_OLDEST_AGE = Gauge(
    "orgdir_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox event (0 when empty).",
    ["service"],
)
DEAD_LETTER_MESSAGES = Gauge(
    "orgdir_dead_letter_messages",
    "Messages waiting in a consumer's dead-letter queue.",
    ["service", "queue"],
)
READY = Gauge(
    "orgdir_ready",
    "1 when the service's dependencies (database, broker) answer, else 0.",
    ["service"],
)
DELIVERIES = Counter(
    "orgdir_deliveries_total",
    "Downstream deliveries by target and outcome: ok, retried, failed, superseded.",
    ["target", "outcome"],
)
DELIVERY_LATENCY = Histogram(
    "orgdir_delivery_latency_seconds",
    "Time from the event's time to its acknowledged delivery at the target.",
    ["target"],
    buckets=LAG_BUCKETS,
)
DELIVERY_BACKLOG = Gauge(
    "orgdir_delivery_backlog",
    "Deliveries pending or retrying per target.",
    ["target"],
)
TARGET_CIRCUIT_OPEN = Gauge(
    "orgdir_delivery_circuit_open",
    "1 while a target's circuit breaker holds its deliveries back.",
    ["target"],
)
REVOCATION_LATENCY = Histogram(
    "orgdir_access_revocation_latency_seconds",
    "From the instant a right stops holding to its access.revoked being published.",
    buckets=LAG_BUCKETS,
)
HELD_REVOCATIONS = Gauge(
    "orgdir_access_held_revocations",
    "Revocations waiting in held batches for an administrator (mass-change guard).",
)
GC_PAUSE = Histogram(
    "orgdir_gc_pause_seconds",
    "Python garbage collections by generation; the process stands still during each "
    "(a full one walks every object of the in-memory read model).",
    ["service", "generation"],
    buckets=LATENCY_BUCKETS,
)
_gc_observed: set[str] = set()


def observe_gc(service: str) -> None:
    """Time every collection of this process (``gc.callbacks``), once per service name.

    The children are made here, not in the callback: ``labels()`` takes the metric's lock, and a
    collection can start while this thread holds it (a scrape copying the children allocates),
    so the callback only observes (a child's value lock guards float arithmetic alone, which
    never starts a collection)."""
    if service in _gc_observed:
        return
    _gc_observed.add(service)
    pauses = [GC_PAUSE.labels(service, str(generation)) for generation in range(3)]
    started = 0.0

    def callback(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            pauses[info["generation"]].observe(time.perf_counter() - started)

    gc.callbacks.append(callback)
