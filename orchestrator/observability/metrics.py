"""Prometheus metrics (prometheus-client), documented in docs/operations.md.

The four headline figures: domain events processed per second
(`orchestrator_messages_processed_total{kind="command"}` as a rate), AsyncTask creation success
rate (`orchestrator_async_tasks_created_total` against
`orchestrator_async_task_create_failures_total`), end-to-end latency
(`orchestrator_command_latency_seconds{kind,outcome}`: a command's arrival in the inbox -> its
outcome fact, Confirmed, Failed or TimedOut; `orchestrator_task_roundtrip_seconds` is one
AsyncTask's created -> result projected) and errors by category
(`orchestrator_dead_letters_total{category}`); plus outbox lag and inbox backlog as gauges read
from the database at scrape time. Celery's prefork children write to
`PROMETHEUS_MULTIPROC_DIR`, which the worker's parent serves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client import values as prometheus_values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from orchestrator.core.offset_gaps import Gap
from orchestrator.core.records import Outcome, Status

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # prometheus_client picks its value class when first imported, which in a Celery worker can
    # happen (through a CLI plugin) before the directory is set: pick it again now, before any
    # metric below is created.
    prometheus_values.ValueClass = prometheus_values.get_value_class()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# A command's whole course: capability work, review rounds, up to a task timeout (900 s).
COMMAND_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600)

MESSAGES_INGESTED = Counter(
    "orchestrator_messages_ingested_total", "Input messages recorded in the inbox", ["kind"]
)
MESSAGES_SKIPPED = Counter(
    "orchestrator_messages_skipped_total",
    "Well-formed domain events that are not commands (skipped)",
)
MESSAGES_PROCESSED = Counter(
    "orchestrator_messages_processed_total", "Inbox messages processed", ["kind", "status"]
)
CONSUMER_GAPS = Counter(
    "orchestrator_consumer_gap_offsets_total",
    "Offsets a fetch skipped: read again, or accepted as a hole after the rechecks",
    ["outcome"],
)
FACTS_WRITTEN = Counter("orchestrator_facts_written_total", "Domain facts written", ["event_type"])
TASKS_CREATED = Counter("orchestrator_async_tasks_created_total", "AsyncTasks created")
TASK_CREATE_FAILURES = Counter(
    "orchestrator_async_task_create_failures_total",
    "Capability dispatches that failed (dead-lettered, replayable)",
)
TASKS_COMPLETED = Counter("orchestrator_async_tasks_completed_total", "AsyncTasks completed")
DEAD_LETTERS = Counter("orchestrator_dead_letters_total", "Inputs dead-lettered", ["category"])
TASK_ROUNDTRIP = Histogram(
    "orchestrator_task_roundtrip_seconds",
    "From an AsyncTask created to its capability result projected",
    buckets=LATENCY_BUCKETS,
)
COMMAND_LATENCY = Histogram(
    "orchestrator_command_latency_seconds",
    "From a command's arrival in the inbox to its outcome fact (Confirmed, Failed, TimedOut)",
    ["kind", "outcome"],
    buckets=COMMAND_BUCKETS,
)
OUTBOX_PUBLISHED = Counter(
    "orchestrator_outbox_published_total", "Outbox messages delivered to Kafka", ["kind"]
)
OUTBOX_ERRORS = Counter(
    "orchestrator_outbox_publish_errors_total", "Outbox publish failures", ["permanence"]
)
RELAY_LAG = Histogram(
    "orchestrator_relay_lag_seconds",
    "Outbox row committed -> delivered to Kafka",
    buckets=LATENCY_BUCKETS,
)


def record_outcome(outcome: Outcome) -> None:
    kind = outcome.kind or "unknown"
    MESSAGES_PROCESSED.labels(kind, outcome.status.value).inc()
    for event_type in outcome.fact_types:
        FACTS_WRITTEN.labels(event_type).inc()
    if outcome.task_ids:
        TASKS_CREATED.inc(len(outcome.task_ids))
    if outcome.completed_task_ids:
        TASKS_COMPLETED.inc(len(outcome.completed_task_ids))
    for seconds in outcome.roundtrip_s:
        TASK_ROUNDTRIP.observe(seconds)
    for kind, ended, seconds in outcome.command_latency:
        observe_command_latency(kind, ended, seconds)
    if outcome.status is Status.DEAD_LETTERED and outcome.category:
        DEAD_LETTERS.labels(outcome.category).inc()
    if outcome.dispatch_failed:
        TASK_CREATE_FAILURES.inc()
        DEAD_LETTERS.labels("capability_dispatch_failed").inc()


def observe_command_latency(kind: str, outcome: str, seconds: float) -> None:
    """One command's end-to-end latency (`kind`: its capability kind or `stage`)."""
    COMMAND_LATENCY.labels(kind, outcome).observe(seconds)


def record_batch(batch: Any) -> None:
    for kind, n in batch.by_kind.items():
        MESSAGES_INGESTED.labels(kind).inc(n)
    if batch.skipped:
        MESSAGES_SKIPPED.inc(batch.skipped)
    for category, n in batch.dead_by_category.items():
        DEAD_LETTERS.labels(category).inc(n)


def record_gap(gap: Gap) -> None:
    CONSUMER_GAPS.labels("accepted" if gap.accepted else "read_again").inc(gap.size)


def record_relay(result: Any) -> None:
    for kind, n in result.sent_by_kind.items():
        OUTBOX_PUBLISHED.labels(kind).inc(n)
    for lag in result.lag_s:
        RELAY_LAG.observe(lag)
    if result.retried:
        OUTBOX_ERRORS.labels("transient").inc(result.retried)
    if result.failed:
        OUTBOX_ERRORS.labels("permanent").inc(result.failed)


BACKLOG_GAUGES = (
    ("orchestrator_outbox_pending", "Outbox rows waiting to be published"),
    ("orchestrator_outbox_lag_seconds", "Age of the oldest unpublished outbox row"),
    ("orchestrator_outbox_failed", "Outbox rows that failed permanently"),
    ("orchestrator_inbox_backlog", "Inbox messages not yet processed"),
    ("orchestrator_inbox_oldest_seconds", "Age of the oldest unprocessed inbox message"),
)
Backlog = Callable[[], Sequence[float]]


class BacklogCollector(Collector):
    """Outbox lag and inbox backlog, read at scrape time (`read` gives one value per gauge of
    `BACKLOG_GAUGES`); a scrape while the database is away just lacks them."""

    def __init__(self, read: Backlog) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            values = self.read()
        except Exception:
            return
        for (name, doc), value in zip(BACKLOG_GAUGES, values, strict=True):
            yield GaugeMetricFamily(name, doc, value=float(value))


def serve(port: int, backlog: Backlog | None = None) -> None:
    """Expose /metrics on `port`; aggregates prefork children when multiprocess mode is on."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    if backlog is not None:
        registry.register(BacklogCollector(backlog))
    start_http_server(port, addr="0.0.0.0", registry=registry)
