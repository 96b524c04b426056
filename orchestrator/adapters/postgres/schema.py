"""The relational schema (SQLAlchemy 2 declarative). Alembic migrations are the source of truth
for the live database; these models mirror them and give the store typed tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}

TASK_ACTIVE = "status IN ('PENDING', 'RUNNING')"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class InboxMessage(Base):
    """Every consumed input worth processing; the per-session ordered queue of work."""

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("topic", "message_id"),
        Index(
            "ix_inbox_pending_session",
            "session_id",
            "id",
            postgresql_where=text("processed_at IS NULL"),
        ),
        Index(
            "ix_inbox_pending_triggered",
            "triggered_at",
            postgresql_where=text("processed_at IS NULL"),
        ),
        Index("ix_inbox_processed_at", "processed_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    topic: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    message_type: Mapped[str] = mapped_column(Text)
    session_id: Mapped[str] = mapped_column(Text)
    correlation_id: Mapped[str | None] = mapped_column(Text)
    traceparent: Mapped[str | None] = mapped_column(Text)
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[bytes | None] = mapped_column(LargeBinary)
    headers: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    partition: Mapped[int | None] = mapped_column(Integer)
    offset: Mapped[int | None] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = _now()
    triggered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)


class DomainEvent(Base):
    """A fact the orchestrator emitted; unique per (causing message, event type)."""

    __tablename__ = "domain_events"
    __table_args__ = (
        UniqueConstraint("causation_id", "event_type"),
        Index("ix_domain_events_correlation", "correlation_id", "event_type"),
        Index("ix_domain_events_session", "session_id", "created_at"),
    )

    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    event_type: Mapped[str] = mapped_column(Text)
    aggregate_type: Mapped[str] = mapped_column(Text)
    session_id: Mapped[str] = mapped_column(Text)
    correlation_id: Mapped[str | None] = mapped_column(Text)
    causation_id: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()


class EventOutbox(Base):
    """One outgoing Kafka message (fact, capability task or dead letter), published by the relay.

    `seq` orders a (topic, key)'s messages; the relay publishes the run of a key's oldest
    unsent rows under a lease (`claimed_until`).
    """

    __tablename__ = "event_outbox"
    __table_args__ = (
        Index("ix_event_outbox_pending", "seq", postgresql_where=text("status = 'PENDING'")),
        Index(
            "ix_event_outbox_pending_key",
            "topic",
            "key",
            "seq",
            postgresql_where=text("status = 'PENDING'"),
        ),
        Index("ix_event_outbox_sent_at", "sent_at"),
        Index("ix_event_outbox_session", "session_id"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    kind: Mapped[str] = mapped_column(Text)
    message_type: Mapped[str] = mapped_column(Text)
    topic: Mapped[str] = mapped_column(Text)
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    headers: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)  # NULL: a tombstone's DLQ record
    session_id: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=text("'PENDING'"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = _now()
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AsyncTask(Base):
    """A capability task in flight; its id is the id of the capability message that asked."""

    __tablename__ = "async_tasks"
    __table_args__ = (
        Index(
            "uq_async_tasks_active",
            "correlation_id",
            "task_type",
            unique=True,
            postgresql_where=text(TASK_ACTIVE),
        ),
        Index("ix_async_tasks_deadline", "deadline_at", postgresql_where=text(TASK_ACTIVE)),
        Index("ix_async_tasks_session", "session_id"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    task_type: Mapped[str] = mapped_column(Text)
    correlation_id: Mapped[str | None] = mapped_column(Text)
    session_id: Mapped[str] = mapped_column(Text)
    causation_id: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=text("'PENDING'"))
    input: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeadLetter(Base):
    """An input that could not be processed, kept byte for byte with the reason."""

    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_created", "created_at"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    category: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    source_topic: Mapped[str] = mapped_column(Text)
    source_partition: Mapped[int | None] = mapped_column(Integer)
    source_offset: Mapped[int | None] = mapped_column(BigInteger)
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[bytes | None] = mapped_column(LargeBinary)
    headers: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    session_id: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=text("'OPEN'"))
    resolution: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
