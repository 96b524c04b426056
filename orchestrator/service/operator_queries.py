"""Operator queries and actions: what the `orchestrator` operator commands show and do.

`Operations` is a narrow class over an SQLAlchemy Engine: the story of one session (`trace`),
AsyncTasks, the outbox and its re-drive, dead letters with replay and discard, and the
pipeline's figures over a time window (`stats`). Every statement is named SQL with bound
parameters; results are plain dataclasses whose `as_dict()` is the commands' JSON: stable keys,
ISO-8601 UTC timestamps, durations in milliseconds (`*_ms`). Every age and window is measured
against the database clock, the clock that wrote the timestamps.

Connection trouble surfaces as `TransientError`; a refused action (unknown id, wrong state) as
`OperationRefused`.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from orchestrator.adapters.postgres.store import (
    SqlStore,
    SqlTransaction,
    decode_headers,
    translate_errors,
)
from orchestrator.core.errors import (
    Category,
    OrchestratorError,
    TransientError,
)
from orchestrator.core.inbound import RawMessage
from orchestrator.core.records import (
    DEAD_LETTER_STATES,
    OUTBOX_STATES,
    TASK_STATES,
    DeadLetterRecord,
    Status,
)
from orchestrator.service.process_message import OrchestratorAgent, iso

# Order of timeline entries that share a timestamp (one transaction writes them all at once).
KIND_RANK = {"inbox": 0, "fact": 1, "task": 2, "dead_letter": 3, "outbox": 4}

SQL = {
    # -- trace ---------------------------------------------------------------------------------
    "trace_inbox": (
        'SELECT id, topic, message_id, kind, message_type, correlation_id, partition, "offset",'
        " attempts, outcome, last_error, received_at, triggered_at, processed_at"
        " FROM inbox WHERE session_id = :sid ORDER BY id"
    ),
    "trace_facts": (
        "SELECT event_id, event_type, correlation_id, causation_id, payload, created_at"
        " FROM domain_events WHERE session_id = :sid ORDER BY created_at, event_id"
    ),
    "trace_tasks": (
        "SELECT id, task_type, status, session_id, correlation_id, causation_id, error,"
        " created_at, started_at, completed_at, deadline_at, now() AS now"
        " FROM async_tasks WHERE session_id = :sid ORDER BY created_at, id"
    ),
    # Raw dead letters (input that never parsed) carry no session id: their Kafka key names it.
    "trace_outbox": (
        "SELECT id, seq, kind, message_type, topic, key, session_id, correlation_id, status,"
        " attempts, last_error, created_at, next_attempt_at, claimed_until, sent_at, now() AS now"
        " FROM event_outbox WHERE session_id = :sid OR id IN (SELECT id FROM dead_letters"
        " WHERE session_id IS NULL AND key = :key) ORDER BY seq"
    ),
    "trace_dead_letters": (
        "SELECT id, category, reason, status, source_topic, source_partition, source_offset,"
        " session_id, message_id, created_at, resolved_at, resolution FROM dead_letters"
        " WHERE session_id = :sid OR (session_id IS NULL AND key = :key)"
        " ORDER BY created_at, id"
    ),
    # -- tasks ---------------------------------------------------------------------------------
    "tasks": (
        "SELECT id, task_type, status, session_id, correlation_id, causation_id, error,"
        " created_at, started_at, completed_at, deadline_at, now() AS now FROM async_tasks"
        " WHERE (CAST(:session AS text) IS NULL OR session_id = :session)"
        " AND (CAST(:prefix AS text) IS NULL OR starts_with(task_type, :prefix))"
        " AND (CAST(:state AS text) IS NULL OR status = :state)"
        " AND (CAST(:older AS double precision) IS NULL"
        "      OR created_at < now() - make_interval(secs => CAST(:older AS double precision)))"
        " ORDER BY created_at DESC, id DESC LIMIT :limit"
    ),
    # -- outbox --------------------------------------------------------------------------------
    "outbox": (
        "SELECT id, seq, kind, message_type, topic, key, session_id, correlation_id, status,"
        " attempts, last_error, created_at, next_attempt_at, claimed_until, sent_at, now() AS now"
        " FROM event_outbox WHERE (CAST(:status AS text) IS NULL OR status = :status)"
        " ORDER BY seq DESC LIMIT :limit"
    ),
    "outbox_summary": (
        "SELECT count(*) FILTER (WHERE status = 'PENDING') AS pending,"
        " count(*) FILTER (WHERE status = 'FAILED') AS failed,"
        " count(*) FILTER (WHERE status = 'SENT') AS sent,"
        " extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'PENDING')) * 1000"
        " AS oldest_pending_age_ms FROM event_outbox"
    ),
    "outbox_retry_one": (
        "UPDATE event_outbox SET status = 'PENDING', next_attempt_at = now(),"
        " claimed_until = NULL WHERE id = :id AND status = 'FAILED' RETURNING id"
    ),
    "outbox_retry_failed": (
        "UPDATE event_outbox SET status = 'PENDING', next_attempt_at = now(),"
        " claimed_until = NULL WHERE status = 'FAILED' RETURNING id"
    ),
    "outbox_republish": (
        "UPDATE event_outbox SET status = 'PENDING', next_attempt_at = now(),"
        " claimed_until = NULL WHERE status = 'SENT'"
        " AND sent_at >= now() - make_interval(secs => :seconds) RETURNING id"
    ),
    "outbox_status": "SELECT status FROM event_outbox WHERE id = :id",
    # -- dead letters --------------------------------------------------------------------------
    "dead_letters": (
        "SELECT id, category, reason, status, source_topic, source_partition, source_offset,"
        " session_id, message_id, created_at, resolved_at, resolution FROM dead_letters"
        " WHERE (CAST(:category AS text) IS NULL OR category = :category)"
        " AND (CAST(:status AS text) IS NULL OR status = :status)"
        " ORDER BY created_at DESC, id LIMIT :limit"
    ),
    "dead_letter": (
        "SELECT id, category, reason, status, source_topic, source_partition, source_offset,"
        " session_id, message_id, created_at, resolved_at, resolution, key, value, headers"
        " FROM dead_letters WHERE id = :id"
    ),
    "open_dead_letter_ids": (
        "SELECT id FROM dead_letters WHERE status = 'OPEN'"
        " AND (CAST(:category AS text) IS NULL OR category = :category)"
        " ORDER BY created_at, id"
    ),
    "dead_letter_inbox": (
        "SELECT id, outcome, processed_at IS NOT NULL AS processed FROM inbox"
        " WHERE topic = :topic AND message_id = :mid"
    ),
    # A replayed message's processed inbox row is opened again (attempts from zero, triggered
    # now: should the replay itself die, beat's re-drive hands the row to a worker).
    "reopen_inbox": (
        "UPDATE inbox SET processed_at = NULL, outcome = NULL, last_error = NULL, attempts = 0,"
        " triggered_at = now() WHERE id = :id AND processed_at IS NOT NULL"
    ),
    "restore_inbox": (
        "UPDATE inbox SET processed_at = now(), outcome = :outcome, last_error = :error"
        " WHERE id = :id AND processed_at IS NULL"
    ),
    "mark_replayed": (
        "UPDATE dead_letters SET status = 'REPLAYED', resolved_at = now(),"
        " resolution = :resolution WHERE id = :id AND status = 'OPEN'"
    ),
    "still_dead": (
        "UPDATE dead_letters SET category = :category, reason = :reason"
        " WHERE id = :id AND status = 'OPEN'"
    ),
    "discard": (
        "UPDATE dead_letters SET status = 'DISCARDED', resolved_at = now(),"
        " resolution = :reason WHERE id = :id AND status = 'OPEN' RETURNING id"
    ),
    "dead_letter_status": "SELECT status FROM dead_letters WHERE id = :id",
    # -- stats ---------------------------------------------------------------------------------
    "stats_now": "SELECT now()",
    "stats_inbox": (
        "SELECT count(*) FILTER (WHERE kind = 'command') AS commands, count(*) AS messages"
        " FROM inbox WHERE processed_at >= now() - make_interval(secs => :window)"
    ),
    "stats_facts": (
        "SELECT count(*) FROM domain_events"
        " WHERE created_at >= now() - make_interval(secs => :window)"
    ),
    "stats_tasks_created": (
        "SELECT count(*) FROM async_tasks"
        " WHERE created_at >= now() - make_interval(secs => :window)"
    ),
    "stats_dead_letters": (
        "SELECT category, count(*) AS n FROM dead_letters"
        " WHERE created_at >= now() - make_interval(secs => :window)"
        " GROUP BY category ORDER BY category"
    ),
    "stats_outbox_failed": (
        "SELECT count(*) FROM event_outbox WHERE status = 'FAILED'"
        " AND created_at >= now() - make_interval(secs => :window)"
    ),
    "stats_tasks_failed": (
        "SELECT coalesce(error, '') AS error, count(*) AS n FROM async_tasks"
        " WHERE status = 'FAILED' AND completed_at >= now() - make_interval(secs => :window)"
        " GROUP BY 1 ORDER BY 1"
    ),
    "stats_e2e_latency": (
        "SELECT count(*) AS n, percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP"
        " (ORDER BY extract(epoch FROM t.completed_at - i.received_at) * 1000) AS p"
        " FROM async_tasks t JOIN inbox i"
        " ON i.message_id = t.causation_id AND i.kind = 'command'"
        " WHERE t.status = 'COMPLETED'"
        " AND t.completed_at >= now() - make_interval(secs => :window)"
    ),
    "stats_task_latency": (
        "SELECT count(*) AS n, percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP"
        " (ORDER BY extract(epoch FROM completed_at - created_at) * 1000) AS p"
        " FROM async_tasks WHERE status = 'COMPLETED'"
        " AND completed_at >= now() - make_interval(secs => :window)"
    ),
    "stats_inbox_backlog": (
        "SELECT count(*) AS unprocessed,"
        " extract(epoch FROM now() - min(received_at)) * 1000 AS oldest_age_ms"
        " FROM inbox WHERE processed_at IS NULL"
    ),
}


class OperationRefused(OrchestratorError):
    """An operator action that cannot apply: unknown id, or a row in another state."""


# -- JSON ------------------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """Dataclasses, datetimes and containers -> JSON-ready values (timestamps as ISO-8601 UTC)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.metadata.get("json", True)
        }
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def ms_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)


