"""The composition root: builds engine, store, agent, Redis, producer and Celery wiring once per
process, lazily, so importing anything connects to nothing."""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

from celery import Celery

from orchestrator.adapters.celery.app import DRAIN_TASK, RELAY_TASK
from orchestrator.adapters.kafka.clients import make_producer
from orchestrator.adapters.postgres.engine import make_engine
from orchestrator.adapters.postgres.store import SqlStore
from orchestrator.adapters.redis.state import RedisState, make_redis
from orchestrator.core.queues import CAPABILITY_QUEUE, DOMAIN_QUEUE, RELAY_QUEUE
from orchestrator.service.drain import SessionWorker
from orchestrator.service.ingest import Ingester
from orchestrator.service.maintenance import Maintenance
from orchestrator.service.process_message import AgentConfig, OrchestratorAgent
from orchestrator.service.relay import OutboxRelay, RelayResult
from orchestrator.settings import Settings

RELAY_RUN_MAX_S = 5.0


class Container:
    def __init__(self, settings: Settings, celery: Celery) -> None:
        self.settings = settings
        self.celery = celery

    @cached_property
    def engine(self) -> Any:
        return make_engine(self.settings.database_url)

    @cached_property
    def store(self) -> SqlStore:
        return SqlStore(self.engine)

    @cached_property
    def agent(self) -> OrchestratorAgent:
        s = self.settings
        return OrchestratorAgent(
            self.store,
            AgentConfig(
                domain_topic=s.domain_topic,
                dlq_topic=s.dlq_topic,
                max_message_bytes=s.max_message_bytes,
                max_attempts=s.max_attempts,
                command_mapping=s.command_mapping,
                task_topic_prefix=s.task_topic_prefix,
                task_timeout=s.timeout_for,
            ),
        )

    @cached_property
    def redis(self) -> Any:
        return make_redis(self.settings.redis_url)

    @cached_property
    def state(self) -> RedisState:
        s = self.settings
        return RedisState(self.redis, s.redis_prefix, s.lock_ttl_s, s.done_marker_ttl_s)

    @cached_property
    def producer(self) -> Any:
        return make_producer(self.settings)

    @cached_property
    def relay(self) -> OutboxRelay:
        s = self.settings
        return OutboxRelay(
            self.engine,
            self.producer,
            batch_size=s.relay_batch_size,
            lease_s=s.relay_lease_s,
            backoff_base_s=s.relay_backoff_base_s,
            backoff_max_s=s.relay_backoff_max_s,
            producer_factory=lambda: make_producer(s),
        )

    @cached_property
    def session_worker(self) -> SessionWorker:
        from orchestrator.observability.metrics import record_outcome

        return SessionWorker(self.agent, self.state, self.enqueue_relay, record_outcome)

    @cached_property
    def maintenance(self) -> Maintenance:
        s = self.settings
        return Maintenance(
            self.engine,
            s.domain_topic,
            self.trigger,
            self.queue_for_topic,
            s.redrive_after_s,
            s.retention_s,
        )

    def ingester(self) -> Ingester:
        from orchestrator.observability.metrics import record_batch, record_gap

        return Ingester(
            self.agent,
            self.store,
            self.state,
            self.trigger,
            self.request_relay,
            self.settings.domain_topic,
            record_batch,
            gap_rechecks=self.settings.ingest_gap_rechecks,
            on_gap=record_gap,
        )

    # -- Celery wiring -------------------------------------------------------------------------

    def queue_for_topic(self, topic: str) -> str:
        return DOMAIN_QUEUE if topic == self.settings.domain_topic else CAPABILITY_QUEUE

    def trigger(self, session_id: str, queue: str, traceparent: str | None = None) -> None:
        """Ask a worker to drain the session; the trace context rides in the task headers."""
        headers = {"traceparent": traceparent} if traceparent else None
        self.celery.send_task(DRAIN_TASK, args=[session_id], queue=queue, headers=headers)

    def enqueue_relay(self) -> None:
        self.celery.send_task(RELAY_TASK, queue=RELAY_QUEUE, expires=30)

    def request_relay(self) -> None:
        if self.state.request_relay():
            self.enqueue_relay()

    def run_relay(self, coalesced: bool) -> RelayResult:
        """Relay until the outbox has nothing claimable; a coalesced run also honours requests
        that arrive meanwhile. Bounded in time so it never holds a worker slot for long."""
        from orchestrator.observability.metrics import record_relay

        total = RelayResult()
        started = time.monotonic()
        while True:
            if coalesced:
                self.state.clear_dirty()
            r = self.relay.run_once()
            record_relay(r)
            _add(total, r)
            if time.monotonic() - started > RELAY_RUN_MAX_S:
                if coalesced:
                    self.state.finish_relay_run()
                    self.request_relay()
                break
            if r.claimed >= self.settings.relay_batch_size:
                continue
            if not coalesced or not self.state.finish_relay_run():
                break
        return total

    def close(self) -> None:
        if "producer" in self.__dict__:
            self.producer.flush(5)
        if "engine" in self.__dict__:
            self.engine.dispose()


def _add(total: RelayResult, r: RelayResult) -> None:
    total.claimed += r.claimed
    total.sent += r.sent
    total.retried += r.retried
    total.failed += r.failed
    total.lag_s.extend(r.lag_s)
    for k, v in r.sent_by_kind.items():
        total.sent_by_kind[k] = total.sent_by_kind.get(k, 0) + v
    total.missing_topics = sorted({*total.missing_topics, *r.missing_topics})
