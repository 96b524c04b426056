"""The demo's own Kafka clients: a producer for the sessions' commands and a reader of every
watched topic that joins no consumer group (so it starts at once and disturbs nobody)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from orchestrator.devtools.demo.errors import DemoError
from orchestrator.devtools.demo.sessions import SessionPlan, command_envelope
from orchestrator.devtools.demo.story import Event, Story
from orchestrator.devtools.demo.topics import DemoTopics

if TYPE_CHECKING:
    from confluent_kafka._types import HeadersType  # only the stubs name this type

DELIVERY_TIMEOUT_S = 15


class StoryClients:
    def __init__(self, conf: Mapping[str, Any], topics: DemoTopics, run_id: str) -> None:
        self.topics = topics
        self.reader: Consumer | None = Consumer(
            {
                **conf,
                "group.id": f"orchestrator-demo-reader-{run_id}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "log_level": 3,
            }
        )
        metadata = self.reader.list_topics(timeout=10)
        assignment: list[Any] = []
        for name in topics.watched:
            found = metadata.topics.get(name)
            partitions = sorted(found.partitions) if found is not None and found.partitions else [0]
            assignment.extend(TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions)
        self.reader.assign(assignment)
        self.producer: Producer | None = Producer({**conf, "linger.ms": 1, "log_level": 3})

    def submit(self, plans: Sequence[SessionPlan]) -> None:
        """Every session's commands, on the domain topic, keyed by session."""
        assert self.producer is not None
        created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for plan in plans:
            for command_type, payload in plan.commands():
                envelope = command_envelope(plan.session_id, command_type, payload, created_at)
                self.producer.produce(
                    self.topics.domain, value=orjson.dumps(envelope), key=plan.session_id.encode()
                )
        if self.producer.flush(DELIVERY_TIMEOUT_S) != 0:
            raise DemoError(
                f"could not deliver the commands to Kafka within {DELIVERY_TIMEOUT_S} s"
            )

    def read(self, story: Story) -> list[Event]:
        """What arrived since the last read, recorded in the story; the events worth a line."""
        assert self.reader is not None
        messages = [m for m in self.reader.consume(500, 0.05) if m.error() is None]
        # Messages from several partitions arrive in fetch order: show them in produce order.
        # Within one millisecond, a fact before the task it goes with (one transaction).
        rank = {topic: index for index, topic in enumerate(self.topics.watched)}
        messages.sort(key=lambda m: (m.timestamp()[1], rank.get(m.topic() or "", len(rank))))
        events: list[Event] = []
        for message in messages:
            ts_type, ts = message.timestamp()
            event = story.record(
                message.topic() or "",
                _as_bytes(message.key()),
                _as_bytes(message.value()),
                _headers(message.headers()),
                ts if ts_type else None,
            )
            if event is not None:
                events.append(event)
        return events

    def close_reader(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.close()

    def drop_producer(self) -> None:
        """Flush briefly and drop the last reference: librdkafka closes its connections now,
        so an embedded broker need not wait for this client when it stops."""
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.flush(1)


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _as_text(value: str | bytes | None) -> str:
    return value if isinstance(value, str) else (value or b"").decode("utf-8", "replace")


def _headers(raw: HeadersType | None) -> dict[str, str]:
    pairs = raw.items() if isinstance(raw, dict) else raw or []
    return {str(k): _as_text(v) for k, v in pairs}
