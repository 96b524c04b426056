"""Raw SQL helpers (`Db`) and wire-contract message builders (`Wire`) for tests on a real
PostgreSQL database, with the topic names and fixed clock they use."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine, text

from orchestrator.adapters.postgres.codec import decode_headers
from orchestrator.core.inbound import RawMessage

DOMAIN_TOPIC = "genesis.domain.events"
CAPABILITY_TOPIC = "genesis.capability.events"
DLQ_TOPIC = "genesis.orchestrator.dlq"
TABLES = ("inbox", "domain_events", "event_outbox", "async_tasks", "dead_letters")
EMPTY_COUNTS = dict.fromkeys(TABLES, 0)
FIXED_NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
FIXED_NOW_ISO = "2026-11-29T12:00:00.000Z"


class Db:
    """Raw SQL against the test database, for arranging and asserting."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def all(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.begin() as conn:
            return [
                {k: bytes(v) if isinstance(v, memoryview) else v for k, v in r._mapping.items()}
                for r in conn.execute(text(sql), params)
            ]

    def one(self, sql: str, **params: Any) -> dict[str, Any]:
        rows = self.all(sql, **params)
        assert len(rows) == 1, rows
        return rows[0]

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.begin() as conn:
            return conn.execute(text(sql), params).scalar()

    def exec(self, sql: str, **params: Any) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(text(sql), params).rowcount)

    def counts(self) -> dict[str, int]:
        with self.engine.begin() as conn:
            return {
                t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in TABLES
            }

    def facts(self) -> list[dict[str, Any]]:
        """Facts in the order their causing inbox rows arrived (timeouts, caused by a task,
        after them by creation)."""
        return self.all(
            "SELECT d.event_id, d.event_type, d.aggregate_type, d.session_id, d.correlation_id,"
            " d.causation_id, d.payload FROM domain_events d"
            " LEFT JOIN inbox i ON i.message_id = d.causation_id"
            " ORDER BY i.id NULLS LAST, d.created_at, d.event_id"
        )

    def outbox(self) -> list[dict[str, Any]]:
        rows = self.all(
            "SELECT id, seq, kind, topic, message_type, key, headers, payload, session_id,"
            " correlation_id, status, attempts, next_attempt_at, claimed_until, last_error,"
            " sent_at, created_at FROM event_outbox ORDER BY seq"
        )
        for r in rows:
            r["key"] = bytes(r["key"]) if r["key"] is not None else None
            r["payload"] = bytes(r["payload"])
            r["headers"] = [(n, v) for n, v in decode_headers(r["headers"])]
        return rows

    def tasks(self) -> list[dict[str, Any]]:
        return self.all(
            "SELECT id, task_type, correlation_id, session_id, causation_id, status, input,"
            " result, error, version, started_at, completed_at, deadline_at"
            " FROM async_tasks ORDER BY created_at, id"
        )

    def inbox(self) -> list[dict[str, Any]]:
        return self.all(
            "SELECT id, topic, message_id, kind, message_type, session_id, correlation_id,"
            " attempts, outcome, last_error, processed_at IS NOT NULL AS processed,"
            " triggered_at, received_at FROM inbox ORDER BY id"
        )


class Wire:
    """Wire-contract messages (architecture.md), as the bytes a Kafka consumer would see."""

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

    @staticmethod
    def command(
        command_type: str,
        session_id: str,
        correlation_id: str,
        user_input: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        user_id: str | None = "u-1",
        created_at: str | None = "2026-11-29T11:59:00Z",
        offset: int | None = None,
    ) -> RawMessage:
        payload: dict[str, Any] = {"command_type": command_type, "payload": user_input or {}}
        if user_id is not None:
            payload["user_id"] = user_id
        doc: dict[str, Any] = {
            "event_id": event_id or Wire.new_id(),
            "event_type": "Genesis.Session.Command.Received",
            "aggregate_type": "GenesisSession",
            "aggregate_id": session_id,
            "payload": payload,
            "metadata": {"correlation_id": correlation_id, "causation_id": None},
        }
        if created_at is not None:
            doc["created_at"] = created_at
        return RawMessage(DOMAIN_TOPIC, orjson.dumps(doc), session_id.encode(), (), 0, offset)

    @staticmethod
    def capability(
        msg_type: str,
        session_id: str,
        correlation_id: str | None,
        *,
        msg_id: str | None = None,
        offset: int | None = None,
        **fields: Any,
    ) -> RawMessage:
        data: dict[str, Any] = {"session_id": session_id}
        if correlation_id is not None:
            data["correlation_id"] = correlation_id
        data.update(fields)
        doc = {
            "id": msg_id or Wire.new_id(),
            "ts": "2026-11-29T12:00:01Z",
            "type": msg_type,
            "data": data,
        }
        return RawMessage(CAPABILITY_TOPIC, orjson.dumps(doc), session_id.encode(), (), 0, offset)

    @staticmethod
    def message_id(raw: RawMessage) -> str:
        assert raw.value is not None
        doc = orjson.loads(raw.value)
        return str(doc.get("event_id") or doc["id"])
