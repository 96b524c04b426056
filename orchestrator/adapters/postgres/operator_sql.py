"""The operator commands' SQL, kept together: named statements with bound parameters.

A filter given as NULL matches every row (`CAST(:x AS text) IS NULL OR ...`), so one statement
serves every combination of options. Ages and windows use `now()`, the clock that wrote the rows.
"""

from __future__ import annotations

from sqlalchemy import text

# -- trace -----------------------------------------------------------------------------------

TRACE_INBOX = text(
    'SELECT id, topic, message_id, kind, message_type, correlation_id, partition, "offset",'
    " attempts, outcome, last_error, received_at, triggered_at, processed_at"
    " FROM inbox WHERE session_id = :sid ORDER BY id"
)
TRACE_FACTS = text(
    "SELECT event_id, event_type, correlation_id, causation_id, payload, created_at"
    " FROM domain_events WHERE session_id = :sid ORDER BY created_at, event_id"
)
TRACE_TASKS = text(
    "SELECT id, task_type, status, session_id, correlation_id, causation_id, error,"
    " created_at, started_at, completed_at, deadline_at, now() AS now"
    " FROM async_tasks WHERE session_id = :sid ORDER BY created_at, id"
)
# Raw dead letters (input that never parsed) carry no session id: their Kafka key names it.
TRACE_OUTBOX = text(
    "SELECT id, seq, kind, message_type, topic, key, session_id, correlation_id, status,"
    " attempts, last_error, created_at, next_attempt_at, claimed_until, sent_at, now() AS now"
    " FROM event_outbox WHERE session_id = :sid OR id IN (SELECT id FROM dead_letters"
    " WHERE session_id IS NULL AND key = :key) ORDER BY seq"
)
TRACE_DEAD_LETTERS = text(
    "SELECT id, category, reason, status, source_topic, source_partition, source_offset,"
    " session_id, message_id, created_at, resolved_at, resolution FROM dead_letters"
    " WHERE session_id = :sid OR (session_id IS NULL AND key = :key)"
    " ORDER BY created_at, id"
)

# -- tasks -----------------------------------------------------------------------------------

TASKS = text(
    "SELECT id, task_type, status, session_id, correlation_id, causation_id, error,"
    " created_at, started_at, completed_at, deadline_at, now() AS now FROM async_tasks"
    " WHERE (CAST(:session AS text) IS NULL OR session_id = :session)"
    " AND (CAST(:prefix AS text) IS NULL OR starts_with(task_type, :prefix))"
    " AND (CAST(:state AS text) IS NULL OR status = :state)"
    " AND (CAST(:older AS double precision) IS NULL"
    "      OR created_at < now() - make_interval(secs => CAST(:older AS double precision)))"
    " ORDER BY created_at DESC, id DESC LIMIT :limit"
)

# -- outbox ----------------------------------------------------------------------------------

OUTBOX = text(
    "SELECT id, seq, kind, message_type, topic, key, session_id, correlation_id, status,"
    " attempts, last_error, created_at, next_attempt_at, claimed_until, sent_at, now() AS now"
    " FROM event_outbox WHERE (CAST(:status AS text) IS NULL OR status = :status)"
    " ORDER BY seq DESC LIMIT :limit"
)
OUTBOX_SUMMARY = text(
    "SELECT count(*) FILTER (WHERE status = 'PENDING') AS pending,"
    " count(*) FILTER (WHERE status = 'FAILED') AS failed,"
    " count(*) FILTER (WHERE status = 'SENT') AS sent,"
    " extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'PENDING')) * 1000"
    " AS oldest_pending_age_ms FROM event_outbox"
)
OUTBOX_RETRY_ONE = text(
    "UPDATE event_outbox SET status = 'PENDING', next_attempt_at = now(),"
    " claimed_until = NULL WHERE id = :id AND status = 'FAILED' RETURNING id"
)
OUTBOX_RETRY_FAILED = text(
    "UPDATE event_outbox SET status = 'PENDING', next_attempt_at = now(),"
    " claimed_until = NULL WHERE status = 'FAILED' RETURNING id"
)
OUTBOX_REPUBLISH = text(
    "UPDATE event_outbox SET status = 'PENDING', next_attempt_at = now(),"
    " claimed_until = NULL WHERE status = 'SENT'"
    " AND sent_at >= now() - make_interval(secs => :seconds) RETURNING id"
)
OUTBOX_STATUS = text("SELECT status FROM event_outbox WHERE id = :id")

# -- dead letters ----------------------------------------------------------------------------