def _ms(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def blob(data: bytes | None) -> tuple[str | None, str | None]:
    """Bytes for display: `(text, "utf-8")` when they decode, else `(base64, "base64")`."""
    if data is None:
        return None, None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"


def _bytes(value: Any) -> bytes | None:
    return bytes(value) if value is not None else None


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One event of a session's story. `kind`: inbox | fact | task | outbox | dead_letter."""

    at: datetime
    kind: str
    type: str
    id: str
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dict(to_json(self))


@dataclass(frozen=True, slots=True)
class TaskRow:
    id: str
    task_type: str
    status: str
    session_id: str
    correlation_id: str | None
    causation_id: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    deadline_at: datetime | None
    duration_ms: float | None  # created -> completed (or failed); null while active
    age_ms: float  # created -> now
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(to_json(self))


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: str
    seq: int
    kind: str
    message_type: str
    topic: str
    key: str | None
    session_id: str | None
    correlation_id: str | None
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    claimed_until: datetime | None
    sent_at: datetime | None
    lag_ms: float  # created -> sent, or created -> now while not sent
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(to_json(self))


@dataclass(frozen=True, slots=True)
class OutboxSummary:
    pending: int
    oldest_pending_age_ms: float | None
    failed: int
    sent: int


@dataclass(frozen=True, slots=True)
class OutboxListing:
    summary: OutboxSummary
    rows: list[OutboxRow]

    def as_dict(self) -> dict[str, Any]:
        return dict(to_json(self))


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    id: str
    category: str
    reason: str
    status: str
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    session_id: str | None
    message_id: str | None
    created_at: datetime
    resolved_at: datetime | None
    resolution: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(to_json(self))


@dataclass(frozen=True, slots=True)
class HeaderView:
    name: str
    value: str | None
    encoding: str | None  # utf-8 | base64 | null (no value)


@dataclass(frozen=True, slots=True)
class DeadLetterDetail(DeadLetterRow):
    """A dead letter with its original message: bytes shown as text when UTF-8, else base64."""

    key: str | None
    key_encoding: str | None
    value: str | None
    value_encoding: str | None
    value_size: int
    headers: list[HeaderView]
    raw: RawMessage = field(repr=False, compare=False, metadata={"json": False})

    def as_dict(self) -> dict[str, Any]:
        return dict(to_json(self))


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What one replay did. `replayed` is True when the message went through the pipeline;
    otherwise it is still a dead letter (`category`, `reason`) and nothing was lost."""

    dead_letter_id: str
    replayed: bool
    status: str  # the dead letter's status afterwards: REPLAYED | OPEN
    outcome: str  # processed | no_handler | ignored | duplicate | dead_lettered | error
    category: str | None
    reason: str | None
    fact_ids: list[str]
    task_ids: list[str]
    dead_letter_ids: list[str]  # dead letters the replay wrote (or found) again
    resolution: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(to_json(self))


@dataclass(frozen=True, slots=True)
class Percentiles:
    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class ErrorCounts:
    dead_letters: dict[str, int]  # created in the window, by category
    outbox_failed: int  # outbox rows created in the window that are FAILED
    tasks_failed: dict[str, int]  # AsyncTasks failed in the window, by error ("timeout", ...)


@dataclass(frozen=True, slots=True)
class InboxBacklog:
    unprocessed: int
    oldest_age_ms: float | None


@dataclass(frozen=True, slots=True)
class Stats:
    """The pipeline's figures over the last `window_s` seconds (up to `at`, database time).

    - commands_per_s: command inbox rows processed in the window / window (messages_per_s: all
      inbox rows, commands and capability results); facts_per_s: facts written / window.
    - task_creation_success_rate: tasks created / (tasks created + `capability_dispatch_failed`
      dead letters), both in the window; null when there was no attempt in the window.
    - end_to_end_latency: AsyncTasks completed in the window whose causing message is a command:
      completed_at - received_at of that command's inbox row. task_latency: every AsyncTask
      completed in the window, created_at -> completed_at.
    - errors, outbox (now), inbox backlog (now).
    """

    window_s: float
    at: datetime
    commands_processed: int
    commands_per_s: float
    messages_processed: int
    messages_per_s: float
    facts_emitted: int
    facts_per_s: float
    tasks_created: int
    task_dispatch_failures: int
    task_creation_success_rate: float | None
    end_to_end_latency: Percentiles
    task_latency: Percentiles
    errors: ErrorCounts
    outbox: OutboxSummary
    inbox: InboxBacklog

    def as_dict(self) -> dict[str, Any]:
        return dict(to_json(self))


# -- replay plumbing -------------------------------------------------------------------------


class _WatchedTransaction(SqlTransaction):
    """A store transaction that remembers every dead letter the agent writes (or finds)."""

    def __init__(self, conn: Connection, seen: list[DeadLetterRecord]) -> None:
        super().__init__(conn)
        self._seen = seen

    def insert_dead_letter(self, record: DeadLetterRecord) -> bool:
        self._seen.append(record)
        return super().insert_dead_letter(record)


class _WatchedStore(SqlStore):
    """The replay's store: the agent's own writes, plus a record of dead-lettering."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.dead_letters: list[DeadLetterRecord] = []

    @contextmanager
    def transaction(self) -> Iterator[SqlTransaction]:
        with translate_errors(), self.engine.begin() as conn:
            yield _WatchedTransaction(conn, self.dead_letters)


# -- the operations --------------------------------------------------------------------------


class Operations:
    """Read the pipeline's state and act on it; nothing here talks to Kafka or Redis."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _conn(self) -> Iterator[Connection]:
        with translate_errors(), self.engine.begin() as conn:
            yield conn

    def _all(self, name: str, **params: Any) -> list[Any]:
        with self._conn() as conn:
            return list(conn.execute(text(SQL[name]), params))

    # -- trace ---------------------------------------------------------------------------------

    def trace(self, session_id: str) -> list[TimelineEntry]:
        """Everything recorded for one session, in time order (empty when nothing is)."""
        params = {"sid": session_id, "key": session_id.encode()}
        with self._conn() as conn:
            inbox = list(conn.execute(text(SQL["trace_inbox"]), params))
            facts = list(conn.execute(text(SQL["trace_facts"]), params))
            tasks = list(conn.execute(text(SQL["trace_tasks"]), params))
            outbox = list(conn.execute(text(SQL["trace_outbox"]), params))
            dead = list(conn.execute(text(SQL["trace_dead_letters"]), params))
        entries: list[tuple[datetime, int, int, TimelineEntry]] = []

        def add(entry: TimelineEntry, tiebreak: int = 0) -> None:
            entries.append((entry.at, KIND_RANK[entry.kind], tiebreak, entry))

        for r in inbox:
            add(
                TimelineEntry(
                    r.received_at,
                    "inbox",
                    r.message_type,
                    r.message_id,
                    {
                        "inbox_id": r.id,
                        "message_kind": r.kind,
                        "topic": r.topic,
                        "partition": r.partition,
                        "offset": r.offset,
                        "correlation_id": r.correlation_id,
                        "received_at": r.received_at,
                        "processed_at": r.processed_at,
                        "processing_ms": ms_between(r.received_at, r.processed_at),
                        "outcome": r.outcome,
                        "attempts": r.attempts,
                        "last_error": r.last_error,
                    },
                ),
                r.id,
            )
        for r in facts:
            add(
                TimelineEntry(
                    r.created_at,
                    "fact",
                    r.event_type,
                    r.event_id,
                    {
                        "correlation_id": r.correlation_id,
                        "causation_id": r.causation_id,
                        "payload": r.payload,
                    },
                )
            )
        for t in (_task(r) for r in tasks):
            add(
                TimelineEntry(
                    t.created_at,
                    "task",
                    t.task_type,
                    t.id,
                    {
                        "status": t.status,
                        "correlation_id": t.correlation_id,
                        "causation_id": t.causation_id,
                        "created_at": t.created_at,
                        "started_at": t.started_at,
                        "completed_at": t.completed_at,
                        "deadline_at": t.deadline_at,
                        "duration_ms": t.duration_ms,
                        "error": t.error,
                    },
                )
            )
        for o in (_outbox(r) for r in outbox):
            add(
                TimelineEntry(
                    o.created_at,
                    "outbox",
                    o.message_type,
                    o.id,
                    {
                        "message_kind": o.kind,
                        "topic": o.topic,
                        "status": o.status,
                        "attempts": o.attempts,
                        "created_at": o.created_at,
                        "sent_at": o.sent_at,
                        "lag_ms": o.lag_ms,
                        "last_error": o.last_error,
                    },
                ),
                o.seq,
            )
        for d in (_dead_letter(r) for r in dead):
            add(
                TimelineEntry(
                    d.created_at,
                    "dead_letter",
                    d.category,
                    d.id,
                    {
                        "category": d.category,
                        "reason": d.reason,
                        "status": d.status,
                        "source_topic": d.source_topic,
                        "source_partition": d.source_partition,
                        "source_offset": d.source_offset,
                        "message_id": d.message_id,
                        "resolved_at": d.resolved_at,
                        "resolution": d.resolution,
                    },
                )
            )
        entries.sort(key=lambda e: (e[0], e[1], e[2], e[3].id))
        return [e[3] for e in entries]

    # -- tasks ---------------------------------------------------------------------------------

    def tasks(
        self,
        *,
        session_id: str | None = None,
        type_prefix: str | None = None,
        state: str | None = None,
        older_than_s: float | None = None,
        limit: int = 50,
    ) -> list[TaskRow]:
        """AsyncTasks, newest first; every filter optional (`type_prefix` matches the start)."""
        if state is not None and state not in TASK_STATES:
            raise OperationRefused(
                f"unknown task state {state!r} (one of {', '.join(TASK_STATES)})"
            )
        rows = self._all(
            "tasks",
            session=session_id,
            prefix=type_prefix,
            state=state,
            older=older_than_s,
            limit=limit,
        )
        return [_task(r) for r in rows]

    # -- outbox --------------------------------------------------------------------------------

    def outbox_summary(self) -> OutboxSummary:
        with self._conn() as conn:
            return _outbox_summary(conn)

    def outbox(self, *, status: str | None = None, limit: int = 50) -> OutboxListing:
        """Outbox rows, newest first, with the pending/failed summary."""
        if status is not None and status not in OUTBOX_STATES:
            raise OperationRefused(
                f"unknown outbox status {status!r} (one of {', '.join(OUTBOX_STATES)})"
            )
        with self._conn() as conn:
            rows = list(conn.execute(text(SQL["outbox"]), {"status": status, "limit": limit}))
            summary = _outbox_summary(conn)
        return OutboxListing(summary, [_outbox(r) for r in rows])

    def retry_outbox(self, outbox_id: str) -> int:
        """Hand one FAILED row back to the relay (PENDING, due now, no lease)."""
        with self._conn() as conn:
            done = conn.execute(text(SQL["outbox_retry_one"]), {"id": outbox_id}).first()
            if done is not None:
                return 1
            status = conn.execute(text(SQL["outbox_status"]), {"id": outbox_id}).scalar()
        if status is None:
            raise OperationRefused(f"no outbox row {outbox_id}")
        raise OperationRefused(f"outbox row {outbox_id} is {status}, not FAILED")

    def retry_failed_outbox(self) -> list[str]:
        """Hand every FAILED row back to the relay; returns their ids."""
        return [r.id for r in self._all("outbox_retry_failed")]

    def republish_sent(self, seconds: float) -> list[str]:
        """Hand the rows SENT in the last `seconds` back to the relay, for a broker that lost
        messages it had acknowledged. They keep their ids and their order (seq)."""
        if seconds <= 0:
            raise OperationRefused("the window must be a positive number of seconds")
        return [r.id for r in self._all("outbox_republish", seconds=seconds)]

    # -- dead letters --------------------------------------------------------------------------

    def dead_letters(
        self, *, category: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[DeadLetterRow]:
        """Dead letters, newest first."""
        if status is not None and status not in DEAD_LETTER_STATES:
            raise OperationRefused(
                f"unknown dead-letter status {status!r} (one of {', '.join(DEAD_LETTER_STATES)})"
            )
        rows = self._all("dead_letters", category=category, status=status, limit=limit)
        return [_dead_letter(r) for r in rows]

    def dead_letter(self, dead_letter_id: str) -> DeadLetterDetail:
        rows = self._all("dead_letter", id=dead_letter_id)
        if not rows:
            raise OperationRefused(f"no dead letter {dead_letter_id}")
        return _dead_letter_detail(rows[0])

    def open_dead_letter_ids(self, category: str | None = None) -> list[str]:
        return [r.id for r in self._all("open_dead_letter_ids", category=category)]

    def discard_dead_letter(self, dead_letter_id: str, reason: str) -> None:
        """Close an OPEN dead letter for good; the reason is required and kept."""
        if not reason.strip():
            raise OperationRefused("a reason is required to discard a dead letter")
        with self._conn() as conn:
            done = conn.execute(
                text(SQL["discard"]), {"id": dead_letter_id, "reason": reason.strip()}
            ).first()
            if done is not None:
                return
            status = conn.execute(text(SQL["dead_letter_status"]), {"id": dead_letter_id}).scalar()
        if status is None:
            raise OperationRefused(f"no dead letter {dead_letter_id}")
        raise OperationRefused(f"dead letter {dead_letter_id} is {status}, not OPEN")

    def replay_dead_letter(self, dead_letter_id: str, agent: OrchestratorAgent) -> ReplayResult:
        """Feed an OPEN dead letter's original message through the pipeline again.

        The message is rebuilt from the stored bytes, key, headers and source, and processed by
        an agent with `agent`'s configuration and registries (so a command type registered or a
        size cap raised since then applies). A message that already has an inbox row (dead-
        lettered while processing) gets that row opened again first. Success marks the dead
        letter REPLAYED. A message that is still bad is dead-lettered again by the agent: the
        same row (kept OPEN, with the current category and reason), or, if it now fails for
        another reason, a new row that supersedes this one. Nothing is ever lost.
        """
        dl = self.dead_letter(dead_letter_id)
        if dl.status != "OPEN":
            raise OperationRefused(f"dead letter {dead_letter_id} is {dl.status}, not OPEN")
        reopened = self._reopen_inbox(dl)
        store = _WatchedStore(self.engine)
        watched = OrchestratorAgent(
            store, agent.config, agent.commands, agent.handlers, agent.clock
        )
        try:
            outcome = watched.process_message(dl.raw)
        except TransientError:
            self._restore_inbox(reopened, "replay interrupted: database unavailable")
            raise
        except Exception as exc:
            reason = f"replay raised {type(exc).__name__}: {' '.join(str(exc).split())}"
            self._restore_inbox(reopened, reason)
            return ReplayResult(
                dl.id, False, "OPEN", "error", dl.category, reason, [], [], [], None
            )
        again = list(dict.fromkeys(r.id for r in store.dead_letters))
        if not again and outcome.status is Status.DUPLICATE:
            # Processed meanwhile (by a worker, or an earlier replay): did that work out?
            inbox = self._all("dead_letter_inbox", topic=dl.source_topic, mid=outcome.message_id)
            if inbox and inbox[0].outcome == Status.DEAD_LETTERED.value:
                reason = f"message {outcome.message_id} was dead-lettered again while processing"
                dead = Status.DEAD_LETTERED.value
                return ReplayResult(
                    dl.id, False, "OPEN", dead, dl.category, reason, [], [], [], None
                )
        if again:
            return self._still_dead(dl, store.dead_letters, again, outcome.fact_ids)
        resolution = (
            f"replayed: {outcome.status.value} ({len(outcome.fact_ids)} fact(s),"
            f" {len(outcome.task_ids)} task(s))"
        )
        with self._conn() as conn:
            conn.execute(text(SQL["mark_replayed"]), {"id": dl.id, "resolution": resolution})
        return ReplayResult(
            dl.id,
            True,
            "REPLAYED",
            outcome.status.value,
            None,
            None,
            list(outcome.fact_ids),
            list(outcome.task_ids),
            [],
            resolution,
        )

    def _still_dead(
        self,
        dl: DeadLetterDetail,
        records: Sequence[DeadLetterRecord],
        again: list[str],
        fact_ids: list[str],
    ) -> ReplayResult:
        latest = records[-1]
        with self._conn() as conn:
            if dl.id in again:
                conn.execute(
                    text(SQL["still_dead"]),
                    {"id": dl.id, "category": latest.category, "reason": latest.reason},
                )
                status, resolution = "OPEN", None
            else:
                resolution = (
                    f"replayed, dead-lettered again as {', '.join(again)}"
                    f" ({latest.category}: {latest.reason})"
                )
                conn.execute(text(SQL["mark_replayed"]), {"id": dl.id, "resolution": resolution})
                status = "REPLAYED"
        return ReplayResult(
            dl.id,
            False,
            status,
            Status.DEAD_LETTERED.value,
            latest.category,
            latest.reason,
            list(fact_ids),
            [],
            again,
            resolution,
        )

    def _reopen_inbox(self, dl: DeadLetterDetail) -> tuple[int, str | None] | None:
        """Open the message's processed inbox row again; returns (row id, previous outcome)."""
        if dl.message_id is None:
            return None
        with self._conn() as conn:
            row = conn.execute(
                text(SQL["dead_letter_inbox"]), {"topic": dl.source_topic, "mid": dl.message_id}
            ).first()
            if row is None or not row.processed:
                return None
            conn.execute(text(SQL["reopen_inbox"]), {"id": row.id})
            return int(row.id), row.outcome

    def _restore_inbox(self, reopened: tuple[int, str | None] | None, error: str) -> None:
        """Close a reopened inbox row again after a failed replay (best effort: if the database
        is gone, the row stays open and beat's re-drive hands it to a worker)."""
        if reopened is None:
            return
        inbox_id, outcome = reopened
        try:
            with self._conn() as conn:
                conn.execute(
                    text(SQL["restore_inbox"]),
                    {
                        "id": inbox_id,
                        "outcome": outcome or Status.DEAD_LETTERED.value,
                        "error": error,
                    },
                )
        except TransientError:
            pass

    # -- stats ---------------------------------------------------------------------------------

    def stats(self, window_s: float = 300.0) -> Stats:
        """The figures over the last `window_s` seconds; see `Stats`."""
        if window_s <= 0:
            raise OperationRefused("the window must be a positive number of seconds")
        w = {"window": float(window_s)}
        with self._conn() as conn:

            def one(name: str) -> Any:
                return conn.execute(text(SQL[name]), w).first()

            def grouped(name: str) -> dict[str, int]:
                return {r[0]: int(r[1]) for r in conn.execute(text(SQL[name]), w)}

            at = conn.execute(text(SQL["stats_now"])).scalar_one()
            inbox = one("stats_inbox")
            facts = int(one("stats_facts")[0])
            created = int(one("stats_tasks_created")[0])
            dead = grouped("stats_dead_letters")
            outbox_failed = int(one("stats_outbox_failed")[0])
            tasks_failed = grouped("stats_tasks_failed")
            e2e = _percentiles(one("stats_e2e_latency"))
            task_latency = _percentiles(one("stats_task_latency"))
            backlog = one("stats_inbox_backlog")
            outbox = _outbox_summary(conn)
        dispatch_failed = dead.get(Category.CAPABILITY_DISPATCH_FAILED.value, 0)
        attempts = created + dispatch_failed
        return Stats(
            window_s=float(window_s),
            at=at,
            commands_processed=int(inbox.commands),
            commands_per_s=round(int(inbox.commands) / window_s, 6),
            messages_processed=int(inbox.messages),
            messages_per_s=round(int(inbox.messages) / window_s, 6),
            facts_emitted=facts,
            facts_per_s=round(facts / window_s, 6),
            tasks_created=created,
            task_dispatch_failures=dispatch_failed,
            task_creation_success_rate=round(created / attempts, 6) if attempts else None,
            end_to_end_latency=e2e,
            task_latency=task_latency,
            errors=ErrorCounts(dead, outbox_failed, tasks_failed),
            outbox=outbox,
            inbox=InboxBacklog(int(backlog.unprocessed), _ms(backlog.oldest_age_ms)),
        )


