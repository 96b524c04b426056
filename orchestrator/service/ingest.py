"""The Kafka ingester: consume, record in the inbox, store offsets, trigger Celery tasks.

The inbox commit is the durability point: offsets are stored only after it, and Celery triggers
are sent only after that. A crash before the commit redelivers the batch; a crash after it
redelivers messages the inbox already holds (ignored, or re-triggered while unprocessed); a lost
trigger is repaired by beat's re-drive. Poison input is dead-lettered in the same transaction,
so its offset is stored too and never blocks a partition. A fetch that skipped offsets is read
again from the first missing one (`orchestrator.core.offset_gaps`): a broker that served records
past a hole loses nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from orchestrator.core.classify import Kind, inbox_entry
from orchestrator.core.errors import Category, InvalidInput, TransientError
from orchestrator.core.inbound import RawMessage
from orchestrator.core.offset_gaps import Gap, OffsetGapGuard
from orchestrator.core.outbound import raw_dead_letter_id
from orchestrator.core.queues import CAPABILITY_QUEUE, DOMAIN_QUEUE
from orchestrator.core.records import DeadLetterRecord, NewInbox
from orchestrator.observability.logs import get_logger
from orchestrator.service.crash_points import crash_point
from orchestrator.service.ports import MessageSource, SessionState, Store, Transaction
from orchestrator.service.process_message import MessageProcessor

log = get_logger("orchestrator.ingester")


@dataclass
class BatchResult:
    received: int = 0
    recorded: int = 0
    redelivered: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    triggers: dict[str, str] = field(default_factory=dict)  # session -> queue
    by_kind: dict[str, int] = field(default_factory=dict)
    dead_by_category: dict[str, int] = field(default_factory=dict)


def queue_for_topic(topic: str, domain_topic: str) -> str:
    """Where a message's drain task goes: domain commands and capability results scale apart."""
    return DOMAIN_QUEUE if topic == domain_topic else CAPABILITY_QUEUE


