"""A session's Redis lock lost in the middle of a drain (expired, or Redis forgot it), with a
second drain of the same session started meanwhile, on a real Redis and PostgreSQL.

The Redis lock only saves contention: each row's transaction takes the session's PostgreSQL
advisory lock and re-checks the row, so with two drains running at once every row is still
processed once and in arrival order, and the drain that lost its lock says so
(`orchestrator_session_lock_lost`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import structlog

from orchestrator.adapters.postgres.store import SqlStore
from orchestrator.adapters.redis.state import RedisState, make_redis
from orchestrator.core.records import Outcome, Status
from orchestrator.service.drain import DrainResult, SessionWorker
from orchestrator.service.process_message import MessageProcessor, ProcessorConfig
from tests.support.db import FIXED_NOW, Db, Wire
from tests.support.helpers import wait_for

ROWS = 8
LOST_AT = 2  # the holder loses its lock while processing this row (0-based)
# Some transaction of this database waits for a lock (the session's advisory lock, which the
# holder's row transaction has).
WAITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    " AND datname = current_database()"
)


@pytest.fixture
def state(redis_url: str, redis_prefix: str) -> Iterator[RedisState]:
    client = make_redis(redis_url)
    try:
        yield RedisState(client, redis_prefix, lock_ttl_s=30.0, done_ttl_s=60)
    finally:
        client.close()


def record_commands(store: SqlStore, agent: MessageProcessor, session: str) -> list[str]:
    """`ROWS` commands of one session in the inbox, unprocessed; their ids in arrival order."""
    from orchestrator.core.records import NewInbox

    ids = []
    for i in range(ROWS):
        raw = Wire.command("Character.Request", session, Wire.new_id(), {"name": f"n{i}"})
        c = agent.classify(raw)
        row = NewInbox(
            raw, c.message_id, c.kind.value, c.message_type, session, c.correlation_id, None
        )
        with store.transaction() as tx:
            tx.insert_inbox([row], triggered=True)
        ids.append(c.message_id)
    return ids


def test_a_lock_lost_mid_drain_keeps_order_and_processes_each_row_once(
    store: SqlStore, db: Db, state: RedisState, redis_url: str
) -> None:
    agent = MessageProcessor(store, ProcessorConfig(), clock=lambda: FIXED_NOW)
    session = "session-" + Wire.new_id()
    arrival = record_commands(store, agent, session)
    lock_key = state.session_lock(session).lock.name
    raw_redis = redis.Redis.from_url(redis_url)

    # The order rows are processed in: appended while the row's transaction holds the
    # session's advisory lock, so the next row cannot be appended before this one commits.
    processed_order: list[str] = []
    real = agent._process_locked
    second: dict[str, Any] = {}

    def start_second_drain() -> None:
        def run() -> None:
            try:
                second["result"] = SessionWorker(agent, state, lambda: None).drain(session)
            except BaseException as exc:  # reported by the assertions below
                second["error"] = exc

        second["thread"] = threading.Thread(target=run, name="second-drain")
        second["thread"].start()

    def process_locked(tx: Any, row: Any) -> Outcome:
        processed_order.append(row.message_id)
        if len(processed_order) == LOST_AT + 1 and "thread" not in second:
            # The holder's lock expires now; a second trigger's drain takes the free lock and
            # runs beside the holder, which goes on with the rows after this one.
            raw_redis.delete(lock_key)
            start_second_drain()
            wait_for(
                lambda: raw_redis.exists(lock_key) or "error" in second,
                timeout=10,
                message="the second drain to take the session's Redis lock",
            )
            # ... and to wait for the lock this row's transaction holds (today), or to go
            # past this row without waiting (what a broken advisory lock would let it do).
            wait_for(
                lambda: (
                    db.scalar(WAITING) > 0
                    or len(processed_order) > LOST_AT + 1  # it did not wait (a broken lock)
                    or "error" in second
                ),
                timeout=10,
                message="the second drain to wait for the holder's row transaction",
            )
        return real(tx, row)

    agent._process_locked = process_locked  # type: ignore[method-assign]
    try:
        with structlog.testing.capture_logs() as logs:
            first: DrainResult = SessionWorker(agent, state, lambda: None).drain(session)
            second["thread"].join(30)
    finally:
        raw_redis.close()
    assert not second["thread"].is_alive(), "the second drain did not finish"
    assert "error" not in second, second.get("error")

    outcomes = [*first.outcomes, *second["result"].outcomes]
    done = Counter(o.message_id for o in outcomes if o.status is Status.PROCESSED)
    assert done == Counter(arrival), "a row processed twice, or not at all"
    assert processed_order == arrival, "rows processed out of arrival order"
    assert second["result"].outcomes, "the second drain never ran beside the first"
    assert [e["session_id"] for e in logs if e["event"] == "orchestrator_session_lock_lost"] == [
        session
    ]
    assert (
        db.scalar(
            "SELECT count(*) FROM inbox WHERE session_id = :s AND processed_at IS NULL", s=session
        )
        == 0
    )
    requested = db.all(
        "SELECT causation_id, count(*) AS n FROM domain_events WHERE session_id = :s"
        " GROUP BY causation_id",
        s=session,
    )
    assert sorted(r["causation_id"] for r in requested) == sorted(arrival)
    assert {r["n"] for r in requested} == {1}, "a command's fact written twice"
