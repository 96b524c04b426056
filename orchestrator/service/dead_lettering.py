"""Writing dead letters: an input that cannot be processed is kept, announced and never silent.

A dead letter is stored byte for byte with its reason and published on the DLQ topic through the
outbox, in the transaction that gave up on it; its id derives from the input (and the category),
so dead-lettering the same input again writes nothing. Its DLQ record is kept under
`max_bytes` (the value cut when it must be: `orchestrator.core.dlq`).

An input whose effects could never be published (a fact or capability message over the
producer's message limit) is a dead letter too (`too_large`), not outbox rows that would fail
(`check_effects_fit`).
"""

from __future__ import annotations

from typing import Protocol

from orchestrator.core.dlq import DEFAULT_MESSAGE_MAX_BYTES
from orchestrator.core.errors import Category, InvalidInput
from orchestrator.core.outbound import (
    capability_message,
    dead_letter_message,
    fact_message,
    inbox_dead_letter_id,
    message_size,
)
from orchestrator.core.plan import MessageRow, Plan
from orchestrator.core.records import DeadLetterRecord, InboxRow, Outcome, Status
from orchestrator.observability.logs import get_logger
from orchestrator.service.ports import Transaction

log = get_logger("orchestrator.agent")


def write_dead_letter(
    tx: Transaction,
    record: DeadLetterRecord,
    dlq_topic: str,
    max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES,
) -> bool:
    """Store the dead letter and its DLQ message (at most `max_bytes`); False when it was
    already there."""
    if record.category == Category.MISSING_COMMAND_TYPE:
        log.warning("orchestrator_domain_event_missing_command_type", reason=record.reason)
    log.warning(
        "orchestrator_dead_lettered",
        dead_letter_id=record.id,
        dlq_category=record.category,
        dlq_reason=record.reason,
        source_topic=record.raw.topic,
        source_offset=record.raw.offset,
    )
    wrote = tx.insert_dead_letter(record)
    if wrote:
        tx.insert_outbox(dead_letter_message(record, dlq_topic, max_bytes))
    return wrote


def row_record(row: InboxRow, category: str, reason: str) -> DeadLetterRecord:
    """The dead letter of an inbox row: one per (row, category)."""
    return DeadLetterRecord(
        inbox_dead_letter_id(row.topic, row.message_id, category),
        category,
        reason,
        row.raw(),
        row.session_id,
        row.message_id,
    )


def dead_letter_row(
    tx: Transaction,
    row: InboxRow,
    exc: InvalidInput,
    dlq_topic: str,
    max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES,
) -> Outcome:
    """Dead-letter an inbox row and mark it processed: it never blocks its session again."""
    record = row_record(row, exc.category.value, exc.reason)
    wrote = write_dead_letter(tx, record, dlq_topic, max_bytes)
    tx.mark_processed(row.id, Status.DEAD_LETTERED.value, exc.reason)
    return Outcome(
        Status.DEAD_LETTERED,
        row.message_id,
        row.session_id,
        inbox_id=row.id,
        dead_letter_id=record.id,
        category=record.category,
        reason=exc.reason,
        wrote_outbox=wrote,
    )


def give_up(
    tx: Transaction,
    row: InboxRow,
    max_attempts: int,
    dlq_topic: str,
    max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES,
) -> Outcome:
    """A row that failed (or killed its worker) too often becomes a dead letter."""
    reason = f"processing failed {row.attempts - 1} times (limit {max_attempts})"
    exc = InvalidInput(Category.PROCESSING_FAILED, reason)
    return dead_letter_row(tx, row, exc, dlq_topic, max_bytes)


def dispatch_failed(
    tx: Transaction,
    row: InboxRow,
    message: MessageRow,
    exc: Exception,
    outcome: Outcome,
    dlq_topic: str,
    max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES,
) -> None:
    """A capability message that could not be dispatched: the row's facts still commit, and
    the failure becomes a replayable dead letter recorded on the outcome."""
    log.error(
        "orchestrator_async_task_create_failed", task_type=message.message_type, error=str(exc)
    )
    category = Category.CAPABILITY_DISPATCH_FAILED.value
    record = row_record(row, category, f"dispatching {message.message_type} failed: {exc}")
    outcome.wrote_outbox |= write_dead_letter(tx, record, dlq_topic, max_bytes)
    outcome.dispatch_failed = True
    outcome.dead_letter_id = record.id
    outcome.category = category
    outcome.reason = record.reason


class PublishLimits(Protocol):
    """Where a plan's messages go and the largest message the producer sends (the processor's
    configuration)."""

    @property
    def domain_topic(self) -> str: ...
    @property
    def task_topic_prefix(self) -> str: ...
    @property
    def max_publish_bytes(self) -> int: ...


def check_effects_fit(plan: Plan, traceparent: str | None, to: PublishLimits) -> None:
    """Raise `InvalidInput(too_large)` when a fact or capability message of `plan` would be
    over the producer's message limit: the relay could never send it, so the input is a dead
    letter instead (replayable once `KAFKA_MESSAGE_MAX_BYTES` and the broker allow it)."""
    limit = to.max_publish_bytes
    messages = [fact_message(fact, to.domain_topic, traceparent) for fact in plan.facts]
    messages += [capability_message(m, traceparent, to.task_topic_prefix) for m in plan.messages]
    for message in messages:
        size = message_size(message)
        if size > limit:
            raise InvalidInput(
                Category.TOO_LARGE,
                f"its {message.kind} {message.message_type} would be {size} bytes, over the"
                f" producer's message limit of {limit} (KAFKA_MESSAGE_MAX_BYTES)",
            )
