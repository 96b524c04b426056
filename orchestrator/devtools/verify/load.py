"""The checker's SQL: one read-only snapshot of the inbox, facts, outbox, tasks and dead letters.

The checker reads the tables directly, not through the store's port: it judges what the store
wrote, and needs columns and one snapshot across tables that the port has no use for. Every
statement is a named constant with bound parameters; `:session` NULL means every session.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, text

from orchestrator.adapters.postgres.codec import decode_headers
from orchestrator.core.inbound import RawMessage
from orchestrator.devtools.verify.state import (
    DeadLetterRow,
    DomainEventRow,
    InboxRow,
    OutboxRow,
    State,
    TaskRow,
)

INBOX_SQL = (
    "SELECT id, topic, message_id, kind, message_type, session_id, correlation_id, key,"
    ' value, headers, partition, "offset", processed_at IS NOT NULL AS processed, outcome,'
    " processed_at FROM inbox WHERE (CAST(:session AS text) IS NULL OR session_id = :session)"
    " ORDER BY id"
)
FACTS_SQL = (
    "SELECT event_id, event_type, session_id, correlation_id, causation_id, created_at"
    " FROM domain_events WHERE (CAST(:session AS text) IS NULL OR session_id = :session)"
    " ORDER BY created_at, event_id"
)
OUTBOX_SQL = (
    "SELECT id, kind, message_type, topic, session_id, correlation_id, status, last_error,"
    " headers FROM event_outbox"
    " WHERE (CAST(:session AS text) IS NULL OR session_id = :session) ORDER BY seq"
)
TASKS_SQL = (
    "SELECT id, task_type, correlation_id, session_id, causation_id, status, error,"
    " created_at, completed_at FROM async_tasks"
    " WHERE (CAST(:session AS text) IS NULL OR session_id = :session)"
    " ORDER BY created_at, id"
)
DEAD_LETTERS_SQL = (
    "SELECT id, category, reason, source_topic, key, value, session_id, message_id, status"
    " FROM dead_letters WHERE (CAST(:session AS text) IS NULL OR session_id = :session)"
    " ORDER BY created_at, id"
)


def load(engine: Engine, session: str | None) -> State:
    """Every table in one REPEATABLE READ snapshot, so a pipeline still writing cannot tear the
    picture."""
    params = {"session": session}
    with (
        engine.connect() as plain,
        plain.execution_options(isolation_level="REPEATABLE READ").begin() as tx,
    ):
        conn = tx.connection
        return State(
            _inbox(conn, params),
            _facts(conn, params),
            _outbox(conn, params),
            _tasks(conn, params),
            _dead_letters(conn, params),
        )


def _inbox(conn: Connection, params: dict[str, Any]) -> list[InboxRow]:
    return [
        InboxRow(
            r.id,
            r.topic,
            r.message_id,
            r.kind,
            r.message_type,
            r.session_id,
            r.correlation_id,
            RawMessage(
                r.topic,
                _bytes(r.value),
                _bytes(r.key),
                decode_headers(r.headers),
                r.partition,
                r.offset,
            ),
            r.processed,
            r.outcome,
            r.processed_at,
        )
        for r in conn.execute(text(INBOX_SQL), params)
    ]


def _facts(conn: Connection, params: dict[str, Any]) -> list[DomainEventRow]:
    return [
        DomainEventRow(r.event_id, r.event_type, r.session_id, r.correlation_id, r.causation_id)
        for r in conn.execute(text(FACTS_SQL), params)
    ]


def _outbox(conn: Connection, params: dict[str, Any]) -> list[OutboxRow]:
    return [
        OutboxRow(
            r.id,
            r.kind,
            r.message_type,
            r.topic,
            r.session_id,
            r.correlation_id,
            r.status,
            r.last_error,
            _header(r.headers, "causation_id"),
        )
        for r in conn.execute(text(OUTBOX_SQL), params)
    ]


def _tasks(conn: Connection, params: dict[str, Any]) -> list[TaskRow]:
    return [
        TaskRow(
            r.id,
            r.task_type,
            r.correlation_id,
            r.session_id,
            r.causation_id,
            r.status,
            r.error,
            r.created_at,
            r.completed_at,
        )
        for r in conn.execute(text(TASKS_SQL), params)
    ]


def _dead_letters(conn: Connection, params: dict[str, Any]) -> list[DeadLetterRow]:
    return [
        DeadLetterRow(
            r.id,
            r.category,
            r.reason,
            r.source_topic,
            _bytes(r.key),
            _bytes(r.value),
            r.session_id,
            r.message_id,
        )
        for r in conn.execute(text(DEAD_LETTERS_SQL), params)
    ]


def _bytes(value: Any) -> bytes | None:
    return bytes(value) if value is not None else None


def _header(headers: Any, name: str) -> str | None:
    for n, v in decode_headers(headers):
        if n == name and v is not None:
            return v.decode("utf-8", "replace")
    return None
