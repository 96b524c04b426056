"""The `Store` and `Transaction` ports on PostgreSQL.

The statements are the named ones of `sql`; values go to columns through `codec`; driver errors
leave through `errors.translate_errors` as `TransientError`. Every insert reports whether it
wrote, so the service layer can tell a first delivery from a redelivery.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

from orchestrator.adapters.postgres import sql
from orchestrator.adapters.postgres.codec import (
    encode_headers,
    inbox_row,
    inbox_values,
    json_text,
)
from orchestrator.adapters.postgres.errors import translate_errors
from orchestrator.core.errors import StaleVersion
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

# Concurrent completions of one task: re-read and retry this many times before giving up.
COMPLETE_RETRIES = 3


class SqlTransaction:
    """The `Transaction` port on one SQLAlchemy connection inside `BEGIN ... COMMIT`."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _exec(self, name: str, **params: Any) -> Any:
        return self.conn.execute(sql.STATEMENTS[name], params)

    def lock_session(self, session_id: str) -> None:
        self._exec("lock_session", sid=session_id)

    # -- the inbox ---------------------------------------------------------------------------

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
        stmt = sql.insert_inbox([inbox_values(r, triggered) for r in rows])
        return [(int(i), t, m) for i, t, m in self.conn.execute(stmt)]

    def unprocessed_among(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these already-recorded messages still wait to be processed."""
        if not keys:
            return set()
        return {(t, m) for t, m in self.conn.execute(sql.unprocessed_among(keys))}

    def find_inbox(self, topic: str, message_id: str) -> InboxRow | None:
        row = self._exec("find_inbox", topic=topic, mid=message_id).first()
        return inbox_row(row) if row else None

    def lock_and_fetch(self, inbox_id: int, session_id: str) -> InboxRow | None:
        """Take the session's advisory lock and the row's lock; the row as it is now."""
        row = self._exec("lock_and_fetch", id=inbox_id, sid=session_id).first()
        return inbox_row(row) if row else None

    def inbox_for_update(self, inbox_id: int) -> InboxRow | None:
        row = self._exec("inbox_for_update", id=inbox_id).first()
        return inbox_row(row) if row else None

    def mark_processed(self, inbox_id: int, outcome: str, error: str | None = None) -> None:
        self._exec("mark_processed", id=inbox_id, outcome=outcome, error=error)

    # -- facts and the outbox ----------------------------------------------------------------

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
        got = self._exec("insert_fact", **_fact_params(fact, aggregate_type)).scalar()
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

    def insert_fact_with_outbox(
        self, fact: FactRow, aggregate_type: str, message: OutboxMessage
    ) -> tuple[bool, bool]:
        """The fact and, if it is new, its outbox row in one statement: (new, outbox written)."""
        got = self._exec(
            "insert_fact_with_outbox",
            **_fact_params(fact, aggregate_type),
            **_outbox_params(message),
        ).one()
        if not got.new:
            log.info(
                "orchestrator_domain_event_already_exists",
                event_type=fact.event_type,
                event_id=fact.event_id,
            )
        return bool(got.new), bool(got.wrote)

    def create_task_with_outbox(
        self, message: MessageRow, deadline: datetime, outbox: OutboxMessage
    ) -> tuple[bool, bool]:
        """The AsyncTask and, if it is new, its capability message: (created, outbox written)."""
        got = self._exec(
            "create_task_with_outbox", **_task_params(message, deadline), **_outbox_params(outbox)
        ).one()
        return bool(got.new), bool(got.wrote)

    # -- AsyncTasks --------------------------------------------------------------------------

    def create_task(self, message: MessageRow, deadline: datetime) -> bool:
        got = self._exec("create_task", **_task_params(message, deadline)).scalar()
        return got is not None

    def complete_task(self, completion: Completion) -> CompletionResult:
        params = {"cid": completion.correlation_id, "prefix": completion.expect_task_prefix}
        result = json_text(completion.result_data)
        for _ in range(COMPLETE_RETRIES):
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

    # -- dead letters and savepoints ---------------------------------------------------------

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

    # -- what the outcome of a correlation needs to know -------------------------------------

    def active_task_id(self, correlation_id: str | None, task_type: str) -> str | None:
        if correlation_id is None:
            return None
        got = self._exec("active_task_id", cid=correlation_id, task_type=task_type).scalar()
        return str(got) if got is not None else None

    def correlation_age_s(self, correlation_id: str, topic: str) -> float | None:
        got = self._exec("correlation_age", cid=correlation_id, topic=topic).scalar()
        return float(got) if got is not None else None


def _fact_params(fact: FactRow, aggregate_type: str) -> dict[str, Any]:
    return {
        "event_id": fact.event_id,
        "event_type": fact.event_type,
        "aggregate_type": aggregate_type,
        "session_id": fact.session_id,
        "correlation_id": fact.correlation_id,
        "causation_id": fact.causation_id,
        "payload": json_text(fact.payload),
    }


def _outbox_params(message: OutboxMessage) -> dict[str, Any]:
    return {
        "o_id": message.id,
        "o_kind": message.kind,
        "o_message_type": message.message_type,
        "o_topic": message.topic,
        "o_key": message.key,
        "o_headers": encode_headers(message.headers),
        "o_payload": message.payload,
        "o_session_id": message.session_id,
        "o_correlation_id": message.correlation_id,
    }


def _task_params(message: MessageRow, deadline: datetime) -> dict[str, Any]:
    return {
        "id": message.message_id,
        "task_type": message.message_type,
        "correlation_id": message.correlation_id,
        "session_id": message.session_id,
        "causation_id": message.causation_id,
        "input": json_text(message.envelope.get("data")),
        "deadline": deadline,
    }


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

    def current_connection(self) -> Connection | None:
        """The connection `session()` holds in this context, if any."""
        return self._conn.get()

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
            tx.conn.execute(sql.STATEMENTS["async_commit"])
            # Waits while a batched drain holds the session: it counts its rows itself.
            tx.lock_session(session_id)
            row = tx.conn.execute(sql.STATEMENTS["begin_next"], {"sid": session_id}).first()
            return inbox_row(row) if row else None
