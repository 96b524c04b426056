"""The message processor: one input message in, all of its effects in one transaction.

`MessageProcessor.process_message(raw)` records and processes a message in one go. The runtime
records messages in the inbox first (the ingester) and calls `process_row` for each row a drain
hands it (`service.drain`). Both paths parse, decide (strategies, handlers) and write the facts,
their outbox rows, the capability messages with their AsyncTasks, the completions and the inbox
row marked processed, together, through `_process_locked`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from orchestrator.core.catalogue import QUALITY_REVIEW_TYPES
from orchestrator.core.classify import Classified, Kind, classify, inbox_entry
from orchestrator.core.clock import iso, utc_now
from orchestrator.core.command_strategies import CommandStrategyRegistry, command_registry
from orchestrator.core.dlq import DEFAULT_MESSAGE_MAX_BYTES
from orchestrator.core.errors import Category, InvalidInput
from orchestrator.core.inbound import CapabilityEvent, DomainEvent, RawMessage
from orchestrator.core.outbound import raw_dead_letter_id
from orchestrator.core.plan import Plan, plan_capability, plan_command
from orchestrator.core.records import DeadLetterRecord, InboxRow, Outcome, Status
from orchestrator.core.result_handlers import (
    EventHandlerRegistry,
    event_handler_registry,
    review_outcome_actions,
    target_type_of,
)
from orchestrator.core.wire import fact_type
from orchestrator.observability.logs import bound, get_logger
from orchestrator.service import dead_lettering
from orchestrator.service.apply_plan import apply_plan
from orchestrator.service.crash_points import crash_point
from orchestrator.service.ports import Store, Transaction
from orchestrator.service.step_logs import (
    capability_event_steps,
    domain_event_steps,
    steps,
    trying_handlers,
)

log = get_logger("orchestrator.agent")


@dataclass(frozen=True)
class ProcessorConfig:
    domain_topic: str = "genesis.domain.events"
    dlq_topic: str = "genesis.orchestrator.dlq"
    max_message_bytes: int = 1_048_576
    max_attempts: int = 5
    max_publish_bytes: int = DEFAULT_MESSAGE_MAX_BYTES  # the producer's message limit
    dlq_max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES  # the largest DLQ record
    command_mapping: Mapping[str, str] = field(default_factory=dict)
    task_topic_prefix: str = ""
    task_timeout: Callable[[str], float] = lambda _type: 900.0


class MessageProcessor:
    """Pure decisions (strategies, handlers) applied through the `Store` port."""

    def __init__(
        self,
        store: Store,
        config: ProcessorConfig | None = None,
        commands: CommandStrategyRegistry = command_registry,
        handlers: EventHandlerRegistry = event_handler_registry,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.config = config or ProcessorConfig()
        self.commands = commands
        self.handlers = handlers
        self.clock = clock

    def classify(self, raw: RawMessage) -> Classified:
        return classify(
            raw, self.commands, self.config.max_message_bytes, self.config.command_mapping
        )

    # -- record and process in one go ----------------------------------------------------------

    def process_message(self, raw: RawMessage) -> Outcome:
        """Record and process one input message; a second delivery writes nothing."""
        try:
            c = self.classify(raw)
        except InvalidInput as exc:
            return self.dead_letter_raw(raw, exc)
        if c.kind is Kind.SKIP:
            return self._skipped(c)
        new = inbox_entry(raw, c)
        with (
            bound(
                correlation_id=c.correlation_id, session_id=c.session_id, traceparent=c.traceparent
            ),
            self.store.transaction() as tx,
        ):
            tx.lock_session(str(c.session_id))
            inserted = tx.insert_inbox([new], triggered=False)
            row = (
                tx.inbox_for_update(inserted[0])
                if inserted
                else tx.find_inbox(raw.topic, c.message_id)
            )
            if row is None:  # pragma: no cover - the insert or the conflict guarantees a row
                raise RuntimeError("inbox row vanished inside its own transaction")
            return self._process_locked(tx, row)

    def _skipped(self, c: Classified) -> Outcome:
        with bound(
            correlation_id=c.correlation_id, session_id=c.session_id, traceparent=c.traceparent
        ):
            if isinstance(c.envelope, DomainEvent):
                domain_event_steps(c.envelope)
            steps.debug("orchestrator_domain_event_ignored", event_type=c.message_type)
        return Outcome(
            Status.IGNORED,
            c.message_id,
            c.session_id,
            kind=c.kind.value,
            message_type=c.message_type,
        )

    def dead_letter_raw(
        self,
        raw: RawMessage,
        exc: InvalidInput,
        session_id: str | None = None,
        message_id: str | None = None,
    ) -> Outcome:
        """Store an unparseable input and its DLQ record; idempotent on the input's bytes."""
        session_id = session_id or exc.session_id
        message_id = message_id or exc.message_id
        record = DeadLetterRecord(
            raw_dead_letter_id(raw), exc.category.value, exc.reason, raw, session_id, message_id
        )
        with self.store.transaction() as tx:
            wrote = self.write_dead_letter(tx, record)
        return Outcome(
            Status.DEAD_LETTERED,
            message_id,
            session_id,
            dead_letter_id=record.id,
            category=record.category,
            reason=record.reason,
            wrote_outbox=wrote,
        )

    def write_dead_letter(self, tx: Transaction, record: DeadLetterRecord) -> bool:
        """Store a dead letter and its DLQ message in `tx`; False when it was already there."""
        if record.category == Category.UNKNOWN_SHAPE:
            # The source ignored a message of neither shape; we keep it as a dead letter.
            log.warning(
                "orchestrator_ignored_message",
                dead_letter_id=record.id,
                source_topic=record.raw.topic,
                reason=record.reason,
            )
        c = self.config
        return dead_lettering.write_dead_letter(tx, record, c.dlq_topic, c.dlq_max_bytes)

    # -- the runtime entry point ---------------------------------------------------------------

    def process_row(self, row: InboxRow) -> Outcome:
        """Process one inbox row whose attempt was already counted (`Store.begin_next`)."""
        with (
            bound(
                correlation_id=row.correlation_id,
                session_id=row.session_id,
                traceparent=row.traceparent,
            ),
            self.store.transaction() as tx,
        ):
            current = tx.lock_and_fetch(row.id, row.session_id)
            if current is None or current.processed:
                return Outcome(Status.DUPLICATE, row.message_id, row.session_id, inbox_id=row.id)
            if current.attempts > self.config.max_attempts:
                c = self.config
                return dead_lettering.give_up(
                    tx, current, c.max_attempts, c.dlq_topic, c.dlq_max_bytes
                )
            return self._process_locked(tx, current)

    def process_held(self, tx: Transaction, row: InboxRow) -> Outcome:
        """Process a row of a session the caller holds, in the caller's (batch) transaction;
        its attempt was counted when the batch was claimed."""
        with bound(
            correlation_id=row.correlation_id,
            session_id=row.session_id,
            traceparent=row.traceparent,
        ):
            return self._process_locked(tx, row)

    # -- the shared core -------------------------------------------------------------------------

    def _process_locked(self, tx: Transaction, row: InboxRow) -> Outcome:
        steps.debug(
            "orchestrator_message_received",
            topic=row.topic,
            partition=row.partition,
            offset=row.offset,
            inbox_id=row.id,
            attempts=row.attempts,
        )
        if row.processed:
            log.info("orchestrator_message_duplicate", message_id=row.message_id)
            return Outcome(Status.DUPLICATE, row.message_id, row.session_id, inbox_id=row.id)
        now = self.clock()
        try:
            c = self.classify(row.raw())
            plan = self._plan(tx, c, iso(now))
            dead_lettering.check_effects_fit(plan, row.traceparent, self.config)
        except InvalidInput as exc:
            if exc.category == Category.UNKNOWN_COMMAND:
                log.warning("orchestrator_command_mapping_failed", reason=exc.reason)
            cfg = self.config
            return dead_lettering.dead_letter_row(tx, row, exc, cfg.dlq_topic, cfg.dlq_max_bytes)
        outcome = Outcome(
            Status.PROCESSED,
            row.message_id,
            row.session_id,
            inbox_id=row.id,
            kind=c.kind.value,
            message_type=c.message_type,
        )
        if plan.empty and c.kind is Kind.CAPABILITY:
            log.info("orchestrator_no_handler_matched", message_type=c.message_type)
            outcome.status = Status.NO_HANDLER
        apply_plan(tx, row, plan, now, outcome, self.config)
        tx.mark_processed(row.id, outcome.status.value)
        crash_point("drain.before_commit")
        done = {
            "message_type": c.message_type,
            "facts": outcome.fact_types,
            "tasks": outcome.task_ids,
            "completed": outcome.completed_task_ids,
        }
        if c.kind is Kind.COMMAND:
            log.info("orchestrator_domain_event_processed", **done)
        else:
            log.info("orchestrator_capability_event_processed", **done)
        return outcome

    def _plan(self, tx: Transaction, c: Classified, now: str) -> Plan:
        if c.kind is Kind.COMMAND:
            assert c.command is not None
            domain_event_steps(c.command.event)
            steps.debug("orchestrator_processing_command", command_type=c.message_type)
            plan = plan_command(c.command, self.commands, self.config.command_mapping, now)
            steps.debug(
                "orchestrator_command_mapped",
                command_type=c.message_type,
                requested_action=plan.notes.get("requested_action"),
            )
            return plan
        evt = c.envelope
        assert isinstance(evt, CapabilityEvent)
        capability_event_steps(evt)
        handled = 0
        if evt.type in QUALITY_REVIEW_TYPES and evt.correlation_id:
            # Earlier reviews of this task already handled: the review loop's round count.
            actions = review_outcome_actions(target_type_of(evt.data))
            types = [fact_type("Genesis", a) for a in actions]
            handled = tx.count_handled_reviews(evt.correlation_id, types, evt.id)
        trying_handlers(evt, self.handlers)
        plan = plan_capability(evt, self.handlers, handled, now)
        if plan.handler:
            steps.debug("orchestrator_handler_matched", handler=plan.handler, message_type=evt.type)
        return plan
