"""Classify one raw input: a command, a capability event, or a domain event to skip.

Pure. Everything that cannot be classified raises InvalidInput with its dead-letter category,
so the ingester decides what to record before anything is processed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.core.command_strategies import CommandStrategyRegistry
from orchestrator.core.errors import Category, InvalidInput
from orchestrator.core.inbound import (
    CapabilityEvent,
    Command,
    DomainEvent,
    RawMessage,
    parse,
    parse_command,
)
from orchestrator.core.records import NewInbox


class Kind(StrEnum):
    COMMAND = "command"
    CAPABILITY = "capability"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Classified:
    """What the ingester needs to know of a message before it is processed."""

    kind: Kind
    message_id: str
    session_id: str | None
    message_type: str
    correlation_id: str | None
    traceparent: str | None
    envelope: DomainEvent | CapabilityEvent
    command: Command | None = None


def classify(
    raw: RawMessage,
    commands: CommandStrategyRegistry,
    max_bytes: int,
    mapping: Mapping[str, str] | None = None,
) -> Classified:
    """Parse and decide: a command, a capability event, or a skipped domain event.

    Raises InvalidInput for everything that is a dead letter, including unknown commands.
    """
    try:
        env = parse(raw, max_bytes)
    except InvalidInput as exc:
        if exc.category is not Category.TOO_LARGE:
            raise
        skipped = _oversized_but_skipped(raw)
        if skipped is None:
            raise
        env = skipped
    if isinstance(env, CapabilityEvent):
        return Classified(
            Kind.CAPABILITY,
            env.id,
            env.session_id,
            env.type,
            env.correlation_id,
            env.traceparent,
            env,
        )
    if not env.is_command:
        return Classified(
            Kind.SKIP,
            env.event_id,
            env.aggregate_id,
            env.event_type,
            env.correlation_id,
            env.traceparent,
            env,
        )
    try:
        cmd = parse_command(env)
    except InvalidInput as exc:
        exc.session_id, exc.message_id = env.aggregate_id, env.event_id
        raise
    if not commands.knows(cmd.command_type) and cmd.command_type not in (mapping or {}):
        raise InvalidInput(
            Category.UNKNOWN_COMMAND,
            f"unknown command type {cmd.command_type!r}",
            session_id=env.aggregate_id,
            message_id=env.event_id,
        )
    return Classified(
        Kind.COMMAND,
        env.event_id,
        env.aggregate_id,
        cmd.command_type,
        env.correlation_id,
        env.traceparent,
        env,
        cmd,
    )


def _oversized_but_skipped(raw: RawMessage) -> DomainEvent | None:
    """Our own facts embed the command's input and can exceed the cap the command met: a
    well-formed domain event that is not a command is skipped whatever its size."""
    try:
        env = parse(raw, max_bytes=len(raw.value or b""))
    except InvalidInput:
        return None
    if isinstance(env, DomainEvent) and not env.is_command:
        return env
    return None


def inbox_entry(raw: RawMessage, c: Classified) -> NewInbox:
    """The inbox row for a classified (non-skipped) message."""
    return NewInbox(
        raw,
        c.message_id,
        c.kind.value,
        c.message_type,
        str(c.session_id),
        c.correlation_id,
        c.traceparent,
    )
