"""The `OperatorStore` port on PostgreSQL: the operator statements and their row mapping.

Each method is one transaction; driver errors are translated as the message store's are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, TextClause

from orchestrator.adapters.postgres import operator_sql as sql
from orchestrator.adapters.postgres.codec import decode_headers
from orchestrator.adapters.postgres.errors import translate_errors
from orchestrator.core.inbound import RawMessage
from orchestrator.service.operator_stats import (
    ErrorCounts,
    InboxBacklog,
    Percentiles,
    WindowCounts,
)
from orchestrator.service.operator_views import (
    DeadLetterDetail,
    DeadLetterRow,
    FactEntry,
    InboxEntry,
    InboxState,
    OutboxListing,
    OutboxRow,
    OutboxSummary,
    SessionRecords,
    TaskRow,
    dead_letter_detail,
    ms_between,
)


class PgOperatorStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _conn(self) -> Iterator[Connection]:
        with translate_errors(), self.engine.begin() as conn:
            yield conn

    def _all(self, statement: TextClause, **params: Any) -> list[Any]:
        with self._conn() as conn:
            return list(conn.execute(statement, params))

    def _write(self, statement: TextClause, **params: Any) -> None:
        with self._conn() as conn:
            conn.execute(statement, params)

    def _ids(self, statement: TextClause, **params: Any) -> list[str]:
        return [r.id for r in self._all(statement, **params)]

    def _text(self, statement: TextClause, **params: Any) -> str | None:
        with self._conn() as conn:
            value = conn.execute(statement, params).scalar()
        return None if value is None else str(value)

    # -- reads ---------------------------------------------------------------------------------

    def session_records(self, session_id: str) -> SessionRecords:
        params = {"sid": session_id, "key": session_id.encode()}
        with self._conn() as conn:

            def rows(statement: TextClause) -> list[Any]:
                return list(conn.execute(statement, params))

            return SessionRecords(
                inbox=[_inbox(r) for r in rows(sql.TRACE_INBOX)],
                facts=[_fact(r) for r in rows(sql.TRACE_FACTS)],
                tasks=[_task(r) for r in rows(sql.TRACE_TASKS)],
                outbox=[_outbox(r) for r in rows(sql.TRACE_OUTBOX)],
                dead_letters=[_dead_letter(r) for r in rows(sql.TRACE_DEAD_LETTERS)],
            )

    def tasks(
        self,
        session_id: str | None,
        type_prefix: str | None,
        state: str | None,
        older_than_s: float | None,
        limit: int,
    ) -> list[TaskRow]:
        rows = self._all(
            sql.TASKS,
            session=session_id,
            prefix=type_prefix,
            state=state,
            older=older_than_s,
            limit=limit,
        )
        return [_task(r) for r in rows]

    def outbox(self, status: str | None, limit: int) -> OutboxListing:
        with self._conn() as conn:
            rows = list(conn.execute(sql.OUTBOX, {"status": status, "limit": limit}))
            summary = _outbox_summary(conn)
        return OutboxListing(summary, [_outbox(r) for r in rows])

    def outbox_summary(self) -> OutboxSummary:
        with self._conn() as conn:
            return _outbox_summary(conn)

    def outbox_status(self, outbox_id: str) -> str | None:
        return self._text(sql.OUTBOX_STATUS, id=outbox_id)

    def dead_letters(
        self, category: str | None, status: str | None, limit: int
    ) -> list[DeadLetterRow]:
        rows = self._all(sql.DEAD_LETTERS, category=category, status=status, limit=limit)
        return [_dead_letter(r) for r in rows]

    def dead_letter(self, dead_letter_id: str) -> DeadLetterDetail | None:
        rows = self._all(sql.DEAD_LETTER, id=dead_letter_id)
        return _dead_letter_detail(rows[0]) if rows else None

    def dead_letter_status(self, dead_letter_id: str) -> str | None:
        return self._text(sql.DEAD_LETTER_STATUS, id=dead_letter_id)

    def open_dead_letter_ids(self, category: str | None) -> list[str]:
        return self._ids(sql.OPEN_DEAD_LETTER_IDS, category=category)

    def inbox_state(self, topic: str, message_id: str) -> InboxState | None:
        rows = self._all(sql.INBOX_STATE, topic=topic, mid=message_id)
        return _inbox_state(rows[0]) if rows else None

    def window_counts(self, window_s: float) -> WindowCounts:
        w = {"window": window_s}
        with self._conn() as conn:

            def one(statement: TextClause) -> Any:
                return conn.execute(statement, w).first()

            def grouped(statement: TextClause) -> dict[str, int]:
                return {r[0]: int(r[1]) for r in conn.execute(statement, w)}

            at = conn.execute(sql.STATS_NOW).scalar_one()
            inbox = one(sql.STATS_INBOX)
            facts = int(one(sql.STATS_FACTS)[0])
            created = int(one(sql.STATS_TASKS_CREATED)[0])
            errors = ErrorCounts(
                grouped(sql.STATS_DEAD_LETTERS),
                int(one(sql.STATS_OUTBOX_FAILED)[0]),
                grouped(sql.STATS_TASKS_FAILED),
            )
            e2e = _percentiles(one(sql.STATS_E2E_LATENCY))
            task_latency = _percentiles(one(sql.STATS_TASK_LATENCY))
            backlog = one(sql.STATS_INBOX_BACKLOG)
            outbox = _outbox_summary(conn)
        return WindowCounts(
            at=at,
            commands_processed=int(inbox.commands),
            messages_processed=int(inbox.messages),
            facts_emitted=facts,
            tasks_created=created,
            errors=errors,
            end_to_end_latency=e2e,
            task_latency=task_latency,
            outbox=outbox,
            inbox=InboxBacklog(int(backlog.unprocessed), _ms(backlog.oldest_age_ms)),
        )

    # -- writes --------------------------------------------------------------------------------

    def retry_failed(self, outbox_id: str) -> bool:
        return bool(self._ids(sql.OUTBOX_RETRY_ONE, id=outbox_id))

    def retry_all_failed(self) -> list[str]:
        return self._ids(sql.OUTBOX_RETRY_FAILED)

    def republish_sent(self, seconds: float) -> list[str]:
        return self._ids(sql.OUTBOX_REPUBLISH, seconds=seconds)

    def discard(self, dead_letter_id: str, reason: str) -> bool:
        return bool(self._ids(sql.DISCARD, id=dead_letter_id, reason=reason))

    def mark_replayed(self, dead_letter_id: str, resolution: str) -> None:
        self._write(sql.MARK_REPLAYED, id=dead_letter_id, resolution=resolution)

    def keep_open(self, dead_letter_id: str, category: str, reason: str) -> None:
        self._write(sql.KEEP_OPEN, id=dead_letter_id, category=category, reason=reason)

    def reopen_inbox(self, topic: str, message_id: str) -> InboxState | None:
        with self._conn() as conn:
            row = conn.execute(sql.INBOX_STATE, {"topic": topic, "mid": message_id}).first()
            if row is None or not row.processed:
                return None
            conn.execute(sql.REOPEN_INBOX, {"id": row.id})
            return _inbox_state(row)

    def restore_inbox(self, inbox_id: int, outcome: str, error: str) -> None:
        self._write(sql.RESTORE_INBOX, id=inbox_id, outcome=outcome, error=error)


# -- row mapping -----------------------------------------------------------------------------


def _ms(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _bytes(value: Any) -> bytes | None:
    return bytes(value) if value is not None else None


def _inbox(r: Any) -> InboxEntry:
    return InboxEntry(
        id=r.id,
        topic=r.topic,
        message_id=r.message_id,
        kind=r.kind,
        message_type=r.message_type,
        correlation_id=r.correlation_id,
        partition=r.partition,
        offset=r.offset,
        attempts=r.attempts,
        outcome=r.outcome,
        last_error=r.last_error,
        received_at=r.received_at,
        triggered_at=r.triggered_at,
        processed_at=r.processed_at,
    )


def _fact(r: Any) -> FactEntry:
    return FactEntry(
        r.event_id, r.event_type, r.correlation_id, r.causation_id, r.payload, r.created_at
    )


def _task(r: Any) -> TaskRow:
    return TaskRow(
        id=r.id,
        task_type=r.task_type,
        status=r.status,
        session_id=r.session_id,
        correlation_id=r.correlation_id,
        causation_id=r.causation_id,
        created_at=r.created_at,
        started_at=r.started_at,
        completed_at=r.completed_at,
        deadline_at=r.deadline_at,
        duration_ms=ms_between(r.created_at, r.completed_at),
        age_ms=ms_between(r.created_at, r.now) or 0.0,
        error=r.error,
    )


def _outbox(r: Any) -> OutboxRow:
    key = _bytes(r.key)
    return OutboxRow(
        id=r.id,
        seq=r.seq,
        kind=r.kind,
        message_type=r.message_type,
        topic=r.topic,
        key=key.decode("utf-8", "backslashreplace") if key is not None else None,
        session_id=r.session_id,
        correlation_id=r.correlation_id,
        status=r.status,
        attempts=r.attempts,
        created_at=r.created_at,
        next_attempt_at=r.next_attempt_at,
        claimed_until=r.claimed_until,
        sent_at=r.sent_at,
        lag_ms=ms_between(r.created_at, r.sent_at or r.now) or 0.0,
        last_error=r.last_error,
    )


def _outbox_summary(conn: Connection) -> OutboxSummary:
    r = conn.execute(sql.OUTBOX_SUMMARY).one()
    return OutboxSummary(int(r.pending), _ms(r.oldest_pending_age_ms), int(r.failed), int(r.sent))


def _dead_letter(r: Any) -> DeadLetterRow:
    return DeadLetterRow(
        id=r.id,
        category=r.category,
        reason=r.reason,
        status=r.status,
        source_topic=r.source_topic,
        source_partition=r.source_partition,
        source_offset=r.source_offset,
        session_id=r.session_id,
        message_id=r.message_id,
        created_at=r.created_at,
        resolved_at=r.resolved_at,
        resolution=r.resolution,
    )


def _dead_letter_detail(r: Any) -> DeadLetterDetail:
    raw = RawMessage(
        r.source_topic,
        _bytes(r.value),
        _bytes(r.key),
        decode_headers(r.headers),
        r.source_partition,
        r.source_offset,
    )
    return dead_letter_detail(_dead_letter(r), raw)


def _inbox_state(r: Any) -> InboxState:
    return InboxState(int(r.id), r.outcome, bool(r.processed))


def _percentiles(r: Any) -> Percentiles:
    p = list(r.p) if r.p is not None else [None, None, None]
    return Percentiles(int(r.n), _ms(p[0]), _ms(p[1]), _ms(p[2]))
