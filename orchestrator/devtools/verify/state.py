"""The database's rows as the checker reads them, indexed the ways the checks look them up.

Plain data with no SQL, so the checks can be read (and run) without a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from orchestrator.core.errors import Category
from orchestrator.core.inbound import RawMessage


@dataclass(frozen=True, slots=True)
class InboxRow:
    id: int
    topic: str
    message_id: str
    kind: str
    message_type: str
    session_id: str
    correlation_id: str | None
    raw: RawMessage
    processed: bool
    outcome: str | None
    processed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DomainEventRow:
    event_id: str
    event_type: str
    session_id: str
    correlation_id: str | None
    causation_id: str


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: str
    kind: str
    message_type: str
    topic: str
    session_id: str | None
    correlation_id: str | None
    status: str
    last_error: str | None
    causation_id: str | None


@dataclass(frozen=True, slots=True)
class TaskRow:
    id: str
    task_type: str
    correlation_id: str | None
    session_id: str
    causation_id: str
    status: str
    error: str | None
    created_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    id: str
    category: str
    reason: str
    source_topic: str
    key: bytes | None
    value: bytes | None
    session_id: str | None
    message_id: str | None


@dataclass
class State:
    """One consistent snapshot of every table the invariants span."""

    inbox: list[InboxRow]
    facts: list[DomainEventRow]
    outbox: list[OutboxRow]
    tasks: list[TaskRow]
    dead_letters: list[DeadLetterRow]
    inbox_by_id: dict[str, list[InboxRow]] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)
    facts_by_cause: dict[str, list[DomainEventRow]] = field(default_factory=dict)
    facts_by_corr: dict[str, list[DomainEventRow]] = field(default_factory=dict)
    fact_ids: set[str] = field(default_factory=set)
    outbox_by_id: dict[str, OutboxRow] = field(default_factory=dict)
    tasks_by_id: dict[str, TaskRow] = field(default_factory=dict)
    dead_by_message: dict[str, list[DeadLetterRow]] = field(default_factory=dict)
    dead_by_id: dict[str, DeadLetterRow] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for row in self.inbox:
            self.inbox_by_id.setdefault(row.message_id, []).append(row)
            self.order.setdefault(row.message_id, row.id)
        for f in self.facts:
            self.facts_by_cause.setdefault(f.causation_id, []).append(f)
            if f.correlation_id:
                self.facts_by_corr.setdefault(f.correlation_id, []).append(f)
            self.fact_ids.add(f.event_id)
        self.outbox_by_id = {o.id: o for o in self.outbox}
        self.tasks_by_id = {t.id: t for t in self.tasks}
        for d in self.dead_letters:
            self.dead_by_id[d.id] = d
            if d.message_id:
                self.dead_by_message.setdefault(d.message_id, []).append(d)

    def dispatch_failed(self, message_id: str) -> bool:
        return any(
            d.category == Category.CAPABILITY_DISPATCH_FAILED.value
            for d in self.dead_by_message.get(message_id, [])
        )
