"""The store's SQL, named and kept together: every statement the message processor needs.

Each statement binds its values as parameters; the only text interpolated is the constants of
this module. Unique constraints are the final word on idempotency: every insert is
`ON CONFLICT DO NOTHING` and returns a row only when it wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Executable, Table, TextClause, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert

from orchestrator.adapters.postgres.schema import InboxMessage

INBOX_COLUMNS = (
    "id, topic, message_id, kind, message_type, session_id, correlation_id, traceparent, key,"
    ' value, headers, partition, "offset", attempts, processed_at IS NOT NULL AS processed'
)

# One session's messages are processed one at a time, in order: each processing transaction
# holds this lock (released at commit or rollback). 7274 keeps the key space apart from other
# users of `hashtextextended`.
SESSION_LOCK = "pg_advisory_xact_lock(hashtextextended(:sid, 7274))"

# The outbox row of the new row of the CTE `fresh`; its parameters are prefixed `o_`.
OUTBOX_FROM_NEW = (
    "INSERT INTO event_outbox (id, kind, message_type, topic, key, headers, payload,"
    " session_id, correlation_id) SELECT :o_id, :o_kind, :o_message_type, :o_topic, :o_key,"
    " CAST(:o_headers AS jsonb), :o_payload, :o_session_id, :o_correlation_id FROM fresh"
    " ON CONFLICT (id) DO NOTHING RETURNING id"
)

QUERIES = {
    "lock_session": f"SELECT {SESSION_LOCK}",
    "find_inbox": (
        f"SELECT {INBOX_COLUMNS} FROM inbox WHERE topic = :topic AND message_id = :mid"  # noqa: S608
    ),
    "inbox_for_update": f"SELECT {INBOX_COLUMNS} FROM inbox WHERE id = :id FOR UPDATE",  # noqa: S608
    # The session's advisory lock and the row's lock in one round trip.
    "lock_and_fetch": (
        f"SELECT {SESSION_LOCK} AS locked, {INBOX_COLUMNS} FROM inbox WHERE id = :id FOR UPDATE"  # noqa: S608
    ),
    "mark_processed": (
        "UPDATE inbox SET processed_at = now(), outcome = :outcome, last_error = :error"
        " WHERE id = :id"
    ),
    # Counts an attempt on the session's oldest unprocessed row, and says whether a later one
    # waits (so a drain can stop without another query).
    "begin_next": (
        "UPDATE inbox SET attempts = attempts + 1 WHERE id = ("  # noqa: S608
        " SELECT id FROM inbox WHERE session_id = :sid AND processed_at IS NULL"
        f" ORDER BY id LIMIT 1) AND processed_at IS NULL RETURNING {INBOX_COLUMNS},"
        " EXISTS (SELECT 1 FROM inbox later WHERE later.session_id = inbox.session_id"
        " AND later.processed_at IS NULL AND later.id > inbox.id) AS more"
    ),
    # The attempt count only bounds retries of a poison message: it need not wait for the WAL
    # flush (a crash of PostgreSQL may forget one increment, nothing more).
    "async_commit": "SET LOCAL synchronous_commit TO OFF",
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
    # A fact and, only when the fact is new, its outbox row: one round trip.
    "insert_fact_with_outbox": (
        "WITH fresh AS (INSERT INTO domain_events (event_id, event_type, aggregate_type,"  # noqa: S608
        " session_id, correlation_id, causation_id, payload) VALUES (:event_id, :event_type,"
        " :aggregate_type, :session_id, :correlation_id, :causation_id,"
        " CAST(:payload AS jsonb)) ON CONFLICT DO NOTHING RETURNING event_id),"
        f" o AS ({OUTBOX_FROM_NEW})"
        " SELECT EXISTS (SELECT 1 FROM fresh) AS new, EXISTS (SELECT 1 FROM o) AS wrote"
    ),
    # An AsyncTask and, only when the task is new, its capability message: one round trip.
    "create_task_with_outbox": (
        "WITH fresh AS (INSERT INTO async_tasks (id, task_type, correlation_id, session_id,"  # noqa: S608
        " causation_id, status, input, deadline_at) VALUES (:id, :task_type, :correlation_id,"
        " :session_id, :causation_id, 'PENDING', CAST(:input AS jsonb), :deadline)"
        " ON CONFLICT DO NOTHING RETURNING id),"
        f" o AS ({OUTBOX_FROM_NEW})"
        " SELECT EXISTS (SELECT 1 FROM fresh) AS new, EXISTS (SELECT 1 FROM o) AS wrote"
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
    # Optimistic locking: completes the task only at the version read.
    "complete_task": (
        "UPDATE async_tasks SET status = 'COMPLETED', result = CAST(:result AS jsonb),"
        " completed_at = now(), updated_at = now(), version = version + 1"
        " WHERE id = :id AND version = :version AND status IN ('PENDING', 'RUNNING')"
    ),
    # A result for a task that already timed out is kept, and the task says so.
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
    # The task that holds a correlation and type (the unique index on active tasks).
    "active_task_id": (
        "SELECT id FROM async_tasks WHERE correlation_id = :cid AND task_type = :task_type"
        " AND status IN ('PENDING', 'RUNNING') LIMIT 1"
    ),
    # Since the arrival of the correlation's first command: the commands are the causes of the
    # correlation's facts (index on domain_events.correlation_id), each found by its inbox key.
    "correlation_age": (
        "SELECT extract(epoch FROM now() - min(received_at)) FROM inbox"
        " WHERE topic = :topic AND kind = 'command' AND message_id IN ("
        " SELECT causation_id FROM domain_events WHERE correlation_id = :cid)"
    ),
}


def quote_identifier(name: str) -> str:
    """`name` as a quoted SQL identifier, for the statements that take no bound parameter
    (`CREATE DATABASE`)."""
    return '"' + name.replace('"', '""') + '"'


# Built once: constructing text() parses the bind parameters on every call.
STATEMENTS: dict[str, TextClause] = {name: text(sql) for name, sql in QUERIES.items()}


def insert_inbox(values: Sequence[dict[str, Any]]) -> Executable:
    """One multi-row insert; existing (topic, message_id) keys are left alone. Returns the id,
    topic and message_id of each new row."""
    table = cast(Table, InboxMessage.__table__)
    return (
        pg_insert(table)
        .values(list(values))
        .on_conflict_do_nothing(index_elements=["topic", "message_id"])
        .returning(table.c.id, table.c.topic, table.c.message_id)
    )


def unprocessed_among(keys: Sequence[tuple[str, str]]) -> Executable:
    """The (topic, message_id) of those of `keys` that are recorded and not yet processed."""
    table = cast(Table, InboxMessage.__table__)
    c = table.c
    return (
        table.select()
        .with_only_columns(c.topic, c.message_id)
        .where(tuple_(c.topic, c.message_id).in_(list(keys)), c.processed_at.is_(None))
    )
