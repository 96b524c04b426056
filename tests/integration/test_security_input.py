"""Security on the real PostgreSQL: the payload size cap holds and is a dead letter."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import orjson
import pytest
from sqlalchemy import Engine, text

from orchestrator.adapters.postgres.engine import make_engine
from orchestrator.adapters.postgres.store import SqlStore
from orchestrator.core.errors import Category
from orchestrator.core.inbound import RawMessage
from orchestrator.core.records import Status
from orchestrator.service.process_message import MessageProcessor, ProcessorConfig

# -- the payload size cap ---------------------------------------------------------------------


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    try:
        yield eng
    finally:
        eng.dispose()


def test_payload_over_the_cap_is_a_too_large_dead_letter(engine: Engine) -> None:
    cap = 2048
    agent = MessageProcessor(SqlStore(engine), ProcessorConfig(max_message_bytes=cap))
    session = str(uuid.uuid4())
    doc = {
        "event_id": str(uuid.uuid4()),
        "event_type": "Genesis.Session.Command.Received",
        "aggregate_type": "GenesisSession",
        "aggregate_id": session,
        "payload": {"command_type": "Character.Request", "payload": {"name": ""}},
        "metadata": {"correlation_id": str(uuid.uuid4())},
    }
    fits = orjson.dumps(doc)
    doc["payload"]["payload"]["name"] = "x" * (cap - len(fits))
    at_cap = orjson.dumps(doc)
    assert len(at_cap) == cap
    assert agent.process_message(RawMessage("genesis.domain.events", at_cap, b"k")).status is (
        Status.PROCESSED
    )
    doc["event_id"] = str(uuid.uuid4())
    doc["payload"]["payload"]["name"] = "x" * (cap - len(fits) + 1)
    over = RawMessage("genesis.domain.events", orjson.dumps(doc), b"k", (), 0, 9)
    outcome = agent.process_message(over)
    assert (outcome.status, outcome.category) == (Status.DEAD_LETTERED, Category.TOO_LARGE.value)
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT category, value FROM dead_letters WHERE id = :id"),
            {"id": outcome.dead_letter_id},
        ).one()
        dlq = conn.execute(
            text("SELECT topic, payload FROM event_outbox WHERE id = :id"),
            {"id": outcome.dead_letter_id},
        ).one()
        inbox = conn.execute(text("SELECT count(*) FROM inbox")).scalar_one()
    assert row.category == "too_large" and bytes(row.value) == over.value
    assert dlq.topic == "genesis.orchestrator.dlq" and bytes(dlq.payload) == over.value
    assert inbox == 1  # only the message at the cap
