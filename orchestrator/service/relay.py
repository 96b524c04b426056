"""The outbox relay: the only code that produces to Kafka.

A run claims, under a lease, for each (topic, key) the run of its oldest unsent rows (a key whose
older row is leased elsewhere or backing off is skipped, so a key's order holds across parallel
relays and retries), publishes them (`acks=all`, one request in flight: see
`orchestrator.adapters.kafka.clients.producer_config`), waits for every delivery report,
then marks rows SENT, backs off transient failures and marks permanent ones FAILED.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from sqlalchemy import Engine, text

from orchestrator.adapters.kafka.clients import is_fatal, is_permanent
from orchestrator.adapters.postgres.store import decode_headers, translate_errors
from orchestrator.core.errors import TransientError
from orchestrator.observability.logs import get_logger
from orchestrator.service.crash_points import crash_point

log = get_logger("orchestrator.relay")

CLAIM_LOCK = 727275
CLAIM = text(
    """
    UPDATE event_outbox SET claimed_until = now() + make_interval(secs => :lease)
    WHERE id IN (
      SELECT o.id FROM event_outbox o
      WHERE o.status = 'PENDING' AND o.next_attempt_at <= now()
        AND (o.claimed_until IS NULL OR o.claimed_until < now())
        AND NOT EXISTS (
          SELECT 1 FROM event_outbox p
          WHERE p.status = 'PENDING' AND p.topic = o.topic AND p.seq < o.seq
            AND (p.key = o.key OR (p.key IS NULL AND o.key IS NULL))
            AND (p.next_attempt_at > now() OR p.claimed_until >= now()))
      ORDER BY o.seq LIMIT :limit
      FOR UPDATE SKIP LOCKED)
    RETURNING id, seq, kind, topic, key, headers, payload, attempts,
      extract(epoch FROM now() - created_at) AS age_s
    """
)
MARK_SENT = text(
    "UPDATE event_outbox SET status = 'SENT', sent_at = now(), claimed_until = NULL,"
    " attempts = attempts + 1 WHERE id = ANY(:ids)"
)
START_TASKS = text(
    "UPDATE async_tasks SET status = 'RUNNING', started_at = now(), updated_at = now(),"
    " version = version + 1 WHERE id = ANY(:ids) AND status = 'PENDING'"
)
BACK_OFF = text(
    "UPDATE event_outbox SET attempts = attempts + 1, claimed_until = NULL, last_error = :err,"
    " next_attempt_at = now() + make_interval(secs => :delay) WHERE id = :id"
)
MARK_FAILED = text(
    "UPDATE event_outbox SET status = 'FAILED', attempts = attempts + 1, claimed_until = NULL,"
    " last_error = :err WHERE id = :id"
)


@dataclass
class RelayResult:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    lag_s: list[float] = field(default_factory=list)
    sent_by_kind: dict[str, int] = field(default_factory=dict)
    missing_topics: list[str] = field(default_factory=list)  # of timed-out deliveries


@dataclass
class _Delivery:
    row: Any
    error: KafkaError | None = None
    done: bool = False


class OutboxRelay:
    def __init__(
        self,
        engine: Engine,
        producer: Producer,
        *,
        batch_size: int,
        lease_s: float,
        backoff_base_s: float,
        backoff_max_s: float,
        producer_factory: Callable[[], Producer] | None = None,
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.producer_factory = producer_factory
        self._failed_runs = 0
        self.batch_size = batch_size
        self.lease_s = lease_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s

    def claim(self) -> list[Any]:
        with translate_errors(), self.engine.begin() as conn:
            # Claims are serialised (a few ms each) so two relays never split one key's run.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CLAIM_LOCK})
            rows = list(conn.execute(CLAIM, {"lease": self.lease_s, "limit": self.batch_size}))
        # RETURNING does not keep the subquery's order: publish strictly in seq order, so one
        # key's messages reach their partition in the order they were committed.
        rows.sort(key=lambda row: row.seq)
        return rows

    def run_once(self) -> RelayResult:
        claimed_at = time.monotonic()
        rows = self.claim()
        result = RelayResult(claimed=len(rows))
        if not rows:
            return result
        deliveries = self._publish(rows)
        crash_point("relay.after_publish")
        self._settle_within_lease(deliveries, result, claimed_at)
        result.missing_topics = sorted(self._missing_topics(deliveries))
        for topic in result.missing_topics:
            log.error("orchestrator_outbox_topic_missing", topic=topic)
        # A producer whose every delivery fails run after run (fatal state, or a producer id the
        # broker forgot without saying so) is replaced; the rows were backed off meanwhile.
        self._failed_runs = 0 if result.sent else self._failed_runs + 1
        if self._failed_runs >= 3 or any(
            d.error is not None and is_fatal(d.error) for d in deliveries
        ):
            self._failed_runs = 0
            self._replace_producer()
        return result

    def _missing_topics(self, deliveries: list[_Delivery]) -> set[str]:
        """Topics of timed-out deliveries that the broker does not know. The producer never
        creates a topic and holds such a message until it times out, so the delivery error
        alone ("Message timed out") would not say why; one metadata request, only on a run
        that had timeouts, names the topic for the operator (`orchestrator topics create`)."""
        timed_out = {
            d.row.topic
            for d in deliveries
            if d.error is not None and d.error.code() == KafkaError._MSG_TIMED_OUT
        }
        if not timed_out:
            return set()
        try:
            known: set[str] = set(self.producer.list_topics(timeout=1.0).topics)
        except KafkaException:  # the broker is away: the retries say so already
            return set()
        return timed_out - known

    def _replace_producer(self) -> None:
        """A fatal error (e.g. UNKNOWN_PRODUCER_ID after the broker lost its state, with
        idempotence on) leaves the producer unusable for good, and a producer that delivered
        nothing three runs in a row may hold a dead connection state: the rows were backed
        off, build a new one."""
        log.warning("orchestrator_relay_producer_reset")
        if self.producer_factory is not None:
            self.producer = self.producer_factory()

    def _settle_within_lease(
        self, deliveries: list[_Delivery], result: RelayResult, claimed_at: float
    ) -> None:
        """Record the deliveries; while the database is briefly away, keep trying as long as the
        lease holds, so a short outage does not make the rows go out a second time."""
        delay = 0.1
        while True:
            attempt = RelayResult()  # counted only once the marking committed
            try:
                self._settle(deliveries, attempt)
            except TransientError:
                if time.monotonic() - claimed_at + delay > self.lease_s * 0.9:
                    raise
                log.warning(
                    "orchestrator_outbox_settle_retry", rows=len(deliveries), retry_in_s=delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            result.sent, result.retried, result.failed = (
                attempt.sent,
                attempt.retried,
                attempt.failed,
            )
            result.lag_s.extend(attempt.lag_s)
            result.sent_by_kind.update(attempt.sent_by_kind)
            return

    def _publish(self, rows: list[Any]) -> list[_Delivery]:
        deliveries = [_Delivery(row) for row in rows]
        for d in deliveries:
            self._produce(d)
        try:
            remaining = self.producer.flush(self.lease_s * 0.8)
        except KafkaException as exc:  # a fatal error surfaces here too: rows retry later
            for d in deliveries:
                if not d.done:
                    d.error, d.done = exc.args[0], True
            return deliveries
        if remaining:
            log.warning("orchestrator_relay_flush_incomplete", remaining=remaining)
        return deliveries

    def _produce(self, d: _Delivery) -> None:
        row = d.row

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            d.error, d.done = err, True

        while True:
            try:
                self.producer.produce(
                    row.topic,
                    value=bytes(row.payload),
                    key=bytes(row.key) if row.key is not None else None,
                    headers=list(decode_headers(row.headers)),
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                self.producer.poll(0.05)  # local queue full: let deliveries drain, then retry
            except KafkaException as exc:
                d.error, d.done = exc.args[0], True
                return

    def _settle(self, deliveries: list[_Delivery], result: RelayResult) -> None:
        sent_ids, task_ids = [], []
        with translate_errors(), self.engine.begin() as conn:
            for d in deliveries:
                row = d.row
                if d.done and d.error is None:
                    sent_ids.append(row.id)
                    result.lag_s.append(float(row.age_s))
                    result.sent_by_kind[row.kind] = result.sent_by_kind.get(row.kind, 0) + 1
                    if row.kind == "capability":
                        task_ids.append(row.id)
                    continue
                error = d.error
                reason = str(error) if error is not None else "no delivery report before the lease"
                if error is not None and is_permanent(error):
                    conn.execute(MARK_FAILED, {"id": row.id, "err": reason})
                    result.failed += 1
                    log.error(
                        "orchestrator_outbox_publish_failed",
                        outbox_id=row.id,
                        topic=row.topic,
                        error=reason,
                    )
                else:
                    delay = self.backoff(row.attempts)
                    conn.execute(BACK_OFF, {"id": row.id, "err": reason, "delay": delay})
                    result.retried += 1
                    log.warning(
                        "orchestrator_outbox_publish_retry",
                        outbox_id=row.id,
                        topic=row.topic,
                        error=reason,
                        delay_s=round(delay, 3),
                    )
            if sent_ids:
                conn.execute(MARK_SENT, {"ids": sent_ids})
            if task_ids:
                conn.execute(START_TASKS, {"ids": task_ids})
        result.sent = len(sent_ids)

    def backoff(self, attempts: int) -> float:
        """Bounded exponential backoff with full jitter."""
        cap = min(self.backoff_max_s, self.backoff_base_s * (2 ** min(attempts, 16)))
        return random.uniform(cap / 2, cap)
