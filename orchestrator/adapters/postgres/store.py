"""The PostgreSQL store: every statement the core needs, as named SQL with bound parameters.

Driver errors are translated here into `TransientError` (connection-level trouble; retry) so the
layers above never see psycopg2 or SQLAlchemy exceptions. Unique constraints are the final word
on idempotency: every insert is `ON CONFLICT DO NOTHING` and reports whether it wrote.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import Connection, Engine, Table, func, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import InterfaceError as SAInterfaceError

from orchestrator.adapters.postgres.schema import InboxMessage
from orchestrator.core.errors import StaleVersion, TransientError
from orchestrator.core.inbound import Headers
from orchestrator.core.plan import Completion, FactRow, MessageRow
from orchestrator.core.records import (
    CompletionResult,
    DeadLetterRecord,
    InboxRow,
    NewInbox,
    OutboxMessage,
)
from orchestrator.observability.logs import get_logger

log = get_logger("orchestrator.store")

INBOX_COLUMNS = (
    "id, topic, message_id, kind, message_type, session_id, correlation_id, traceparent, key,"
    ' value, headers, partition, "offset", attempts, processed_at IS NOT NULL AS processed'
)

SQL = {
    "lock_session": "SELECT pg_advisory_xact_lock(hashtextextended(:sid, 7274))",
    # INBOX_COLUMNS is a constant: no input ever reaches the statement text (S608).
    "find_inbox": f"SELECT {INBOX_COLUMNS} FROM inbox WHERE topic = :topic AND message_id = :mid",  # noqa: S608
    "inbox_for_update": f"SELECT {INBOX_COLUMNS} FROM inbox WHERE id = :id FOR UPDATE",  # noqa: S608
    # The session's advisory lock and the row's lock in one round trip.
    "lock_and_fetch": (
        "SELECT pg_advisory_xact_lock(hashtextextended(:sid, 7274)) AS locked,"  # noqa: S608
        f" {INBOX_COLUMNS} FROM inbox WHERE id = :id FOR UPDATE"
    ),
    "mark_processed": (
        "UPDATE inbox SET processed_at = now(), outcome = :outcome, last_error = :error"
        " WHERE id = :id"
    ),
    "begin_next": (
        f"UPDATE inbox SET attempts = attempts + 1 WHERE id = ("  # noqa: S608
        " SELECT id FROM inbox WHERE session_id = :sid AND processed_at IS NULL"
        f" ORDER BY id LIMIT 1) AND processed_at IS NULL RETURNING {INBOX_COLUMNS},"
        " EXISTS (SELECT 1 FROM inbox later WHERE later.session_id = inbox.session_id"
        " AND later.processed_at IS NULL AND later.id > inbox.id) AS more"
    ),
    "count_reviews": (
        "SELECT count(*) FROM domain_events WHERE correlation_id = :cid"
        " AND event_type = ANY(:types) AND causation_id <> :cause"
    ),
    "insert_fact": (
        "INSERT INTO domain_events (event_id, event_type, aggregate_type, session_id,"
        " correlation_id, causation_id, payload) VALUES (:event_id, :event_type,"
        " :aggregate_type, :session_id, :correlation_id, :causation_id,"
        " CAST(:payload AS jsonb)) ON CONFLICT DO NOTHING RETURNING event_id"
    ),
    "insert_outbox": (
        "INSERT INTO event_outbox (id, kind, message_type, topic, key, headers, payload,"
        " session_id, correlation_id) VALUES (:id, :kind, :message_type, :topic, :key,"
        " CAST(:headers AS jsonb), :payload, :session_id, :correlation_id)"
        " ON CONFLICT (id) DO NOTHING RETURNING id"
    ),
    "create_task": (
        "INSERT INTO async_tasks (id, task_type, correlation_id, session_id, causation_id,"
        " status, input, deadline_at) VALUES (:id, :task_type, :correlation_id, :session_id,"
        " :causation_id, 'PENDING', CAST(:input AS jsonb), :deadline) ON CONFLICT DO NOTHING"
        " RETURNING id"
    ),
    "find_active_task": (
        "SELECT id, version, extract(epoch FROM now() - created_at) AS age_s FROM async_tasks"
        " WHERE correlation_id = :cid"
        " AND starts_with(task_type, :prefix) AND status IN ('PENDING', 'RUNNING')"
        " ORDER BY created_at, id LIMIT 1"
    ),
    "find_failed_task": (
        "SELECT id, version FROM async_tasks WHERE correlation_id = :cid"
        " AND starts_with(task_type, :prefix) AND status = 'FAILED'"
        " ORDER BY created_at DESC, id LIMIT 1"
    ),
    "complete_task": (
        "UPDATE async_tasks SET status = 'COMPLETED', result = CAST(:result AS jsonb),"
        " completed_at = now(), updated_at = now(), version = version + 1"
        " WHERE id = :id AND version = :version AND status IN ('PENDING', 'RUNNING')"
    ),
    "late_result": (
        "UPDATE async_tasks SET result = CAST(:result AS jsonb), updated_at = now(),"
        " error = coalesce(error, '') || '; late result received', version = version + 1"
        " WHERE id = :id AND version = :version"
    ),
    "insert_dead_letter": (
        "INSERT INTO dead_letters (id, category, reason, source_topic, source_partition,"
        " source_offset, key, value, headers, session_id, message_id) VALUES (:id, :category,"
        " :reason, :topic, :partition, :offset, :key, :value, CAST(:headers AS jsonb),"
        " :session_id, :message_id) ON CONFLICT (id) DO NOTHING RETURNING id"
    ),
}


# Built once: constructing text() parses the bind parameters on every call.
STATEMENTS = {name: text(sql) for name, sql in SQL.items()}
ASYNC_COMMIT = text("SET LOCAL synchronous_commit TO OFF")


def encode_headers(headers: Headers) -> str:
    """Headers as JSON text: `[[name, base64 value or null], ...]` (values are raw bytes)."""
    return orjson.dumps(
        [[n, base64.b64encode(v).decode() if v is not None else None] for n, v in headers]
    ).decode()


def decode_headers(stored: Any) -> Headers:
    return tuple(
        (str(n), base64.b64decode(v) if v is not None else None) for n, v in (stored or [])
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _inbox_values(r: NewInbox, triggered: bool) -> dict[str, Any]:
    raw = r.raw
    return {
        "topic": raw.topic,
        "message_id": r.message_id,
        "kind": r.kind,
        "message_type": r.message_type,
        "session_id": r.session_id,
        "correlation_id": r.correlation_id,
        "traceparent": r.traceparent,
        "key": raw.key,
        "value": raw.value,
        "partition": raw.partition,
        "offset": raw.offset,
        "headers": [
            [n, base64.b64encode(v).decode() if v is not None else None] for n, v in raw.headers
        ],
        "triggered_at": func.now() if triggered else None,
    }


def _inbox_row(row: Any) -> InboxRow:
    m = row._mapping
    return InboxRow(
        id=m["id"],
        topic=m["topic"],
        message_id=m["message_id"],
        kind=m["kind"],
        message_type=m["message_type"],
        session_id=m["session_id"],
        correlation_id=m["correlation_id"],
        traceparent=m["traceparent"],
        key=bytes(m["key"]) if m["key"] is not None else None,
        value=bytes(m["value"]) if m["value"] is not None else None,
        headers=decode_headers(m["headers"]),
        partition=m["partition"],
        offset=m["offset"],
        attempts=m["attempts"],
        processed=m["processed"],
        more=bool(m.get("more", True)),
    )


@contextmanager
def translate_errors() -> Iterator[None]:
    """Connection-level driver errors become TransientError; the rest propagate as bugs."""
    try:
        yield
    except (OperationalError, SAInterfaceError) as exc:
        raise TransientError(f"database unavailable: {exc.orig or exc}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise TransientError(f"database connection lost: {exc.orig or exc}") from exc
        raise


class SqlTransaction:
    """The `Transaction` port on one SQLAlchemy connection inside `BEGIN ... COMMIT`."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _exec(self, name: str, **params: Any) -> Any:
        return self.conn.execute(STATEMENTS[name], params)

    def lock_session(self, session_id: str) -> None:
        self._exec("lock_session", sid=session_id)

    def insert_inbox(self, rows: Sequence[NewInbox], triggered: bool) -> list[int]:
        """Record messages (existing keys are left alone); the ids of the new rows."""
        return [row_id for row_id, _, _ in self._insert_inbox(rows, triggered)]

    def insert_inbox_batch(self, rows: Sequence[NewInbox]) -> set[tuple[str, str]]:
        """One multi-row insert of triggered rows; the (topic, message_id) keys that were new."""
        return {(t, m) for _, t, m in self._insert_inbox(rows, triggered=True)}

    def _insert_inbox(
        self, rows: Sequence[NewInbox], triggered: bool
    ) -> list[tuple[int, str, str]]:
        if not rows:
            return []
        table = cast(Table, InboxMessage.__table__)
        stmt = (
            pg_insert(table)
            .values([_inbox_values(r, triggered) for r in rows])
            .on_conflict_do_nothing(index_elements=["topic", "message_id"])
            .returning(table.c.id, table.c.topic, table.c.message_id)
        )
        return [(int(i), t, m) for i, t, m in self.conn.execute(stmt)]

    def unprocessed_among(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these already-recorded messages still wait to be processed."""
        if not keys:
            return set()
        c = InboxMessage.__table__.c
        stmt = (
            InboxMessage.__table__.select()
            .with_only_columns(c.topic, c.message_id)
            .where(tuple_(c.topic, c.message_id).in_(list(keys)), c.processed_at.is_(None))
        )
        return {(t, m) for t, m in self.conn.execute(stmt)}

    def find_inbox(self, topic: str, message_id: str) -> InboxRow | None:
        row = self._exec("find_inbox", topic=topic, mid=message_id).first()
        return _inbox_row(row) if row else None

    def lock_and_fetch(self, inbox_id: int, session_id: str) -> InboxRow | None:
        """Take the session's advisory lock and the row's lock; the row as it is now."""
        row = self._exec("lock_and_fetch", id=inbox_id, sid=session_id).first()
        return _inbox_row(row) if row else None

    def inbox_for_update(self, inbox_id: int) -> InboxRow | None:
        row = self._exec("inbox_for_update", id=inbox_id).first()
        return _inbox_row(row) if row else None

    def mark_processed(self, inbox_id: int, outcome: str, error: str | None = None) -> None:
        self._exec("mark_processed", id=inbox_id, outcome=outcome, error=error)

    def count_handled_reviews(
        self, correlation_id: str, event_types: Sequence[str], exclude_causation: str
    ) -> int:
        return int(
            self._exec(
                "count_reviews",
                cid=correlation_id,
                types=list(event_types),
                cause=exclude_causation,
            ).scalar_one()
        )

    def insert_fact(self, fact: FactRow, aggregate_type: str) -> bool:
        log.debug(
            "orchestrator_checking_existing_domain_event",
            event_type=fact.event_type,
            causation_id=fact.causation_id,
        )
        got = self._exec(
            "insert_fact",
            event_id=fact.event_id,
            event_type=fact.event_type,
            aggregate_type=aggregate_type,
            session_id=fact.session_id,
            correlation_id=fact.correlation_id,
            causation_id=fact.causation_id,
            payload=_json(fact.payload),
        ).scalar()
        if got is None:
            log.info(
                "orchestrator_domain_event_already_exists",
                event_type=fact.event_type,
                event_id=fact.event_id,
            )
            return False
        log.debug(
            "orchestrator_domain_event_created", event_type=fact.event_type, event_id=fact.event_id
        )
        return True

    def insert_outbox(self, message: OutboxMessage) -> bool:
        log.debug("orchestrator_creating_outbox_entry", outbox_id=message.id, topic=message.topic)
        got = self._exec(
            "insert_outbox",
            id=message.id,
            kind=message.kind,
            message_type=message.message_type,
            topic=message.topic,
            key=message.key,
            headers=encode_headers(message.headers),
            payload=message.payload,
            session_id=message.session_id,
            correlation_id=message.correlation_id,
        ).scalar()
        if got is None:
            log.info("orchestrator_outbox_entry_already_exists", outbox_id=message.id)
            return False
        log.debug("orchestrator_outbox_entry_created", outbox_id=message.id, topic=message.topic)
        return True

    def create_task(self, message: MessageRow, deadline: datetime) -> bool:
        got = self._exec(
            "create_task",
            id=message.message_id,
            task_type=message.message_type,
            correlation_id=message.correlation_id,
            session_id=message.session_id,
            causation_id=message.causation_id,
            input=_json(message.envelope.get("data")),
            deadline=deadline,
        ).scalar()
        return got is not None

    def complete_task(self, completion: Completion) -> CompletionResult:
        params = {"cid": completion.correlation_id, "prefix": completion.expect_task_prefix}
        result = _json(completion.result_data)
        for _ in range(3):
            row = self._exec("find_active_task", **params).first()
            if row is None:
                break
            try:
                self.update_task_version(row.id, row.version, result)
            except StaleVersion:
                continue
            return CompletionResult(row.id, "completed", float(row.age_s))
        failed = self._exec("find_failed_task", **params).first()
        if failed is not None:
            self._exec("late_result", id=failed.id, version=failed.version, result=result)
            return CompletionResult(failed.id, "late")
        return CompletionResult(None, "not_found")

    def update_task_version(self, task_id: str, version: int, result_json: str) -> None:
        """Complete a task only at the version read; another writer in between -> StaleVersion."""
        done = self._exec("complete_task", id=task_id, version=version, result=result_json)
        if done.rowcount != 1:
            raise StaleVersion(f"async task {task_id} is no longer at version {version}")

    def insert_dead_letter(self, record: DeadLetterRecord) -> bool:
        raw = record.raw
        got = self._exec(
            "insert_dead_letter",
            id=record.id,
            category=record.category,
            reason=record.reason,
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            key=raw.key,
            value=raw.value,
            headers=encode_headers(raw.headers),
            session_id=record.session_id,
            message_id=record.message_id,
        ).scalar()
        return got is not None

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        with self.conn.begin_nested():
            yield


class SqlStore:
    """The `Store` port: transactions on a pooled engine.

    Inside `session()` every transaction runs on one connection checked out once, which saves
    a pool checkout (and its liveness ping) per transaction while a worker drains a session.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: ContextVar[Connection | None] = ContextVar("store_conn", default=None)

    @contextmanager
    def session(self) -> Iterator[None]:
        if self._conn.get() is not None:
            yield
            return
        with translate_errors(), self.engine.connect() as conn:
            token = self._conn.set(conn)
            try:
                yield
            finally:
                self._conn.reset(token)

    @contextmanager
    def transaction(self) -> Iterator[SqlTransaction]:
        conn = self._conn.get()
        if conn is None:
            with translate_errors(), self.engine.begin() as fresh:
                yield SqlTransaction(fresh)
            return
        with translate_errors(), conn.begin():
            yield SqlTransaction(conn)

    def begin_next(self, session_id: str) -> InboxRow | None:
        """Count an attempt on the session's oldest unprocessed row, committed on its own, so a
        row that kills its worker is counted even though its processing never commits."""
        with self.transaction() as tx:
            # The count only bounds retries of a poison message: it need not wait for the WAL
            # flush (a crash of PostgreSQL may forget one increment, nothing more).
            tx.conn.execute(ASYNC_COMMIT)
            row = tx.conn.execute(STATEMENTS["begin_next"], {"sid": session_id}).first()
            return _inbox_row(row) if row else None
