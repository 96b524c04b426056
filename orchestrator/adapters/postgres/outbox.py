"""The relay's `Outbox` port on PostgreSQL: claims under a lease, settlement in one transaction.

A claim takes, for each (topic, key), the run of its oldest due rows; a key whose older row is
leased elsewhere or backing off is skipped, so one key's order holds across parallel relays and
retries. Claims are serialised by an advisory lock (a few milliseconds each), so two relays never
split one key's run.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

from orchestrator.adapters.postgres.codec import decode_headers
from orchestrator.adapters.postgres.errors import translate_errors
from orchestrator.service.ports import ClaimedRow, Settlement

CLAIM_LOCK = 727275
LOCK_CLAIMS = text("SELECT pg_advisory_xact_lock(:k)")
CLAIM = text(
    """
    UPDATE event_outbox SET claimed_until = now() + make_interval(secs => :lease)
    WHERE id IN (
      SELECT o.id FROM event_outbox o
      WHERE o.status = 'PENDING' AND o.next_attempt_at <= now()
        AND (o.claimed_until IS NULL OR o.claimed_until < now())
        AND NOT EXISTS (
          SELECT 1 FROM event_outbox p
          WHERE p.status = 'PENDING' AND p.topic = o.topic AND p.seq < o.seq
            AND (p.key = o.key OR (p.key IS NULL AND o.key IS NULL))
            AND (p.next_attempt_at > now() OR p.claimed_until >= now()))
      ORDER BY o.seq LIMIT :limit
      FOR UPDATE SKIP LOCKED)
    RETURNING id, seq, kind, topic, key, headers, payload, attempts,
      extract(epoch FROM now() - created_at) AS age_s
    """
)
MARK_SENT = text(
    "UPDATE event_outbox SET status = 'SENT', sent_at = now(), claimed_until = NULL,"
    " attempts = attempts + 1 WHERE id = ANY(:ids)"
)
START_TASKS = text(
    "UPDATE async_tasks SET status = 'RUNNING', started_at = now(), updated_at = now(),"
    " version = version + 1 WHERE id = ANY(:ids) AND status = 'PENDING'"
)
BACK_OFF = text(
    "UPDATE event_outbox SET attempts = attempts + 1, claimed_until = NULL, last_error = :err,"
    " next_attempt_at = now() + make_interval(secs => :delay) WHERE id = :id"
)
MARK_FAILED = text(
    "UPDATE event_outbox SET status = 'FAILED', attempts = attempts + 1, claimed_until = NULL,"
    " last_error = :err WHERE id = :id"
)


def _claimed(row: Any) -> ClaimedRow:
    return ClaimedRow(
        id=row.id,
        seq=int(row.seq),
        kind=row.kind,
        topic=row.topic,
        key=bytes(row.key) if row.key is not None else None,
        headers=decode_headers(row.headers),
        payload=bytes(row.payload) if row.payload is not None else None,
        attempts=int(row.attempts),
        age_s=float(row.age_s),
    )


class PgOutbox:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def claim(self, lease_s: float, limit: int) -> list[ClaimedRow]:
        with translate_errors(), self.engine.begin() as conn:
            conn.execute(LOCK_CLAIMS, {"k": CLAIM_LOCK})
            rows = list(conn.execute(CLAIM, {"lease": lease_s, "limit": limit}))
        # RETURNING does not keep the subquery's order: hand them out strictly in seq order, so
        # one key's messages reach their partition in the order they were committed.
        rows.sort(key=lambda row: row.seq)
        return [_claimed(row) for row in rows]

    def settle(self, settlement: Settlement) -> None:
        with translate_errors(), self.engine.begin() as conn:
            for row_id, error in settlement.failures:
                conn.execute(MARK_FAILED, {"id": row_id, "err": error})
            for row_id, error, delay in settlement.retries:
                conn.execute(BACK_OFF, {"id": row_id, "err": error, "delay": delay})
            if settlement.sent:
                conn.execute(MARK_SENT, {"ids": settlement.sent})
            if settlement.tasks_started:
                conn.execute(START_TASKS, {"ids": settlement.tasks_started})
