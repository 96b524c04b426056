"""Writing a plan's effects in the transaction of the message that caused them.

Facts with their outbox rows, then task completions, then each capability message with its
AsyncTask. A capability dispatch runs in a savepoint: if it fails, the facts still commit and
the failure becomes a replayable dead letter, so nothing is lost and nothing is silent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from orchestrator.core.outbound import capability_message, fact_message
from orchestrator.core.plan import MessageRow, Plan
from orchestrator.core.records import InboxRow, Outcome
from orchestrator.observability.logs import get_logger
from orchestrator.service.dead_lettering import dispatch_failed
from orchestrator.service.ports import Transaction

log = get_logger("orchestrator.agent")


class Destinations(Protocol):
    """Where the effects go and how long a task may take (the processor's configuration)."""

    @property
    def domain_topic(self) -> str: ...
    @property
    def dlq_topic(self) -> str: ...
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
                fact_message(fact, to.domain_topic, row.traceparent)
            )
        outcome.fact_ids.append(fact.event_id)
        outcome.fact_types.append(fact.event_type)
    for completion in plan.completions:
        log.debug(
            "orchestrator_completing_async_task",
            expect_task_prefix=completion.expect_task_prefix,
        )
        result = tx.complete_task(completion)
        _log_completion(completion.expect_task_prefix, result.state, result.task_id)
        if result.task_id and result.state == "completed":
            outcome.completed_task_ids.append(result.task_id)
            if result.age_s is not None:
                outcome.roundtrip_s.append(result.age_s)
    for message in plan.messages:
        _dispatch(tx, row, message, now, outcome, to)


def _log_completion(prefix: str, state: str, task_id: str | None) -> None:
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
        log.warning("orchestrator_async_task_not_found_for_completion", expect_task_prefix=prefix)


def _dispatch(
    tx: Transaction,
    row: InboxRow,
    message: MessageRow,
    now: datetime,
    outcome: Outcome,
    to: Destinations,
) -> None:
    """The AsyncTask and its capability message, together or not at all (a savepoint)."""
    log.debug(
        "orchestrator_returning_capability_message",
        message_type=message.message_type,
        topic=message.topic,
    )
    deadline = now + timedelta(seconds=to.task_timeout(message.message_type))
    outbox = capability_message(message, row.traceparent, to.task_topic_prefix)
    try:
        with tx.savepoint():
            log.debug("orchestrator_creating_async_task", task_type=message.message_type)
            created = tx.create_task(message, deadline)
            wrote = tx.insert_outbox(outbox)
    except Exception as exc:
        dispatch_failed(tx, row, message, exc, outcome, to.dlq_topic)
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
