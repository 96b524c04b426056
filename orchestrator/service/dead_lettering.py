"""Writing dead letters: an input that cannot be processed is kept, announced and never silent.

A dead letter is stored byte for byte with its reason and published on the DLQ topic through the
outbox, in the transaction that gave up on it; its id derives from the input (and the category),
so dead-lettering the same input again writes nothing.
"""

from __future__ import annotations

from orchestrator.core.errors import Category, InvalidInput
from orchestrator.core.outbound import dead_letter_message, inbox_dead_letter_id
from orchestrator.core.plan import MessageRow
from orchestrator.core.records import DeadLetterRecord, InboxRow, Outcome, Status
from orchestrator.observability.logs import get_logger
from orchestrator.service.ports import Transaction

log = get_logger("orchestrator.agent")


def write_dead_letter(tx: Transaction, record: DeadLetterRecord, dlq_topic: str) -> bool:
    """Store the dead letter and its DLQ message; False when it was already there."""
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
        tx.insert_outbox(dead_letter_message(record, dlq_topic))
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


def dead_letter_row(tx: Transaction, row: InboxRow, exc: InvalidInput, dlq_topic: str) -> Outcome:
    """Dead-letter an inbox row and mark it processed: it never blocks its session again."""
    record = row_record(row, exc.category.value, exc.reason)
    wrote = write_dead_letter(tx, record, dlq_topic)
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


def give_up(tx: Transaction, row: InboxRow, max_attempts: int, dlq_topic: str) -> Outcome:
    """A row that failed (or killed its worker) too often becomes a dead letter."""
    reason = f"processing failed {row.attempts - 1} times (limit {max_attempts})"
    return dead_letter_row(tx, row, InvalidInput(Category.PROCESSING_FAILED, reason), dlq_topic)


def dispatch_failed(
    tx: Transaction,
    row: InboxRow,
    message: MessageRow,
    exc: Exception,
    outcome: Outcome,
    dlq_topic: str,
) -> None:
    """A capability message that could not be dispatched: the row's facts still commit, and
    the failure becomes a replayable dead letter recorded on the outcome."""
    log.error(
        "orchestrator_async_task_create_failed", task_type=message.message_type, error=str(exc)
    )
    category = Category.CAPABILITY_DISPATCH_FAILED.value
    record = row_record(row, category, f"dispatching {message.message_type} failed: {exc}")
    outcome.wrote_outbox |= write_dead_letter(tx, record, dlq_topic)
    outcome.dispatch_failed = True
    outcome.dead_letter_id = record.id
    outcome.category = category
    outcome.reason = record.reason
