"""The batched drain's `DrainStore` port on PostgreSQL: whole sessions held by session-level
advisory locks on the drain's connection.

One statement finds the sessions with pending rows, takes each free one's lock with
`pg_try_advisory_lock` (a session another drain holds is skipped, never waited for) and reads
their pending rows; a second counts an attempt on the fresh ones. The locks are the ones the
per-row path takes per transaction (`sql.SESSION_LOCK`), so both paths exclude each other; they
outlive the claim's transaction and are released explicitly, or with the connection if the
process dies.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from sqlalchemy import Connection, text

from orchestrator.adapters.postgres.codec import inbox_row
from orchestrator.adapters.postgres.sql import INBOX_COLUMNS
from orchestrator.adapters.postgres.store import SqlStore, SqlTransaction
from orchestrator.core.records import InboxRow
from orchestrator.service.ports import ClaimedBatch

# The key of `sql.SESSION_LOCK`, for a session id in the column `session_id` / the value `s`.
HELD_KEY = "hashtextextended(session_id, 7274)"
RELEASED_KEY = "hashtextextended(s, 7274)"

# The oldest `scan` sessions with pending rows; the free ones locked; up to `per_session` of
# each one's pending rows. MATERIALIZED keeps the lock call to exactly one per scanned session.
CLAIM = text(
    f"""
    WITH heads AS MATERIALIZED (
      SELECT session_id, min(id) AS head FROM inbox
      WHERE processed_at IS NULL AND session_id <> ALL(CAST(:skip AS text[]))
      GROUP BY session_id ORDER BY min(id) LIMIT :scan),
    held AS MATERIALIZED (
      SELECT session_id, head FROM heads
      WHERE pg_try_advisory_lock({HELD_KEY}))
    SELECT held.session_id AS held_session, r.* FROM held LEFT JOIN LATERAL (
      SELECT {INBOX_COLUMNS} FROM inbox
      WHERE inbox.session_id = held.session_id AND processed_at IS NULL
      ORDER BY id LIMIT :per_session) r ON true
    ORDER BY held.head, r.id
    """  # noqa: S608 - only this module's constants are interpolated
)
# The attempt count only bounds retries of a poison message: it need not wait for the WAL flush.
ASYNC_COMMIT = text("SET LOCAL synchronous_commit TO OFF")
COUNT = text("UPDATE inbox SET attempts = attempts + 1 WHERE id = ANY(:ids)")
UNCOUNT = text(
    "UPDATE inbox SET attempts = greatest(attempts - 1, 0)"
    " WHERE id = ANY(:ids) AND processed_at IS NULL"
)
RELEASE = text(
    f"SELECT count(*) FILTER (WHERE NOT pg_advisory_unlock({RELEASED_KEY}))"  # noqa: S608
    " FROM unnest(CAST(:sids AS text[])) AS s"
)
# Every row of a pass marked processed in one statement.
MARK_PROCESSED = text(
    "UPDATE inbox i SET processed_at = now(), outcome = u.outcome, last_error = u.error"
    " FROM unnest(CAST(:ids AS bigint[]), CAST(:outcomes AS text[]), CAST(:errors AS text[]))"
    " AS u(id, outcome, error) WHERE i.id = u.id"
)
UNLOCK_ALL = text("SELECT pg_advisory_unlock_all()")
# A separate statement after RELEASE: its snapshot must see rows committed before the unlock.
STILL_PENDING = text(
    "SELECT DISTINCT session_id FROM inbox WHERE session_id = ANY(:sids) AND processed_at IS NULL"
)


class BatchedTransaction(SqlTransaction):
    """A pass's transaction: savepoints cost two round trips per row, and a failure inside one
    fails the pass anyway (the row-by-row fallback has them); processed marks wait for the end."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self.processed: list[tuple[int, str, str | None]] = []

    def mark_processed(self, inbox_id: int, outcome: str, error: str | None = None) -> None:
        self.processed.append((inbox_id, outcome, error))

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        yield

    def flush(self) -> None:
        if self.processed:
            ids, outcomes, errors = zip(*self.processed, strict=True)
            params = {"ids": list(ids), "outcomes": list(outcomes), "errors": list(errors)}
            self.conn.execute(MARK_PROCESSED, params)
            self.processed = []


class PgDrainStore:
    """Runs inside `SqlStore.session()`: the locks live on that one connection."""

    def __init__(self, store: SqlStore, per_session: int = 50) -> None:
        self.store = store
        self.per_session = per_session

    def claim(self, max_sessions: int, max_rows: int, skip: Sequence[str] = ()) -> ClaimedBatch:
        batch = ClaimedBatch()
        rows: list[InboxRow] = []
        params = {
            "scan": max_sessions,
            "per_session": max(1, min(self.per_session, max_rows)),
            "skip": list(skip),
        }
        with self.store.transaction() as tx:
            tx.conn.execute(ASYNC_COMMIT)
            for r in tx.conn.execute(CLAIM, params):
                if r.held_session not in batch.held:
                    batch.held.append(r.held_session)
                if r.id is not None:
                    rows.append(inbox_row(r))
            batch.suspect = _suspects(rows)
            suspects = set(batch.suspect)
            fresh = [r for r in rows if r.session_id not in suspects][:max_rows]
            if fresh:
                tx.conn.execute(COUNT, {"ids": [r.id for r in fresh]})
        batch.fresh = [_counted(r) for r in fresh]
        batch.full = len(batch.held) >= max_sessions or len(rows) >= max_rows
        return batch

    @contextmanager
    def transaction(self) -> Iterator[BatchedTransaction]:
        with self.store.transaction() as tx:
            batched = BatchedTransaction(tx.conn)
            yield batched
            batched.flush()

    def uncount(self, inbox_ids: Sequence[int]) -> None:
        if inbox_ids:
            with self.store.transaction() as tx:
                tx.conn.execute(UNCOUNT, {"ids": list(inbox_ids)})

    def release(self, sessions: Sequence[str]) -> list[str]:
        if not sessions:
            return []
        with self.store.transaction() as tx:
            tx.conn.execute(RELEASE, {"sids": list(sessions)})
        with self.store.transaction() as tx:
            return [s for (s,) in tx.conn.execute(STILL_PENDING, {"sids": list(sessions)})]

    def release_all(self) -> None:
        """After a failure: drop every advisory lock of this connection, or the connection
        itself, so that no lock goes back to the pool with it."""
        conn = self.store.current_connection()
        if conn is None:
            return
        try:
            if conn.in_transaction():
                conn.rollback()
            with conn.begin():
                conn.execute(UNLOCK_ALL)
        except Exception:
            conn.invalidate()
            raise


def _suspects(rows: Sequence[InboxRow]) -> list[str]:
    """Sessions with a row attempted before, in order of their fewest attempts: after a crash
    the rows that did not cause it go first, so they commit before the culprit runs again."""
    worst: dict[str, int] = {}
    for r in rows:
        if r.attempts > 0:
            worst[r.session_id] = max(worst.get(r.session_id, 0), r.attempts)
    return sorted(worst, key=lambda s: worst[s])


def _counted(row: InboxRow) -> InboxRow:
    return replace(row, attempts=row.attempts + 1)
