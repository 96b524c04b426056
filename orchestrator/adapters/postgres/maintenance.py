"""Beat's sweeps on PostgreSQL (the `MaintenanceStore` port): inbox re-drive, AsyncTask
timeouts, retention. Each statement takes a bounded slice and skips rows others hold."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

from orchestrator.adapters.postgres.errors import translate_errors
from orchestrator.adapters.postgres.store import SqlTransaction
from orchestrator.service.ports import ExpiredTask, Transaction

# Only each session's oldest unprocessed row is due; it waits `after * 2**attempts` (capped), and
# at least as long as it had waited when last triggered (capped at `growth_max`).
REDRIVE = text(
    """
    WITH heads AS (
      SELECT DISTINCT ON (session_id) id, session_id, topic, attempts, triggered_at, received_at
      FROM inbox WHERE processed_at IS NULL ORDER BY session_id, id)
    UPDATE inbox i SET triggered_at = now()
    FROM heads h
    WHERE i.id = h.id AND coalesce(h.triggered_at, h.received_at) < now() - make_interval(
            secs => greatest(
              :after * power(2, least(h.attempts, 6)),
              least(coalesce(extract(epoch FROM h.triggered_at - h.received_at), 0),
                    :growth_max)))
    RETURNING i.session_id, i.topic
    """
)
EXPIRE_TASKS = text(
    """
    UPDATE async_tasks SET status = 'FAILED', error = 'timeout', completed_at = now(),
      updated_at = now(), version = version + 1
    WHERE id IN (SELECT id FROM async_tasks WHERE status IN ('PENDING', 'RUNNING')
                 AND deadline_at < now() ORDER BY deadline_at LIMIT :limit
                 FOR UPDATE SKIP LOCKED)
    RETURNING id, task_type, session_id, correlation_id
    """
)
PRUNE_OUTBOX = text(
    "DELETE FROM event_outbox WHERE id IN (SELECT id FROM event_outbox WHERE status = 'SENT'"
    " AND sent_at < now() - make_interval(secs => :keep) LIMIT :limit)"
)
PRUNE_INBOX = text(
    "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox WHERE processed_at IS NOT NULL"
    " AND processed_at < now() - make_interval(secs => :keep) LIMIT :limit)"
)


class PgMaintenance:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def redrive(self, after_s: float, growth_max_s: float) -> list[tuple[str, str]]:
        with translate_errors(), self.engine.begin() as conn:
            rows = conn.execute(REDRIVE, {"after": after_s, "growth_max": growth_max_s})
            return [(session_id, topic) for session_id, topic in rows]

    @contextmanager
    def expire_tasks(self, limit: int) -> Iterator[tuple[list[ExpiredTask], Transaction]]:
        with translate_errors(), self.engine.begin() as conn:
            expired = [ExpiredTask(*row) for row in conn.execute(EXPIRE_TASKS, {"limit": limit})]
            yield expired, SqlTransaction(conn)

    def prune(self, keep_s: float, limit: int) -> tuple[int, int]:
        params = {"keep": keep_s, "limit": limit}
        with translate_errors(), self.engine.begin() as conn:
            outbox = conn.execute(PRUNE_OUTBOX, params).rowcount
            inbox = conn.execute(PRUNE_INBOX, params).rowcount
        return int(outbox), int(inbox)