DEAD_LETTERS = text(
    "SELECT id, category, reason, status, source_topic, source_partition, source_offset,"
    " session_id, message_id, created_at, resolved_at, resolution FROM dead_letters"
    " WHERE (CAST(:category AS text) IS NULL OR category = :category)"
    " AND (CAST(:status AS text) IS NULL OR status = :status)"
    " ORDER BY created_at DESC, id LIMIT :limit"
)
DEAD_LETTER = text(
    "SELECT id, category, reason, status, source_topic, source_partition, source_offset,"
    " session_id, message_id, created_at, resolved_at, resolution, key, value, headers"
    " FROM dead_letters WHERE id = :id"
)
OPEN_DEAD_LETTER_IDS = text(
    "SELECT id FROM dead_letters WHERE status = 'OPEN'"
    " AND (CAST(:category AS text) IS NULL OR category = :category)"
    " ORDER BY created_at, id"
)
DEAD_LETTER_STATUS = text("SELECT status FROM dead_letters WHERE id = :id")
MARK_REPLAYED = text(
    "UPDATE dead_letters SET status = 'REPLAYED', resolved_at = now(),"
    " resolution = :resolution WHERE id = :id AND status = 'OPEN'"
)
KEEP_OPEN = text(
    "UPDATE dead_letters SET category = :category, reason = :reason"
    " WHERE id = :id AND status = 'OPEN'"
)
DISCARD = text(
    "UPDATE dead_letters SET status = 'DISCARDED', resolved_at = now(),"
    " resolution = :reason WHERE id = :id AND status = 'OPEN' RETURNING id"
)

# -- the inbox row of a replayed message -----------------------------------------------------

INBOX_STATE = text(
    "SELECT id, outcome, processed_at IS NOT NULL AS processed FROM inbox"
    " WHERE topic = :topic AND message_id = :mid"
)
# A replayed message's processed inbox row is opened again (attempts from zero, triggered now:
# should the replay itself die, beat's re-drive hands the row to a worker).
REOPEN_INBOX = text(
    "UPDATE inbox SET processed_at = NULL, outcome = NULL, last_error = NULL, attempts = 0,"
    " triggered_at = now() WHERE id = :id AND processed_at IS NOT NULL"
)
RESTORE_INBOX = text(
    "UPDATE inbox SET processed_at = now(), outcome = :outcome, last_error = :error"
    " WHERE id = :id AND processed_at IS NULL"
)

# -- stats (:window in seconds) --------------------------------------------------------------

STATS_NOW = text("SELECT now()")
STATS_INBOX = text(
    "SELECT count(*) FILTER (WHERE kind = 'command') AS commands, count(*) AS messages"
    " FROM inbox WHERE processed_at >= now() - make_interval(secs => :window)"
)
STATS_FACTS = text(
    "SELECT count(*) FROM domain_events WHERE created_at >= now() - make_interval(secs => :window)"
)
STATS_TASKS_CREATED = text(
    "SELECT count(*) FROM async_tasks WHERE created_at >= now() - make_interval(secs => :window)"
)
STATS_DEAD_LETTERS = text(
    "SELECT category, count(*) AS n FROM dead_letters"
    " WHERE created_at >= now() - make_interval(secs => :window)"
    " GROUP BY category ORDER BY category"
)
STATS_OUTBOX_FAILED = text(
    "SELECT count(*) FROM event_outbox WHERE status = 'FAILED'"
    " AND created_at >= now() - make_interval(secs => :window)"
)
STATS_TASKS_FAILED = text(
    "SELECT coalesce(error, '') AS error, count(*) AS n FROM async_tasks"
    " WHERE status = 'FAILED' AND completed_at >= now() - make_interval(secs => :window)"
    " GROUP BY 1 ORDER BY 1"
)
STATS_E2E_LATENCY = text(
    "SELECT count(*) AS n, percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP"
    " (ORDER BY extract(epoch FROM t.completed_at - i.received_at) * 1000) AS p"
    " FROM async_tasks t JOIN inbox i"
    " ON i.message_id = t.causation_id AND i.kind = 'command'"
    " WHERE t.status = 'COMPLETED'"
    " AND t.completed_at >= now() - make_interval(secs => :window)"
)
STATS_TASK_LATENCY = text(
    "SELECT count(*) AS n, percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP"
    " (ORDER BY extract(epoch FROM completed_at - created_at) * 1000) AS p"
    " FROM async_tasks WHERE status = 'COMPLETED'"
    " AND completed_at >= now() - make_interval(secs => :window)"
)
STATS_INBOX_BACKLOG = text(
    "SELECT count(*) AS unprocessed,"
    " extract(epoch FROM now() - min(received_at)) * 1000 AS oldest_age_ms"
    " FROM inbox WHERE processed_at IS NULL"
)