class Ingester:
    def __init__(
        self,
        processor: MessageProcessor,
        store: Store,
        state: SessionState | None,
        request_drain: Callable[[str], None],
        enqueue_relay: Callable[[], None],
        domain_topic: str,
        on_batch: Callable[[BatchResult], None] = lambda _b: None,
        *,
        gap_rechecks: int = 3,
        on_gap: Callable[[Gap], None] = lambda _g: None,
    ) -> None:
        self.processor = processor
        self.store = store
        self.state = state
        self.request_drain = request_drain
        self.enqueue_relay = enqueue_relay
        self.domain_topic = domain_topic
        self.on_batch = on_batch
        self.gaps = OffsetGapGuard(gap_rechecks)
        self.on_gap = on_gap

    # -- one batch -----------------------------------------------------------------------------

    def handle_batch(self, raws: Sequence[RawMessage]) -> BatchResult:
        """Record a batch; returns what to trigger. Offsets may be stored once this returns."""
        result = BatchResult(received=len(raws))
        rows: list[NewInbox] = []
        dead: list[DeadLetterRecord] = []
        for raw in raws:
            self._classify_into(raw, rows, dead, result)
        rows = self._drop_done(rows)
        try:
            self._record(rows, dead, result)
        except TransientError:
            raise
        except Exception as exc:
            log.error("orchestrator_inbox_batch_failed", error=str(exc), rows=len(rows))
            result = self._record_one_by_one(raws, rows, dead, result)
        if dead:
            self._request_relay_quietly()
        return result

    def _request_relay_quietly(self) -> None:
        """The dead letters are committed; if Redis is away, beat's relay tick publishes them."""
        try:
            self.enqueue_relay()
        except Exception as exc:
            log.warning("orchestrator_relay_request_failed", error=str(exc))

    def _classify_into(
        self,
        raw: RawMessage,
        rows: list[NewInbox],
        dead: list[DeadLetterRecord],
        result: BatchResult,
    ) -> None:
        try:
            c = self.processor.classify(raw)
        except InvalidInput as exc:
            dead.append(
                DeadLetterRecord(
                    raw_dead_letter_id(raw),
                    exc.category.value,
                    exc.reason,
                    raw,
                    exc.session_id,
                    exc.message_id,
                )
            )
            result.dead_by_category[exc.category.value] = (
                result.dead_by_category.get(exc.category.value, 0) + 1
            )
            return
        if c.kind is Kind.SKIP:
            result.skipped += 1
            log.debug(
                "orchestrator_domain_event_ignored",
                event_type=c.message_type,
                session_id=c.session_id,
                correlation_id=c.correlation_id,
            )
            return
        result.by_kind[c.kind.value] = result.by_kind.get(c.kind.value, 0) + 1
        rows.append(inbox_entry(raw, c))

    def _drop_done(self, rows: list[NewInbox]) -> list[NewInbox]:
        """Fast path: messages Redis remembers as done need no database round trip."""
        if not rows or self.state is None:
            return rows
        try:
            done = self.state.done_among([(r.raw.topic, r.message_id) for r in rows])
        except TransientError:
            return rows  # Redis forgot or is down: the database decides
        return [r for r in rows if (r.raw.topic, r.message_id) not in done]

    def _record(
        self, rows: list[NewInbox], dead: list[DeadLetterRecord], result: BatchResult
    ) -> None:
        with self.store.transaction() as tx:
            new = tx.insert_inbox_batch(rows)
            old = [
                (r.raw.topic, r.message_id) for r in rows if (r.raw.topic, r.message_id) not in new
            ]
            waiting = tx.unprocessed_among(old)
            for record in dead:
                self._dead_letter(tx, record, result)
            crash_point("ingest.before_commit")
        crash_point("ingest.after_commit")
        result.recorded += len(new)
        result.redelivered += len(old)
        for r in rows:
            k = (r.raw.topic, r.message_id)
            if k in new or k in waiting:
                self._add_trigger(result, r)

    def _record_one_by_one(
        self,
        raws: Sequence[RawMessage],
        rows: list[NewInbox],
        dead: list[DeadLetterRecord],
        result: BatchResult,
    ) -> BatchResult:
        fresh = BatchResult(
            received=len(raws),
            skipped=result.skipped,
            by_kind=result.by_kind,
            dead_by_category=result.dead_by_category,
        )
        for record in dead:
            with self.store.transaction() as tx:
                self._dead_letter(tx, record, fresh)
        for row in rows:
            try:
                self._record([row], [], fresh)
            except TransientError:
                raise
            except Exception as exc:
                record = DeadLetterRecord(
                    raw_dead_letter_id(row.raw),
                    Category.PROCESSING_FAILED.value,
                    f"the inbox refused the message: {exc}",
                    row.raw,
                    row.session_id,
                    row.message_id,
                )
                with self.store.transaction() as tx:
                    self._dead_letter(tx, record, fresh)
        return fresh

    def _dead_letter(self, tx: Transaction, record: DeadLetterRecord, result: BatchResult) -> None:
        self.processor.write_dead_letter(tx, record)
        result.dead_lettered += 1

    def _add_trigger(self, result: BatchResult, row: NewInbox) -> None:
        queue = queue_for_topic(row.raw.topic, self.domain_topic)
        if result.triggers.get(row.session_id) != DOMAIN_QUEUE:
            result.triggers[row.session_id] = queue

    def send_triggers(self, result: BatchResult) -> int:
        """Ask for one batched drain per queue the batch's rows go to (coalesced: none when one
        is queued already); a failure is logged and left to the re-drive."""
        sent = 0
        for queue in dict.fromkeys(result.triggers.values()):
            try:
                self.request_drain(queue)
                sent += 1
            except Exception as exc:
                log.error("orchestrator_trigger_failed", queue=queue, error=str(exc))
        return sent

    # -- the consumer loop ---------------------------------------------------------------------

    def run(
        self,
        source: MessageSource,
        topics: list[str],
        stop: threading.Event,
        *,
        batch_size: int = 500,
        poll_timeout_s: float = 0.05,
        max_queue_length: int | None = None,
        queue_length: Callable[[], int] | None = None,
    ) -> None:
        """Consume until `stop` is set; then finish the batch, commit and leave the group."""
        # Assigned again later, a partition starts from its committed offset: a new baseline.
        source.subscribe(topics, on_revoke=self.gaps.forget)
        log.info("orchestrator_ingester_started", topics=topics)
        paused = False
        last_check = 0.0
        try:
            while not stop.is_set():
                if max_queue_length and queue_length and time.monotonic() - last_check > 0.2:
                    last_check = time.monotonic()
                    paused = self._backpressure(
                        source, paused, _length_or_none(queue_length), max_queue_length
                    )
                if paused:
                    source.idle(0.1)
                    continue
                msgs = source.next_batch(batch_size, poll_timeout_s)
                if msgs:
                    self._consume_batch(source, msgs, stop)
        finally:
            source.close()
            log.info("orchestrator_ingester_stopped")

    def _consume_batch(
        self, source: MessageSource, msgs: list[RawMessage], stop: threading.Event
    ) -> None:
        good, rewind = self._admit(msgs)
        if good:
            self._ingest(source, good, stop)
        for gap in rewind:
            source.seek(gap.topic, gap.partition, gap.missing_from)

    def _admit(self, msgs: list[RawMessage]) -> tuple[list[RawMessage], list[Gap]]:
        """The messages before any gap, and the gaps to read again (handled ones first, so the
        offsets stored stop right before the gap)."""
        keep, gaps = self.gaps.admit([_position(m) for m in msgs])
        for gap in gaps:
            self.on_gap(gap)
            (log.error if gap.accepted else log.warning)(
                "orchestrator_consumer_gap",
                topic=gap.topic,
                partition=gap.partition,
                missing_from=gap.missing_from,
                resumed_at=gap.resumed_at,
                attempt=gap.attempt,
                action="accepted as a hole" if gap.accepted else "reading again",
            )
        return [msgs[i] for i in keep], [g for g in gaps if not g.accepted]

    def _ingest(self, source: MessageSource, good: list[RawMessage], stop: threading.Event) -> None:
        result = self._handle_with_retry(good, stop)
        if result is None:
            return
        source.store_offsets(good)
        crash_point("ingest.after_offsets")
        self.send_triggers(result)
        self.on_batch(result)
        log.debug(
            "orchestrator_batch_ingested",
            received=result.received,
            recorded=result.recorded,
            skipped=result.skipped,
            dead_lettered=result.dead_lettered,
            sessions=len(result.triggers),
        )

    def _handle_with_retry(
        self, raws: list[RawMessage], stop: threading.Event
    ) -> BatchResult | None:
        """The database may be briefly down: keep the batch and retry with backoff (capped).

        None when asked to stop meanwhile: the batch is abandoned with its offsets unstored,
        so Kafka redelivers it to whoever consumes next."""
        delay = 0.1
        while True:
            try:
                return self.handle_batch(raws)
            except TransientError as exc:
                log.warning("orchestrator_inbox_unavailable", error=str(exc), retry_in_s=delay)
                if stop.wait(delay):
                    log.warning("orchestrator_batch_abandoned", messages=len(raws))
                    return None
                delay = min(delay * 2, 5.0)

    def _backpressure(
        self, source: MessageSource, paused: bool, length: int | None, limit: int
    ) -> bool:
        if length is None:
            return paused
        if not paused and length > limit:
            source.pause()
            log.warning("orchestrator_ingester_paused", queue_length=length, limit=limit)
            return True
        if paused and length <= limit * 0.8:
            source.resume()
            log.info("orchestrator_ingester_resumed", queue_length=length)
            return False
        return paused


def _position(m: RawMessage) -> tuple[str, int, int]:
    if m.partition is None or m.offset is None:
        raise ValueError(f"a message of {m.topic} without its partition and offset")
    return m.topic, m.partition, m.offset


def _length_or_none(queue_length: Callable[[], int]) -> int | None:
    """The Celery queue length, or None while Redis cannot say (backpressure then holds still)."""
    try:
        return queue_length()
    except TransientError as exc:
        log.warning("orchestrator_queue_length_unavailable", error=str(exc))
        return None
