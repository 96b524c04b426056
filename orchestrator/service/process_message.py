"""The orchestrator service: one input message in, all of its effects in one transaction.

`OrchestratorAgent.process_message(raw)` is the source design's entry point: parse, decide
(strategies, handlers), and write the fact, its outbox row, the capability message's outbox row,
the AsyncTask creation or completion and the inbox row marked processed, together. The runtime
records messages in the inbox first and calls `process_row` / `drain_session` instead; both
paths share `_process_locked`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from orchestrator.core.catalogue import QUALITY_REVIEW_TYPES
from orchestrator.core.command_strategies import CommandStrategyRegistry, command_registry
from orchestrator.core.errors import Category, InvalidInput
from orchestrator.core.inbound import CapabilityEvent, RawMessage
from orchestrator.core.outbound import (
    capability_message,
    dead_letter_message,
    fact_message,
    inbox_dead_letter_id,
    raw_dead_letter_id,
)
from orchestrator.core.plan import (
    Classified,
    Kind,
    MessageRow,
    Plan,
    classify,
    inbox_entry,
    plan_capability,
    plan_command,
)
from orchestrator.core.records import DeadLetterRecord, InboxRow, Outcome, Status
from orchestrator.core.result_handlers import (
    EventHandlerRegistry,
    event_handler_registry,
    review_outcome_actions,
    target_type_of,
)
from orchestrator.core.wire import fact_type
from orchestrator.observability.logs import bound, get_logger
from orchestrator.service.crash_points import crash_point
from orchestrator.service.ports import Store, Transaction

log = get_logger("orchestrator.agent")


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class AgentConfig:
    domain_topic: str = "genesis.domain.events"
    dlq_topic: str = "genesis.orchestrator.dlq"
    max_message_bytes: int = 1_048_576
    max_attempts: int = 5
    command_mapping: Mapping[str, str] = field(default_factory=dict)
    task_topic_prefix: str = ""
    task_timeout: Callable[[str], float] = lambda _type: 900.0


class OrchestratorAgent:
    """Pure decisions (strategies, handlers) applied through the `Store` port."""

    def __init__(
        self,
        store: Store,
        config: AgentConfig | None = None,
        commands: CommandStrategyRegistry = command_registry,
        handlers: EventHandlerRegistry = event_handler_registry,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.config = config or AgentConfig()
        self.commands = commands
        self.handlers = handlers
        self.clock = clock

    # -- classification ------------------------------------------------------------------------

    def classify(self, raw: RawMessage) -> Classified:
        return classify(
            raw, self.commands, self.config.max_message_bytes, self.config.command_mapping
        )

    # -- the standalone entry point --------------------------------------------------------------

    def process_message(self, raw: RawMessage) -> Outcome:
        """Record and process one input message; a second delivery writes nothing."""
        log.debug(
            "orchestrator_message_received",
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
        )
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
        log.debug(
            "orchestrator_domain_event_ignored",
            event_type=c.message_type,
            correlation_id=c.correlation_id,
            session_id=c.session_id,
        )
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
        level = "warning"
        if record.category == Category.MISSING_COMMAND_TYPE:
            getattr(log, level)(
                "orchestrator_domain_event_missing_command_type", reason=record.reason
            )
        getattr(log, level)(
            "orchestrator_dead_lettered",
            dead_letter_id=record.id,
            dlq_category=record.category,
            dlq_reason=record.reason,
            source_topic=record.raw.topic,
            source_offset=record.raw.offset,
        )
        wrote = tx.insert_dead_letter(record)
        if wrote:
            tx.insert_outbox(dead_letter_message(record, self.config.dlq_topic))
        return wrote

    # -- the runtime entry points ----------------------------------------------------------------

    def drain_session(self, session_id: str, max_rows: int | None = None) -> list[Outcome]:
        """Process the session's unprocessed inbox rows in arrival order until none is left."""
        outcomes: list[Outcome] = []
        with self.store.session():
            while max_rows is None or len(outcomes) < max_rows:
                row = self.store.begin_next(session_id)
                if row is None:
                    break
                outcomes.append(self.process_row(row))
        return outcomes

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
                return self._give_up(tx, current)
            return self._process_locked(tx, current)

    def _give_up(self, tx: Transaction, row: InboxRow) -> Outcome:
        """A row that failed (or killed its worker) too often becomes a dead letter."""
        reason = f"processing failed {row.attempts - 1} times (limit {self.config.max_attempts})"
        return self._dead_letter_row(tx, row, InvalidInput(Category.PROCESSING_FAILED, reason))

    def _dead_letter_row(self, tx: Transaction, row: InboxRow, exc: InvalidInput) -> Outcome:
        record = DeadLetterRecord(
            inbox_dead_letter_id(row.topic, row.message_id, exc.category.value),
            exc.category.value,
            exc.reason,
            row.raw(),
            row.session_id,
            row.message_id,
        )
        wrote = self.write_dead_letter(tx, record)
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

    # -- the shared core -------------------------------------------------------------------------

    def _process_locked(self, tx: Transaction, row: InboxRow) -> Outcome:
        if row.processed:
            log.info("orchestrator_message_duplicate", message_id=row.message_id)
            return Outcome(Status.DUPLICATE, row.message_id, row.session_id, inbox_id=row.id)
        now = self.clock()
        try:
            c = self.classify(row.raw())
            plan = self._plan(tx, c, iso(now))
        except InvalidInput as exc:
            if exc.category == Category.UNKNOWN_COMMAND:
                log.warning("orchestrator_command_mapping_failed", reason=exc.reason)
            return self._dead_letter_row(tx, row, exc)
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
        self._apply(tx, row, plan, now, outcome)
        tx.mark_processed(row.id, outcome.status.value)
        crash_point("drain.before_commit")
        event = (
            "orchestrator_domain_event_processed"
            if c.kind is Kind.COMMAND
            else "orchestrator_capability_event_processed"
        )
        log.info(
            event,
            message_type=c.message_type,
            facts=outcome.fact_types,
            tasks=outcome.task_ids,
            completed=outcome.completed_task_ids,
        )
        return outcome

    def _plan(self, tx: Transaction, c: Classified, now: str) -> Plan:
        if c.kind is Kind.COMMAND:
            assert c.command is not None
            log.debug("orchestrator_processing_command", command_type=c.message_type)
            plan = plan_command(c.command, self.commands, self.config.command_mapping, now)
            log.debug(
                "orchestrator_command_mapped",
                command_type=c.message_type,
                requested_action=plan.notes.get("requested_action"),
            )
            return plan
        evt = c.envelope
        assert isinstance(evt, CapabilityEvent)
        log.debug(
            "orchestrator_processing_capability_event",
            message_type=evt.type,
            data_keys=sorted(evt.data),
        )
        handled = 0
        if evt.type in QUALITY_REVIEW_TYPES and evt.correlation_id:
            actions = review_outcome_actions(target_type_of(evt.data))
            types = [fact_type("Genesis", a) for a in actions]
            handled = tx.count_handled_reviews(evt.correlation_id, types, evt.id)
        plan = plan_capability(evt, self.handlers, handled, now)
        if plan.handler:
            log.debug("orchestrator_handler_matched", handler=plan.handler, message_type=evt.type)
        return plan

    def _apply(
        self, tx: Transaction, row: InboxRow, plan: Plan, now: datetime, outcome: Outcome
    ) -> None:
        log.debug(
            "orchestrator_executing_event_action",
            facts=len(plan.facts),
            messages=len(plan.messages),
            completions=len(plan.completions),
        )
        for fact in plan.facts:
            log.debug("orchestrator_persisting_domain_event", event_type=fact.event_type)
            prefix = fact.event_type.split(".", 1)[0]
            if tx.insert_fact(fact, f"{prefix}Session"):
                outcome.wrote_outbox |= tx.insert_outbox(
                    fact_message(fact, self.config.domain_topic, row.traceparent)
                )
            outcome.fact_ids.append(fact.event_id)
            outcome.fact_types.append(fact.event_type)
        for completion in plan.completions:
            log.debug(
                "orchestrator_completing_async_task",
                expect_task_prefix=completion.expect_task_prefix,
            )
            result = tx.complete_task(completion)
            self._log_completion(completion.expect_task_prefix, result.state, result.task_id)
            if result.task_id and result.state == "completed":
                outcome.completed_task_ids.append(result.task_id)
                if result.age_s is not None:
                    outcome.roundtrip_s.append(result.age_s)
        for message in plan.messages:
            self._dispatch(tx, row, message, now, outcome)

    def _log_completion(self, prefix: str, state: str, task_id: str | None) -> None:
        if state == "completed":
            log.debug(
                "orchestrator_async_task_completed_success",
                task_id=task_id,
                expect_task_prefix=prefix,
            )
        elif state == "late":
            log.warning(
                "orchestrator_async_task_late_result", task_id=task_id, expect_task_prefix=prefix
            )
        else:
            log.warning(
                "orchestrator_async_task_not_found_for_completion", expect_task_prefix=prefix
            )

    def _dispatch(
        self, tx: Transaction, row: InboxRow, message: MessageRow, now: datetime, outcome: Outcome
    ) -> None:
        """Task + capability message, in a savepoint: if they fail, the fact still commits and
        the failure becomes a replayable dead letter (never silent)."""
        log.debug(
            "orchestrator_returning_capability_message",
            message_type=message.message_type,
            topic=message.topic,
        )
        deadline = now + timedelta(seconds=self.config.task_timeout(message.message_type))
        outbox = capability_message(message, row.traceparent, self.config.task_topic_prefix)
        try:
            with tx.savepoint():
                log.debug("orchestrator_creating_async_task", task_type=message.message_type)
                created = tx.create_task(message, deadline)
                wrote = tx.insert_outbox(outbox)
        except Exception as exc:
            self._dispatch_failed(tx, row, message, exc, outcome)
            return
        # Reported only once the savepoint held: a rolled-back task is never announced.
        if created:
            log.debug(
                "orchestrator_async_task_created_success",
                task_id=message.message_id,
                task_type=message.message_type,
            )
            outcome.task_ids.append(message.message_id)
        else:
            log.debug("orchestrator_async_task_already_exists", task_type=message.message_type)
        outcome.wrote_outbox |= wrote
        outcome.message_ids.append(message.message_id)

    def _dispatch_failed(
        self, tx: Transaction, row: InboxRow, message: MessageRow, exc: Exception, outcome: Outcome
    ) -> None:
        log.error(
            "orchestrator_async_task_create_failed", task_type=message.message_type, error=str(exc)
        )
        category = Category.CAPABILITY_DISPATCH_FAILED.value
        record = DeadLetterRecord(
            inbox_dead_letter_id(row.topic, row.message_id, category),
            category,
            f"dispatching {message.message_type} failed: {exc}",
            row.raw(),
            row.session_id,
            row.message_id,
        )
        outcome.wrote_outbox |= self.write_dead_letter(tx, record)
        outcome.dispatch_failed = True
        outcome.dead_letter_id = record.id
        outcome.category = category
        outcome.reason = record.reason
