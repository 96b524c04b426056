"""The batched drain on a real PostgreSQL and Redis: many sessions in one transaction, a poison
row isolated so that exactly it is counted and dead-lettered, sessions another drain holds left
alone, a row that killed its worker counted, and a row committed while its session is held still
drained."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from orchestrator.adapters.postgres.drain_store import PgDrainStore
from orchestrator.adapters.postgres.store import SqlStore
from orchestrator.adapters.redis.state import RedisState, make_redis
from orchestrator.core.inbound import RawMessage
from orchestrator.core.records import NewInbox, Status
from orchestrator.service.batch_drain import BatchDrainer, DrainBounds
from orchestrator.service.process_message import MessageProcessor, ProcessorConfig
from tests.support.db import FIXED_NOW, Db, Wire


class PoisonProcessor(MessageProcessor):
    """Raises for the rows whose message id is in `poison`, as a bug in a handler would."""

    def __init__(self, store: SqlStore, poison: set[str]) -> None:
        super().__init__(store, ProcessorConfig(max_attempts=3), clock=lambda: FIXED_NOW)
        self.poison = poison

    def _process_locked(self, tx: Any, row: Any) -> Any:
        if row.message_id in self.poison:
            raise RuntimeError(f"handler bug on {row.message_id}")
        return super()._process_locked(tx, row)


@pytest.fixture
def state(redis_url: str, redis_prefix: str) -> Iterator[RedisState]:
    client = make_redis(redis_url)
    try:
        yield RedisState(client, redis_prefix, lock_ttl_s=30.0, done_ttl_s=60)
    finally:
        client.close()


def record(store: SqlStore, processor: MessageProcessor, raws: list[RawMessage]) -> list[str]:
    rows = []
    for raw in raws:
        c = processor.classify(raw)
        rows.append(
            NewInbox(
                raw,
                c.message_id,
                c.kind.value,
                c.message_type,
                str(c.session_id),
                c.correlation_id,
                None,
            )
        )
    with store.transaction() as tx:
        tx.insert_inbox(rows, triggered=True)
    return [r.message_id for r in rows]


def drainer(
    processor: MessageProcessor, state: RedisState, requests: list[str] | None = None, **bounds: Any
) -> BatchDrainer:
    assert isinstance(processor.store, SqlStore)
    return BatchDrainer(
        processor,
        PgDrainStore(processor.store),
        state,
        lambda: (requests if requests is not None else []).append("drain"),
        lambda: None,
        bounds=DrainBounds(**bounds),
    )


def commands(sessions: int, per_session: int) -> list[RawMessage]:
    out = []
    for i in range(per_session):
        for s in range(sessions):
            out.append(Wire.command("Character.Request", f"s-{s}", f"c-{s}-{i}", {"n": i}))
    return out


def count_statements(engine: Engine) -> Callable[[], dict[str, int]]:
    seen = {"commit": 0, "statements": 0}

    def on_execute(*_: Any) -> None:
        seen["statements"] += 1

    def on_commit(*_: Any) -> None:
        seen["commit"] += 1

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    return lambda: dict(seen)


def test_one_pass_commits_many_sessions_together(
    store: SqlStore, db: Db, state: RedisState, engine: Engine
) -> None:
    processor = PoisonProcessor(store, set())
    record(store, processor, commands(sessions=30, per_session=3))
    counted = count_statements(engine)
    result = drainer(processor, state).run()
    assert len(result.outcomes) == 90
    assert {o.status for o in result.outcomes} == {Status.PROCESSED}
    assert result.passes == 1 and result.fallbacks == 0
    # claim (count) + work + release + still-pending + the run's final unlock-all: five commits
    # for 90 rows of 30 sessions (the per-session drain committed three times per row).
    assert counted()["commit"] == 5
    assert db.scalar("SELECT count(*) FROM inbox WHERE processed_at IS NULL") == 0
    assert db.scalar("SELECT count(*) FROM inbox WHERE attempts <> 1") == 0
    assert db.scalar("SELECT count(*) FROM domain_events") == 90


def test_rows_of_a_session_keep_their_order_in_a_batch(
    store: SqlStore, db: Db, state: RedisState
) -> None:
    processor = PoisonProcessor(store, set())
    ids = record(store, processor, commands(sessions=5, per_session=4))
    drainer(processor, state).run()
    facts = db.all(
        "SELECT causation_id, session_id FROM domain_events ORDER BY created_at, event_id"
    )
    by_session: dict[str, list[int]] = {}
    order = {mid: n for n, mid in enumerate(ids)}
    rows = db.all("SELECT message_id, session_id, processed_at FROM inbox ORDER BY id")
    for r in rows:
        by_session.setdefault(r["session_id"], []).append(order[r["message_id"]])
    assert all(seq == sorted(seq) for seq in by_session.values())
    assert len(facts) == 20


def test_a_poison_row_in_a_batch_of_100_from_30_sessions_is_the_only_one_counted(
    store: SqlStore, db: Db, state: RedisState
) -> None:
    raws = [
        Wire.command("Character.Request", f"s-{n % 30}", f"c-{n}", {"n": n}) for n in range(100)
    ]
    poison_id = Wire.message_id(raws[50])
    poison_session = f"s-{50 % 30}"
    processor = PoisonProcessor(store, {poison_id})
    record(store, processor, raws)

    result = drainer(processor, state).run()

    assert result.fallbacks == 1
    done = db.all("SELECT message_id, attempts, processed_at FROM inbox")
    pending = [r for r in done if r["processed_at"] is None]
    # The poison row and the later rows of its session wait, in order; everything else committed.
    assert {r["message_id"] for r in pending} >= {poison_id}
    later = [Wire.message_id(r) for r in raws[51:] if r.key == poison_session.encode()]
    assert {r["message_id"] for r in pending} == {poison_id, *later}
    attempts = {r["message_id"]: r["attempts"] for r in done}
    assert attempts[poison_id] == 1
    assert all(attempts[m] == 0 for m in later)  # never reached: not counted
    assert all(r["attempts"] == 1 for r in done if r["processed_at"] is not None), (
        "a row that committed was counted more than once"
    )

    # Drained again until the limit: only the poison row is dead-lettered; its session goes on.
    for _ in range(4):
        drainer(processor, state).run()
    row = db.one("SELECT outcome, attempts FROM inbox WHERE message_id = :m", m=poison_id)
    assert row["outcome"] == Status.DEAD_LETTERED.value
    assert db.scalar("SELECT count(*) FROM inbox WHERE processed_at IS NULL") == 0
    assert db.scalar("SELECT count(*) FROM dead_letters") == 1
    assert db.scalar("SELECT count(*) FROM inbox WHERE outcome = 'processed'") == 99


def test_a_row_that_killed_its_worker_is_counted_and_the_rest_go_first(
    store: SqlStore, db: Db, state: RedisState
) -> None:
    """A crash leaves every row of the batch counted once (the count commits before the work):
    the next drain takes them row by row, so the rest commit and only the culprit climbs."""
    processor = PoisonProcessor(store, set())
    raws = commands(sessions=4, per_session=2)
    ids = record(store, processor, raws)
    db.exec("UPDATE inbox SET attempts = 1")  # what a killed batch leaves behind
    db.exec("UPDATE inbox SET attempts = 2 WHERE message_id = :m", m=ids[0])
    killer = PoisonProcessor(store, {ids[0]})
    result = drainer(killer, state).run()
    processed = {o.message_id for o in result.outcomes}
    assert processed == set(ids) - {ids[0], ids[4]}  # ids[4] is the killer session's next row
    assert db.scalar("SELECT attempts FROM inbox WHERE message_id = :m", m=ids[0]) == 3
    assert db.scalar("SELECT attempts FROM inbox WHERE message_id = :m", m=ids[4]) == 1


def test_a_session_held_elsewhere_is_skipped_and_not_waited_for(
    store: SqlStore, db: Db, state: RedisState, engine: Engine
) -> None:
    processor = PoisonProcessor(store, set())
    record(store, processor, commands(sessions=3, per_session=1))
    with engine.connect() as other:
        other.execute(text("SELECT pg_advisory_lock(hashtextextended('s-1', 7274))"))
        other.commit()
        result = drainer(processor, state).run()
        assert {o.session_id for o in result.outcomes} == {"s-0", "s-2"}
        other.execute(text("SELECT pg_advisory_unlock(hashtextextended('s-1', 7274))"))
        other.commit()
    assert db.scalar("SELECT attempts FROM inbox WHERE session_id = 's-1'") == 0
    assert {o.session_id for o in drainer(processor, state).run().outcomes} == {"s-1"}


def test_a_row_committed_while_its_session_is_held_is_drained_by_the_holder(
    store: SqlStore, db: Db, state: RedisState
) -> None:
    """The no-lost-wake-up half that Redis cannot give: a newcomer's drain skips the held
    session, so the holder must see the new row after it lets the session go."""
    arrived = threading.Event()

    class Slow(PoisonProcessor):
        def process_held(self, tx: Any, row: Any) -> Any:
            out = super().process_held(tx, row)
            if not arrived.is_set():
                # Committed by another connection, as the ingester would.
                record(
                    SqlStore(store.engine),
                    self,
                    [Wire.command("Character.Request", "s-0", "late", {})],
                )
                arrived.set()
            return out

    processor = Slow(store, set())
    record(store, processor, commands(sessions=1, per_session=1))
    result = drainer(processor, state).run()
    assert len(result.outcomes) == 2
    assert result.passes == 2
    assert db.scalar("SELECT count(*) FROM inbox WHERE processed_at IS NULL") == 0


def test_a_full_pass_asks_for_another_drain(store: SqlStore, db: Db, state: RedisState) -> None:
    processor = PoisonProcessor(store, set())
    record(store, processor, commands(sessions=10, per_session=1))
    requests: list[str] = []
    result = drainer(processor, state, requests, max_sessions=4, max_rows=100).run()
    assert len(result.outcomes) == 10
    assert result.passes == 3
    assert requests  # a full pass lets another worker process share the work
    assert db.scalar("SELECT count(*) FROM inbox WHERE processed_at IS NULL") == 0


def test_locks_are_released_when_the_batch_dies(store: SqlStore, db: Db, state: RedisState) -> None:
    class Broken(PoisonProcessor):
        def process_row(self, row: Any) -> Any:
            raise KeyboardInterrupt

    processor = Broken(store, {"x"})
    ids = record(store, processor, commands(sessions=2, per_session=1))
    processor.poison = set(ids)
    with pytest.raises(KeyboardInterrupt):
        drainer(processor, state).run()
    assert db.scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
