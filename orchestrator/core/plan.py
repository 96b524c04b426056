"""From one parsed input to the exact rows to write: facts, outgoing messages, completions.

Pure: no clock, no I/O. The caller passes `now` and whatever history a decision needs (the
number of reviews already handled). Every id is derived from the causing message, so planning
the same input twice yields the same plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core import ids
from orchestrator.core.command_strategies import CommandStrategyRegistry
from orchestrator.core.errors import Category, InvalidInput
from orchestrator.core.inbound import (
    CapabilityEvent,
    Command,
)
from orchestrator.core.result_handlers import EventAction, EventHandlerRegistry
from orchestrator.core.wire import (
    capability_envelope,
    default_topic,
    fact_envelope,
    fact_type,
    scope_prefix_of,
)


@dataclass(frozen=True, slots=True)
class FactRow:
    event_id: str
    event_type: str
    session_id: str
    correlation_id: str | None
    causation_id: str
    payload: dict[str, Any]
    envelope: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A capability message to dispatch; it is also the id of the AsyncTask that tracks it."""

    message_id: str
    message_type: str
    topic: str
    key: str
    session_id: str
    correlation_id: str | None
    causation_id: str
    envelope: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Completion:
    correlation_id: str | None
    expect_task_prefix: str
    result_data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Plan:
    facts: tuple[FactRow, ...] = ()
    messages: tuple[MessageRow, ...] = ()
    completions: tuple[Completion, ...] = ()
    handler: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.facts or self.messages or self.completions)


def _fact(
    cause_id: str,
    scope_prefix: str,
    session_id: str,
    action: str,
    payload: dict[str, Any],
    correlation_id: str | None,
    now: str,
) -> FactRow:
    event_type = fact_type(scope_prefix, action)
    event_id = ids.derive(cause_id, "fact", event_type)
    envelope = fact_envelope(
        event_id=event_id,
        event_type=event_type,
        scope_prefix=scope_prefix,
        session_id=session_id,
        payload=payload,
        correlation_id=correlation_id,
        causation_id=cause_id,
        created_at=now,
    )
    return FactRow(event_id, event_type, session_id, correlation_id, cause_id, payload, envelope)


def _message(
    cause_id: str,
    scope_prefix: str,
    message: dict[str, Any],
    correlation_id: str | None,
    now: str,
) -> MessageRow:
    msg_type = str(message["type"])
    session_id = str(message.get("session_id") or message.get("_key") or "")
    message_id = ids.derive(cause_id, "capability", msg_type)
    return MessageRow(
        message_id=message_id,
        message_type=msg_type,
        topic=str(message.get("_topic") or default_topic(scope_prefix, msg_type)),
        key=str(message.get("_key") or session_id),
        session_id=session_id,
        correlation_id=correlation_id,
        causation_id=cause_id,
        envelope=capability_envelope(
            message_id=message_id, message=message, correlation_id=correlation_id, ts=now
        ),
    )


def plan_command(
    cmd: Command, commands: CommandStrategyRegistry, mapping: Mapping[str, str] | None, now: str
) -> Plan:
    """A command -> its `*.Requested` fact and (usually) one capability task."""
    event = cmd.event
    mapped = commands.process_command(
        cmd_type=cmd.command_type,
        scope_type=event.scope_type,
        scope_prefix=event.scope_prefix,
        aggregate_id=event.aggregate_id,
        payload=event.payload,
        mapping=mapping,
    )
    if mapped is None:
        raise InvalidInput(Category.UNKNOWN_COMMAND, f"unknown command type {cmd.command_type!r}")
    correlation = event.correlation_id or event.event_id
    payload: dict[str, Any] = {"session_id": event.aggregate_id, "input": cmd.user_input}
    if cmd.user_id is not None:
        payload["user_id"] = cmd.user_id
    if event.created_at is not None:
        payload["timestamp"] = event.created_at
    fact = _fact(
        event.event_id,
        event.scope_prefix,
        event.aggregate_id,
        mapped.requested_action,
        payload,
        correlation,
        now,
    )
    messages: tuple[MessageRow, ...] = ()
    if mapped.capability_message:
        messages = (
            _message(
                event.event_id, event.scope_prefix, mapped.capability_message, correlation, now
            ),
        )
    return Plan(
        facts=(fact,), messages=messages, notes={"requested_action": mapped.requested_action}
    )


def plan_capability(
    evt: CapabilityEvent, handlers: EventHandlerRegistry, handled_reviews: int, now: str
) -> Plan:
    """A capability result -> whatever its handler's EventAction asks for (empty if none)."""
    data = dict(evt.data)
    if evt.correlation_id:  # the source's order: a header beats the body for every effect
        data["correlation_id"] = evt.correlation_id
    name, action = handlers.handle(evt.type, evt.session_id, data, handled_reviews)
    if action is None:
        return Plan()
    return _plan_action(evt, action, data, name, now)


def _plan_action(
    evt: CapabilityEvent, action: EventAction, data: dict[str, Any], handler: str | None, now: str
) -> Plan:
    facts: list[FactRow] = []
    messages: list[MessageRow] = []
    completions: list[Completion] = []
    correlation = evt.correlation_id or _text(data.get("correlation_id"))
    scope_prefix = "Genesis"
    if action.domain_event:
        de = action.domain_event
        scope_prefix = scope_prefix_of(str(de.get("scope_type") or "GENESIS"))
        facts.append(
            _fact(
                evt.id,
                scope_prefix,
                str(de.get("session_id") or evt.session_id),
                str(de["event_action"]),
                dict(de.get("payload") or {}),
                _text(de.get("correlation_id")) or correlation,
                now,
            )
        )
    if action.task_completion:
        tc = action.task_completion
        completions.append(
            Completion(
                _text(tc.get("correlation_id")) or correlation,
                str(tc["expect_task_prefix"]),
                dict(tc.get("result_data") or {}),
            )
        )
    if action.capability_message:
        messages.append(_message(evt.id, scope_prefix, action.capability_message, correlation, now))
    return Plan(tuple(facts), tuple(messages), tuple(completions), handler)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


TIMEOUT_ACTION = "AsyncTask.TimedOut"


def plan_timeout(
    task_id: str,
    task_type: str,
    session_id: str,
    correlation_id: str | None,
    now: str,
    scope_prefix: str = "Genesis",
) -> FactRow:
    """The fact that says an AsyncTask got no answer in time (caused by the task itself)."""
    payload = {
        "session_id": session_id,
        "task_id": task_id,
        "task_type": task_type,
        "correlation_id": correlation_id,
        "reason": "timeout",
    }
    return _fact(task_id, scope_prefix, session_id, TIMEOUT_ACTION, payload, correlation_id, now)
