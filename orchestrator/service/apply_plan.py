"""Writing a plan's effects in the transaction of the message that caused them.

Facts with their outbox rows, then task completions, then each capability message with its
AsyncTask. A capability dispatch runs in a savepoint: if it fails, the facts still commit and
the failure becomes a replayable dead letter, so nothing is lost and nothing is silent.

One task per correlation (docs/architecture.md): a capability message whose type already has
an active AsyncTask of the same correlation, held by another message, is not sent.

Each step logs the source design's event for it (docs/operations.md, "Log events").
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from orchestrator.core.outbound import capability_message, fact_message
from orchestrator.core.plan import Completion, FactRow, MessageRow, Plan
from orchestrator.core.records import InboxRow, OutboxMessage, Outcome
from orchestrator.observability.logs import get_logger
from orchestrator.service.dead_lettering import dispatch_failed
from orchestrator.service.outcome_latency import fact_outcome
from orchestrator.service.ports import Transaction
from orchestrator.service.step_logs import debug_on, steps

log = get_logger("orchestrator.agent")


class Destinations(Protocol):
    """Where the effects go and how long a task may take (the processor's configuration)."""

    @property
    def domain_topic(self) -> str: ...
    @property
    def dlq_topic(self) -> str: ...
    @property
    def dlq_max_bytes(self) -> int: ...
    @property
    def task_topic_prefix(self) -> str: ...
    @property
    def task_timeout(self) -> Callable[[str], float]: ...


def apply_plan(
    tx: Transaction,
    row: InboxRow,
    plan: Plan,
    now: datetime,
    outcome: Outcome,
    to: Destinations,
) -> None:
    """Write every effect of `plan`, recording the ids written on `outcome`."""
    steps.debug(
        "orchestrator_executing_event_action",
        handler=plan.handler,
        facts=len(plan.facts),
        messages=len(plan.messages),
        completions=len(plan.completions),
    )
    for fact in plan.facts:
        _persist(tx, row, fact, outcome, to)
    if plan.facts and debug_on():
        log.debug(
            "orchestrator_domain_event_persisted",
            event_ids=[f.event_id for f in plan.facts],
            event_types=[f.event_type for f in plan.facts],
        )
    for completion in plan.completions:
        _complete(tx, completion, outcome)
    for message in plan.messages:
        _dispatch(tx, row, message, now, outcome, to)


# -- facts -----------------------------------------------------------------------------------


def _persist(
    tx: Transaction, row: InboxRow, fact: FactRow, outcome: Outcome, to: Destinations
) -> None:
    """The fact and, when it is new, its outbox row. One INSERT ... ON CONFLICT DO NOTHING is
    the existence check and the creation; an error rolls the whole message back (retried)."""
    steps.debug(
        "orchestrator_persisting_domain_event", event_type=fact.event_type, event_id=fact.event_id
    )
    try:
        new, wrote = _insert_fact(tx, fact, fact_message(fact, to.domain_topic, row.traceparent))
        if new:
            outcome.wrote_outbox |= wrote
            _measure(tx, fact, outcome, to)
    except Exception as exc:
        log.error(
            "orchestrator_domain_event_persist_failed",
            event_type=fact.event_type,
            event_id=fact.event_id,
            error=repr(exc),
        )
        raise
    steps.debug(
        "orchestrator_domain_event_persist_completed",
        event_id=fact.event_id,
        new=new,
        outbox_written=wrote,
    )
    outcome.fact_ids.append(fact.event_id)
    outcome.fact_types.append(fact.event_type)


def _insert_fact(tx: Transaction, fact: FactRow, message: OutboxMessage) -> tuple[bool, bool]:
    """The fact and, when it is new, its outbox row (one statement): (new, outbox written)."""
    prefix = fact.event_type.split(".", 1)[0]
    try:
        new, wrote = tx.insert_fact_with_outbox(fact, f"{prefix}Session", message)
    except Exception as exc:
        log.error(
            "orchestrator_existing_domain_event_check_failed",
            event_type=fact.event_type,
            event_id=fact.event_id,
            error=repr(exc),
        )
        raise
    if new:
        steps.debug(
            "orchestrator_no_existing_domain_event_found",
            event_type=fact.event_type,
            causation_id=fact.causation_id,
        )
        steps.debug(
            "orchestrator_creating_new_domain_event",
            event_type=fact.event_type,
            event_id=fact.event_id,
        )
        steps.debug("orchestrator_checking_outbox_entry", outbox_id=message.id, outbox_kind="fact")
    else:
        steps.debug(
            "orchestrator_using_existing_domain_event",
            event_type=fact.event_type,
            event_id=fact.event_id,
        )
    return new, wrote


def _measure(tx: Transaction, fact: FactRow, outcome: Outcome, to: Destinations) -> None:
    """An outcome fact just written: its command's end-to-end latency (one query, only here)."""
    ends = fact_outcome(fact.event_type)
    if ends is None or fact.correlation_id is None:
        return
    age = tx.correlation_age_s(fact.correlation_id, to.domain_topic)
    if age is not None:
        outcome.command_latency.append((ends[0], ends[1], age))


# -- task completions ------------------------------------------------------------------------


def _complete(tx: Transaction, completion: Completion, outcome: Outcome) -> None:
    prefix = completion.expect_task_prefix
    steps.debug("orchestrator_completing_async_task", expect_task_prefix=prefix)
    if not _completion_correlation(completion):
        return
    steps.debug(
        "orchestrator_searching_async_task_to_complete",
        task_correlation_id=completion.correlation_id,
        expect_task_prefix=prefix,
    )
    result = tx.complete_task(completion)
    if result.task_id is not None:
        steps.debug(
            "orchestrator_async_task_found_for_completion",
            task_id=result.task_id,
            state=result.state,
            expect_task_prefix=prefix,
        )
    _log_completion(prefix, result.state, result.task_id)
    if result.task_id and result.state == "completed":
        outcome.completed_task_ids.append(result.task_id)
        if result.age_s is not None:
            outcome.roundtrip_s.append(result.age_s)


def _completion_correlation(completion: Completion) -> bool:
    """Whether the completion names a correlation to search by (the source parsed it as a
    UUID; ours is any non-empty string, from the header or `data.correlation_id`)."""
    if completion.correlation_id is not None:
        steps.debug(
            "orchestrator_async_task_complete_correlation_parsed",
            task_correlation_id=completion.correlation_id,
        )
        return True
    given = completion.result_data.get("correlation_id")
    if given is not None:
        log.warning(
            "orchestrator_async_task_complete_correlation_parse_failed",
            value_type=type(given).__name__,
            expect_task_prefix=completion.expect_task_prefix,
        )
    log.warning(
        "orchestrator_async_task_complete_skipped",
        expect_task_prefix=completion.expect_task_prefix,
        reason="the result has no correlation id: no task to complete",
    )
    return False


def _log_completion(prefix: str, state: str, task_id: str | None) -> None:
    if state == "completed":
        steps.debug(
            "orchestrator_async_task_completed_success",
            task_id=task_id,
            expect_task_prefix=prefix,
        )
    elif state == "late":
        log.warning(
            "orchestrator_async_task_late_result", task_id=task_id, expect_task_prefix=prefix
        )
    else:
        log.warning("orchestrator_async_task_not_found_for_completion", expect_task_prefix=prefix)


# -- capability messages and their AsyncTasks ------------------------------------------------


def _dispatch(
    tx: Transaction,
    row: InboxRow,
    message: MessageRow,
    now: datetime,
    outcome: Outcome,
    to: Destinations,
) -> None:
    """The AsyncTask and its capability message, together or not at all (a savepoint)."""
    steps.debug(
        "orchestrator_returning_capability_message",
        message_type=message.message_type,
        topic=message.topic,
    )
    deadline = now + timedelta(seconds=to.task_timeout(message.message_type))
    outbox = capability_message(message, row.traceparent, to.task_topic_prefix)
    holder: str | None = None
    try:
        with tx.savepoint():
            steps.debug(
                "orchestrator_creating_async_task",
                task_type=message.message_type,
                task_id=message.message_id,
            )
            _log_task_correlation(message)
            steps.debug("orchestrator_checking_existing_task", task_type=message.message_type)
            # The common case in one statement: a new task and its message.
            created, wrote = tx.create_task_with_outbox(message, deadline, outbox)
            if created:
                steps.debug(
                    "orchestrator_creating_new_async_task",
                    task_id=message.message_id,
                    task_type=message.message_type,
                )
            else:
                holder = tx.active_task_id(message.correlation_id, message.message_type)
            if not created and holder in (None, message.message_id):
                steps.debug(
                    "orchestrator_checking_outbox_entry",
                    outbox_id=outbox.id,
                    outbox_kind=outbox.kind,
                )
                wrote = tx.insert_outbox(outbox)
    except Exception as exc:
        dispatch_failed(tx, row, message, exc, outcome, to.dlq_topic, to.dlq_max_bytes)
        return
    # Reported only once the savepoint held: a rolled-back task is never announced.
    if created:
        steps.debug(
            "orchestrator_async_task_created_success",
            task_id=message.message_id,
            task_type=message.message_type,
        )
        outcome.task_ids.append(message.message_id)
    else:
        steps.debug(
            "orchestrator_async_task_already_exists",
            task_type=message.message_type,
            existing_task_id=holder,
        )
        if holder not in (None, message.message_id):
            log.info(
                "orchestrator_async_task_skipped",
                task_type=message.message_type,
                task_id=message.message_id,
                existing_task_id=holder,
                reason="an active task of this correlation and type exists: not sent",
            )
            return
    outcome.wrote_outbox |= wrote
    outcome.message_ids.append(message.message_id)


def _log_task_correlation(message: MessageRow) -> None:
    """The source parsed the correlation as a UUID and skipped the task without one; ours is an
    opaque string, and a task without one is still created (tracked by its id only)."""
    if message.correlation_id is not None:
        steps.debug(
            "orchestrator_async_task_correlation_parsed",
            task_correlation_id=message.correlation_id,
        )
    else:
        log.warning(
            "orchestrator_async_task_correlation_parse_failed",
            task_type=message.message_type,
            reason="no correlation id: no result can complete the task, it will time out",
        )
