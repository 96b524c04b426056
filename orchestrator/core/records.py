"""Plain records that cross the boundary between the pure core and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from orchestrator.core.inbound import Headers, RawMessage


class Status(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    NO_HANDLER = "no_handler"
    DEAD_LETTERED = "dead_lettered"


class TaskState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class OutboxState(StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    FAILED = "FAILED"


class DeadLetterState(StrEnum):
    OPEN = "OPEN"
    REPLAYED = "REPLAYED"
    DISCARDED = "DISCARDED"


TASK_STATES = tuple(s.value for s in TaskState)
OUTBOX_STATES = tuple(s.value for s in OutboxState)
DEAD_LETTER_STATES = tuple(s.value for s in DeadLetterState)


@dataclass(frozen=True, slots=True)
class NewInbox:
    """An input message about to be recorded in the inbox."""

    raw: RawMessage
    message_id: str
    kind: str
    message_type: str
    session_id: str
    correlation_id: str | None
    traceparent: str | None


@dataclass(frozen=True, slots=True)
class InboxRow:
    id: int
    topic: str
    message_id: str
    kind: str
    message_type: str
    session_id: str
    correlation_id: str | None
    traceparent: str | None
    key: bytes | None
    value: bytes | None
    headers: Headers
    partition: int | None
    offset: int | None
    attempts: int
    processed: bool
    more: bool = True  # whether later unprocessed rows of the session existed when it was read

    def raw(self) -> RawMessage:
        return RawMessage(
            self.topic, self.value, self.key, self.headers, self.partition, self.offset
        )


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One Kafka message to publish through the outbox, bytes ready."""

    id: str
    kind: str
    message_type: str
    topic: str
    key: bytes | None
    headers: Headers
    payload: bytes | None  # None: a NULL value (the DLQ record of a tombstone)
    session_id: str | None
    correlation_id: str | None


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    id: str
    category: str
    reason: str
    raw: RawMessage
    session_id: str | None
    message_id: str | None


@dataclass(frozen=True, slots=True)
class CompletionResult:
    """What completing a task found: the task completed, a late result, or no task at all."""

    task_id: str | None
    state: str  # "completed" | "late" | "not_found"
    age_s: float | None = None  # how long the task waited for its result


@dataclass(slots=True)
class Outcome:
    """What processing one input message did, with the ids it wrote (for callers and tests)."""

    status: Status
    message_id: str | None = None
    session_id: str | None = None
    inbox_id: int | None = None
    fact_ids: list[str] = field(default_factory=list)
    fact_types: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    completed_task_ids: list[str] = field(default_factory=list)
    dead_letter_id: str | None = None
    category: str | None = None
    reason: str | None = None
    wrote_outbox: bool = False
    dispatch_failed: bool = False
    roundtrip_s: list[float] = field(default_factory=list)
    # (kind, outcome, seconds) of each outcome fact written: its command's inbox arrival -> now
    command_latency: list[tuple[str, str, float]] = field(default_factory=list)
    kind: str | None = None
    message_type: str | None = None
