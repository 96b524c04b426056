"""The outbox and inbox backlog, read at metrics scrape time (one round trip)."""

from __future__ import annotations

from sqlalchemy import Engine, text

from orchestrator.adapters.postgres.errors import translate_errors

BACKLOG = text(
    """
    SELECT
      (SELECT count(*) FROM event_outbox WHERE status = 'PENDING'),
      (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM event_outbox
         WHERE status = 'PENDING'),
      (SELECT count(*) FROM event_outbox WHERE status = 'FAILED'),
      (SELECT count(*) FROM inbox WHERE processed_at IS NULL),
      (SELECT coalesce(extract(epoch FROM now() - min(received_at)), 0) FROM inbox
         WHERE processed_at IS NULL)
    """
)


class PgBacklog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self) -> tuple[float, float, float, float, float]:
        """Outbox pending, outbox lag (s), outbox failed, inbox backlog, inbox oldest (s)."""
        with translate_errors(), self.engine.connect() as conn:
            row = conn.execute(BACKLOG).one()
        pending, lag, failed, backlog, oldest = (float(v) for v in row)
        return pending, lag, failed, backlog, oldest