# -- row mapping -----------------------------------------------------------------------------


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
    r = conn.execute(text(SQL["outbox_summary"])).one()
    return OutboxSummary(int(r.pending), _ms(r.oldest_pending_age_ms), int(r.failed), int(r.sent))


def _dead_letter_fields(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "category": r.category,
        "reason": r.reason,
        "status": r.status,
        "source_topic": r.source_topic,
        "source_partition": r.source_partition,
        "source_offset": r.source_offset,
        "session_id": r.session_id,
        "message_id": r.message_id,
        "created_at": r.created_at,
        "resolved_at": r.resolved_at,
        "resolution": r.resolution,
    }


def _dead_letter(r: Any) -> DeadLetterRow:
    return DeadLetterRow(**_dead_letter_fields(r))


def _dead_letter_detail(r: Any) -> DeadLetterDetail:
    key, value = _bytes(r.key), _bytes(r.value)
    headers = decode_headers(r.headers)
    key_text, key_encoding = blob(key)
    value_text, value_encoding = blob(value)
    views = []
    for name, raw in headers:
        shown, encoding = blob(raw)
        views.append(HeaderView(name, shown, encoding))
    return DeadLetterDetail(
        **_dead_letter_fields(r),
        key=key_text,
        key_encoding=key_encoding,
        value=value_text,
        value_encoding=value_encoding,
        value_size=len(value) if value is not None else 0,
        headers=views,
        raw=RawMessage(r.source_topic, value, key, headers, r.source_partition, r.source_offset),
    )


def _percentiles(r: Any) -> Percentiles:
    p = list(r.p) if r.p is not None else [None, None, None]
    return Percentiles(int(r.n), _ms(p[0]), _ms(p[1]), _ms(p[2]))
