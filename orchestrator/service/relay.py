"""The outbox relay: the only code that publishes.

A run claims rows under a lease (each key's run of oldest due rows, in `seq` order: see the
`Outbox` port), publishes them, waits for every delivery report, then marks rows SENT, backs off
transient failures and marks permanent ones FAILED. Nothing is marked before its report, so a
crash at any point publishes a row again at worst, never loses it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from orchestrator.core.errors import TransientError
from orchestrator.observability.logs import get_logger
from orchestrator.service.crash_points import crash_point
from orchestrator.service.ports import (
    ClaimedRow,
    Outbox,
    Publisher,
    PublishError,
    PublishFailed,
    PublishFailure,
    Settlement,
)

log = get_logger("orchestrator.relay")

NO_REPORT = "no delivery report before the lease"
FAILED_RUNS_BEFORE_REPLACING = 3


@dataclass
class RelayResult:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    lag_s: list[float] = field(default_factory=list)
    sent_by_kind: dict[str, int] = field(default_factory=dict)
    missing_topics: list[str] = field(default_factory=list)  # of timed-out deliveries

    def add(self, r: RelayResult) -> None:
        """Fold a later run's result into this total."""
        self.claimed += r.claimed
        self.sent += r.sent
        self.retried += r.retried
        self.failed += r.failed
        self.lag_s.extend(r.lag_s)
        for k, v in r.sent_by_kind.items():
            self.sent_by_kind[k] = self.sent_by_kind.get(k, 0) + v
        self.missing_topics = sorted({*self.missing_topics, *r.missing_topics})


@dataclass
class _Delivery:
    row: ClaimedRow
    error: PublishError | None = None
    done: bool = False


class OutboxRelay:
    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        *,
        batch_size: int,
        lease_s: float,
        backoff_base_s: float,
        backoff_max_s: float,
    ) -> None:
        self.outbox = outbox
        self.publisher = publisher
        self._failed_runs = 0
        self.batch_size = batch_size
        self.lease_s = lease_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s

    def claim(self) -> list[ClaimedRow]:
        return self.outbox.claim(self.lease_s, self.batch_size)

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
        # A publisher whose every delivery fails run after run (fatal state, or a producer id the
        # broker forgot without saying so) is replaced; the rows were backed off meanwhile.
        self._failed_runs = 0 if result.sent else self._failed_runs + 1
        if self._failed_runs >= FAILED_RUNS_BEFORE_REPLACING or any(
            d.error is not None and d.error.failure is PublishFailure.FATAL for d in deliveries
        ):
            self._failed_runs = 0
            self._replace_publisher()
        return result

    def _missing_topics(self, deliveries: list[_Delivery]) -> set[str]:
        """Topics of timed-out deliveries that the broker does not know. A timeout alone would
        not say why; asked only on a run that had timeouts, this names the topic for the
        operator (`orchestrator topics create`)."""
        timed_out = {d.row.topic for d in deliveries if d.error is not None and d.error.timed_out}
        if not timed_out:
            return set()
        return self.publisher.missing_topics(timed_out)

    def _replace_publisher(self) -> None:
        """A fatal error (e.g. an unknown producer id after the broker lost its state, with
        idempotence on) leaves the client unusable for good, and one that delivered nothing
        three runs in a row may hold a dead connection state: the rows were backed off, start
        over with a new one."""
        log.warning("orchestrator_relay_producer_reset")
        self.publisher.replace()

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

    def _publish(self, rows: list[ClaimedRow]) -> list[_Delivery]:
        deliveries = [_Delivery(row) for row in rows]
        for d in deliveries:
            self._produce(d)
        try:
            remaining = self.publisher.flush(self.lease_s * 0.8)
        except PublishFailed as exc:  # the rows not yet reported retry later
            for d in deliveries:
                if not d.done:
                    d.error, d.done = exc.error, True
            return deliveries
        if remaining:
            log.warning("orchestrator_relay_flush_incomplete", remaining=remaining)
        return deliveries

    def _produce(self, d: _Delivery) -> None:
        def on_delivery(error: PublishError | None) -> None:
            d.error, d.done = error, True

        row = d.row
        self.publisher.produce(row.topic, row.payload, row.key, row.headers, on_delivery)

    def _settle(self, deliveries: list[_Delivery], result: RelayResult) -> None:
        settlement = Settlement()
        for d in deliveries:
            row = d.row
            if d.done and d.error is None:
                settlement.sent.append(row.id)
                result.lag_s.append(row.age_s)
                result.sent_by_kind[row.kind] = result.sent_by_kind.get(row.kind, 0) + 1
                if row.kind == "capability":
                    settlement.tasks_started.append(row.id)
                continue
            error = d.error
            reason = error.reason if error is not None else NO_REPORT
            if error is not None and error.failure is PublishFailure.PERMANENT:
                settlement.failures.append((row.id, reason))
                result.failed += 1
                log.error(
                    "orchestrator_outbox_publish_failed",
                    outbox_id=row.id,
                    topic=row.topic,
                    error=reason,
                )
            else:
                delay = self.backoff(row.attempts)
                settlement.retries.append((row.id, reason, delay))
                result.retried += 1
                log.warning(
                    "orchestrator_outbox_publish_retry",
                    outbox_id=row.id,
                    topic=row.topic,
                    error=reason,
                    delay_s=round(delay, 3),
                )
        self.outbox.settle(settlement)
        result.sent = len(settlement.sent)

    def backoff(self, attempts: int) -> float:
        """Bounded exponential backoff with full jitter."""
        cap = min(self.backoff_max_s, self.backoff_base_s * (2 ** min(attempts, 16)))
        return random.uniform(cap / 2, cap)
