"""The composition root: builds the adapters and hands them to the service layer, once per
process and lazily, so importing anything connects to nothing. Wiring only."""

from __future__ import annotations

from functools import cached_property, partial
from typing import Any

from celery import Celery

from orchestrator.adapters.celery.app import DRAIN_BATCH_TASK, DRAIN_TASK, RELAY_TASK
from orchestrator.adapters.kafka.clients import make_consumer, make_producer
from orchestrator.adapters.kafka.ingest_source import KafkaSource
from orchestrator.adapters.kafka.publisher import KafkaPublisher
from orchestrator.adapters.postgres.backlog import PgBacklog
from orchestrator.adapters.postgres.drain_store import PgDrainStore
from orchestrator.adapters.postgres.engine import make_engine
from orchestrator.adapters.postgres.maintenance import PgMaintenance
from orchestrator.adapters.postgres.outbox import PgOutbox
from orchestrator.adapters.postgres.store import SqlStore
from orchestrator.adapters.redis.state import RedisState, make_redis
from orchestrator.core.queues import RELAY_QUEUE
from orchestrator.service.batch_drain import BatchDrainer, DrainBounds
from orchestrator.service.drain import SessionWorker
from orchestrator.service.ingest import Ingester, queue_for_topic
from orchestrator.service.maintenance import Maintenance
from orchestrator.service.process_message import MessageProcessor, ProcessorConfig
from orchestrator.service.relay import OutboxRelay
from orchestrator.service.relay_runs import RelayRequests, RelayRuns
from orchestrator.settings import Settings


class Container:
    def __init__(self, settings: Settings, celery: Celery) -> None:
        self.settings = settings
        self.celery = celery

    # -- adapters ------------------------------------------------------------------------------

    @cached_property
    def engine(self) -> Any:
        return make_engine(self.settings.database_url)

    @cached_property
    def store(self) -> SqlStore:
        return SqlStore(self.engine)

    @cached_property
    def backlog(self) -> PgBacklog:
        return PgBacklog(self.engine)

    @cached_property
    def redis(self) -> Any:
        return make_redis(self.settings.redis_url)

    @cached_property
    def state(self) -> RedisState:
        s = self.settings
        return RedisState(self.redis, s.redis_prefix, s.lock_ttl_s, s.done_marker_ttl_s)

    @cached_property
    def publisher(self) -> KafkaPublisher:
        s = self.settings
        return KafkaPublisher(make_producer(s), factory=lambda: make_producer(s))

    def message_source(self) -> KafkaSource:
        return KafkaSource(make_consumer(self.settings))

    # -- the service layer ---------------------------------------------------------------------

    @cached_property
    def processor(self) -> MessageProcessor:
        s = self.settings
        return MessageProcessor(
            self.store,
            ProcessorConfig(
                domain_topic=s.domain_topic,
                dlq_topic=s.dlq_topic,
                max_message_bytes=s.max_message_bytes,
                max_attempts=s.max_attempts,
                max_publish_bytes=s.kafka_message_max_bytes,
                dlq_max_bytes=s.dlq_limit(),
                command_mapping=s.command_mapping,
                task_topic_prefix=s.task_topic_prefix,
                task_timeout=s.timeout_for,
            ),
        )

    @cached_property
    def relay(self) -> OutboxRelay:
        s = self.settings
        return OutboxRelay(
            PgOutbox(self.engine),
            self.publisher,
            batch_size=s.relay_batch_size,
            lease_s=s.relay_lease_s,
            backoff_base_s=s.relay_backoff_base_s,
            backoff_max_s=s.relay_backoff_max_s,
        )

    @cached_property
    def relay_requests(self) -> RelayRequests:
        return RelayRequests(self.state, self.enqueue_relay)

    @cached_property
    def relay_runs(self) -> RelayRuns:
        from orchestrator.observability.metrics import record_relay

        return RelayRuns(self.relay, self.relay_requests, record_relay)

    @cached_property
    def session_worker(self) -> SessionWorker:
        from orchestrator.observability.metrics import record_outcome

        return SessionWorker(self.processor, self.state, self.enqueue_relay, record_outcome)

    def batch_drainer(self, queue: str) -> BatchDrainer:
        from orchestrator.observability.metrics import record_outcome

        s = self.settings
        return BatchDrainer(
            self.processor,
            PgDrainStore(self.store),
            self.state,
            partial(self.request_drain, queue),
            self.enqueue_relay,
            record_outcome,
            DrainBounds(s.drain_batch_sessions, s.drain_batch_rows),
        )

    @cached_property
    def maintenance(self) -> Maintenance:
        from orchestrator.observability.metrics import observe_command_latency

        s = self.settings
        return Maintenance(
            PgMaintenance(self.engine),
            s.domain_topic,
            self.trigger,
            self.queue_for_topic,
            s.redrive_after_s,
            s.retention_s,
            on_latency=observe_command_latency,
        )

    def ingester(self) -> Ingester:
        from orchestrator.observability.metrics import record_batch, record_gap

        return Ingester(
            self.processor,
            self.store,
            self.state,
            self.request_drain,
            self.request_relay,
            self.settings.domain_topic,
            record_batch,
            gap_rechecks=self.settings.ingest_gap_rechecks,
            on_gap=record_gap,
        )

    # -- Celery wiring -------------------------------------------------------------------------

    @cached_property
    def queue_for_topic(self) -> partial[str]:
        return partial(queue_for_topic, domain_topic=self.settings.domain_topic)

    def trigger(self, session_id: str, queue: str, traceparent: str | None = None) -> None:
        """Ask a worker to drain the session; the trace context rides in the task headers."""
        headers = {"traceparent": traceparent} if traceparent else None
        self.celery.send_task(DRAIN_TASK, args=[session_id], queue=queue, headers=headers)

    def request_drain(self, queue: str) -> None:
        """Ask for a batched drain on `queue`, unless one is queued and not yet started."""
        if self.state.request_drain(queue):
            self.celery.send_task(DRAIN_BATCH_TASK, args=[queue], queue=queue)

    def enqueue_relay(self) -> None:
        self.celery.send_task(RELAY_TASK, queue=RELAY_QUEUE, expires=30)

    def request_relay(self) -> None:
        self.relay_requests.request()

    def close(self) -> None:
        if "publisher" in self.__dict__:
            self.publisher.flush(5)
        if "engine" in self.__dict__:
            self.engine.dispose()
