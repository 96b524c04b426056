"""Planned rows -> outbox messages (bytes, key, headers), the only way anything reaches Kafka."""

from __future__ import annotations

from typing import Any

import orjson

from orchestrator.core import ids
from orchestrator.core.dlq import (
    DEFAULT_MESSAGE_MAX_BYTES,
    bounded_text,
    context_headers,
    fit_record,
    wire_size,
)
from orchestrator.core.inbound import RawMessage
from orchestrator.core.plan import FactRow, MessageRow
from orchestrator.core.records import DeadLetterRecord, OutboxMessage
from orchestrator.core.trace_context import child
from orchestrator.core.wire import standard_headers

DEAD_LETTER_TYPE = "DeadLetter"


def _encode(headers: list[tuple[str, str]]) -> tuple[tuple[str, bytes | None], ...]:
    return tuple((name, value.encode()) for name, value in headers)


def _produced(
    *,
    message_id: str,
    kind: str,
    message_type: str,
    topic: str,
    key: str,
    envelope: dict[str, Any],
    session_id: str,
    correlation_id: str | None,
    causation_id: str,
    traceparent: str | None,
) -> OutboxMessage:
    """An outbox message we produce: the standard headers, a child span of the input's trace."""
    headers = standard_headers(
        message_id=message_id,
        message_type=message_type,
        correlation_id=correlation_id,
        causation_id=causation_id,
        traceparent=child(traceparent, message_id, causation_id),
    )
    return OutboxMessage(
        id=message_id,
        kind=kind,
        message_type=message_type,
        topic=topic,
        key=key.encode(),
        headers=_encode(headers),
        payload=orjson.dumps(envelope),
        session_id=session_id,
        correlation_id=correlation_id,
    )


def fact_message(fact: FactRow, topic: str, traceparent: str | None) -> OutboxMessage:
    return _produced(
        message_id=fact.event_id,
        kind="fact",
        message_type=fact.event_type,
        topic=topic,
        key=fact.session_id,
        envelope=fact.envelope,
        session_id=fact.session_id,
        correlation_id=fact.correlation_id,
        causation_id=fact.causation_id,
        traceparent=traceparent,
    )


def capability_message(
    msg: MessageRow, traceparent: str | None, topic_prefix: str = ""
) -> OutboxMessage:
    """`topic_prefix` namespaces task topics (e.g. `staging.`) without touching strategies."""
    return _produced(
        message_id=msg.message_id,
        kind="capability",
        message_type=msg.message_type,
        topic=topic_prefix + msg.topic,
        key=msg.key,
        envelope=msg.envelope,
        session_id=msg.session_id,
        correlation_id=msg.correlation_id,
        causation_id=msg.causation_id,
        traceparent=traceparent,
    )


def raw_dead_letter_id(raw: RawMessage) -> str:
    """Same bytes from the same topic -> same dead letter, however often they are redelivered."""
    return ids.derive(ids.content_id(raw.topic, raw.key, raw.value, raw.headers), "dead_letter")


def inbox_dead_letter_id(topic: str, message_id: str, category: str) -> str:
    return ids.derive(f"{topic}/{message_id}", "dead_letter", category)


def dead_letter_message(
    record: DeadLetterRecord, dlq_topic: str, max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES
) -> OutboxMessage:
    """DLQ record: the original key and value (NULL stays NULL); the reason and source in
    headers, the input's trace context, its headers as `orig.*`; at most `max_bytes` on the
    wire, the value cut when it must be (`orchestrator.core.dlq`: the whole stays in the
    database)."""
    raw = record.raw
    own: list[tuple[str, bytes | None]] = [
        ("dlq_category", record.category.encode()),
        ("dlq_reason", bounded_text(record.reason)),
        ("source_topic", raw.topic.encode()),
        ("source_partition", str(raw.partition if raw.partition is not None else "").encode()),
        ("source_offset", str(raw.offset if raw.offset is not None else "").encode()),
        ("message_id", record.id.encode()),
        ("type", DEAD_LETTER_TYPE.encode()),
        *context_headers(raw),
    ]
    key, value, headers = fit_record(raw.key, raw.value, own, raw.headers, max_bytes)
    return OutboxMessage(
        id=record.id,
        kind="dead_letter",
        message_type=DEAD_LETTER_TYPE,
        topic=dlq_topic,
        key=key,
        headers=tuple(headers),
        payload=value,
        session_id=record.session_id,
        correlation_id=None,
    )


def message_size(message: OutboxMessage) -> int:
    """The bytes of an outbox message as the producer counts them (`dlq.wire_size`)."""
    return wire_size(message.key, message.payload, message.headers)
