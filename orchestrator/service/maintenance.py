"""Beat's periodic work: inbox re-drive, AsyncTask timeouts, retention. All safe to run twice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, text

from orchestrator.adapters.postgres.store import SqlTransaction, translate_errors
from orchestrator.core.outbound import fact_message
from orchestrator.core.plan import plan_timeout
from orchestrator.observability.logs import get_logger
from orchestrator.service.process_message import iso, utc_now

log = get_logger("orchestrator.maintenance")

# Only each session's oldest unprocessed row is re-driven (the drain processes the rest in
# order). It backs off exponentially with its attempt count, and with its own re-drives: a row
# waits at least as long as it had waited when last triggered (capped at 2**REDRIVE_GROWTH_CAP
# times `after`), so it is re-driven at about 1, 2, 4, 8... times `after` from its arrival. A
# row not yet processed because the workers are behind is then not re-triggered every `after`
# seconds, which would queue ever more drain tasks for sessions already queued and feed the
# backlog it is waiting in (a 5-minute soak near capacity went from 0.1 s to 97 s of latency).
REDRIVE_GROWTH_CAP = 3
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


@dataclass
class Maintenance:
    engine: Engine
    domain_topic: str
    trigger: Callable[[str, str], None]
    queue_for_topic: Callable[[str], str]
    redrive_after_s: float
    retention_s: float

    def redrive(self) -> int:
        with translate_errors(), self.engine.begin() as conn:
            after = self.redrive_after_s
            params = {"after": after, "growth_max": after * 2**REDRIVE_GROWTH_CAP}
            rows = list(conn.execute(REDRIVE, params))
        for session_id, topic in rows:
            log.warning("orchestrator_inbox_redrive", session_id=session_id, topic=topic)
            self.trigger(session_id, self.queue_for_topic(topic))
        return len(rows)

    def expire_tasks(self, limit: int = 500) -> int:
        """Time out AsyncTasks past their deadline and emit a fact saying so, atomically."""
        now = iso(utc_now())
        with translate_errors(), self.engine.begin() as conn:
            tx = SqlTransaction(conn)
            expired = list(conn.execute(EXPIRE_TASKS, {"limit": limit}))
            for task_id, task_type, session_id, correlation_id in expired:
                fact = plan_timeout(task_id, task_type, session_id, correlation_id, now)
                if tx.insert_fact(fact, "GenesisSession"):
                    tx.insert_outbox(fact_message(fact, self.domain_topic, None))
                log.warning(
                    "orchestrator_async_task_timed_out",
                    task_id=task_id,
                    task_type=task_type,
                    session_id=session_id,
                    correlation_id=correlation_id,
                )
        return len(expired)

    def prune(self, limit: int = 5000) -> tuple[int, int]:
        """Delete sent outbox and processed inbox rows older than the retention, in slices."""
        params = {"keep": self.retention_s, "limit": limit}
        with translate_errors(), self.engine.begin() as conn:
            outbox = conn.execute(PRUNE_OUTBOX, params).rowcount
            inbox = conn.execute(PRUNE_INBOX, params).rowcount
        if outbox or inbox:
            log.info("orchestrator_retention_pruned", outbox=outbox, inbox=inbox)
        return outbox, inbox
