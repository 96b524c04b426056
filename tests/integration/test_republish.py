"""`outbox republish`: after a broker lost messages it had acknowledged, the rows sent recently
go out again with their ids and in their per-key order."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from orchestrator.adapters.postgres.operator_store import PgOperatorStore
from orchestrator.adapters.postgres.store import SqlStore
from orchestrator.service.operator_queries import Operations
from orchestrator.service.operator_views import OperationRefused
from orchestrator.service.process_message import MessageProcessor
from tests.support.db import Db, Wire


def test_republish_hands_recent_sent_rows_back_in_seq_order(
    store: SqlStore, engine: Engine, db: Db, wire: type[Wire]
) -> None:
    agent = MessageProcessor(store)
    for n in range(3):
        s = f"session-{n}-{wire.new_id()}"
        assert agent.process_message(wire.command("Character.Request", s, wire.new_id())).fact_ids
    rows = db.all("SELECT id FROM event_outbox ORDER BY seq")
    assert len(rows) == 6
    recent = [r["id"] for r in rows[2:]]
    db.exec("UPDATE event_outbox SET status = 'SENT', sent_at = now() - interval '1 hour'")
    db.exec(
        "UPDATE event_outbox SET sent_at = now() - interval '5 seconds' WHERE id = ANY(:ids)",
        ids=recent,
    )

    ops = Operations(PgOperatorStore(engine))
    assert sorted(ops.republish_sent(60)) == sorted(recent)
    pending = db.all(
        "SELECT id, claimed_until, attempts FROM event_outbox WHERE status = 'PENDING' ORDER BY seq"
    )
    assert [p["id"] for p in pending] == recent  # the relay claims them in seq order
    assert {p["claimed_until"] for p in pending} == {None}
    assert db.scalar("SELECT count(*) FROM event_outbox WHERE status = 'SENT'") == 2
    assert ops.republish_sent(60) == []  # nothing SENT in the window any more
    with pytest.raises(OperationRefused, match="positive"):
        ops.republish_sent(0)
