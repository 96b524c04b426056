"""The hot path's adapters turn driver behaviour into the ports' terms: Kafka errors into
fatal / permanent / transient, Redis being away into `TransientError`, a consumer's messages and
errors into `RawMessage`s, the backlog read into gauges. Driver objects are stand-ins here."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client.core import GaugeMetricFamily

from orchestrator.adapters.kafka.ingest_source import KafkaSource, next_offsets
from orchestrator.adapters.kafka.publisher import KafkaPublisher, publish_error
from orchestrator.adapters.redis.state import RedisState, ping
from orchestrator.core.errors import TransientError
from orchestrator.core.inbound import RawMessage
from orchestrator.observability.metrics import BacklogCollector
from orchestrator.service.ports import PublishError, PublishFailed, PublishFailure


@pytest.mark.parametrize(
    ("error", "failure", "timed_out"),
    [
        (KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), PublishFailure.PERMANENT, False),
        (KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), PublishFailure.PERMANENT, False),
        (KafkaError(KafkaError._MSG_TIMED_OUT), PublishFailure.TRANSIENT, True),
        (KafkaError(KafkaError._TRANSPORT), PublishFailure.TRANSIENT, False),
        # A missing topic is the cluster's state, not the message's: its rows wait.
        (KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), PublishFailure.TRANSIENT, False),
        # Fatal is the producer's state: never permanent for the row, even with such a code.
        (KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, fatal=True), PublishFailure.FATAL, False),
        (KafkaError(KafkaError._FATAL), PublishFailure.FATAL, False),
    ],
)
def test_kafka_errors_in_the_publishers_terms(
    error: KafkaError, failure: PublishFailure, timed_out: bool
) -> None:
    assert publish_error(error) == PublishError(str(error), failure, timed_out)


@dataclass
class StubProducer:
    """Refuses with BufferError `full` times, then with `refuse` if set, else accepts."""

    full: int = 0
    refuse: KafkaError | None = None
    flush_raises: KafkaError | None = None
    topics: dict[str, object] | None = None
    polls: list[float] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)

    def produce(self, topic: str, **kwargs: Any) -> None:
        if self.full:
            self.full -= 1
            raise BufferError("Local: Queue full")
        if self.refuse is not None:
            raise KafkaException(self.refuse)
        self.accepted.append({"topic": topic, **kwargs})

    def poll(self, timeout: float) -> int:
        self.polls.append(timeout)
        return 0

    def flush(self, timeout: float) -> int:
        if self.flush_raises is not None:
            raise KafkaException(self.flush_raises)
        return 0

    def list_topics(self, timeout: float) -> Any:
        if self.topics is None:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return type("Metadata", (), {"topics": self.topics})()


def test_a_full_local_queue_is_waited_out() -> None:
    stub = StubProducer(full=2)
    reports: list[PublishError | None] = []
    KafkaPublisher(stub).produce("t", b"v", b"k", (("h", b"1"),), reports.append)  # type: ignore[arg-type]
    assert len(stub.polls) == 2
    [message] = stub.accepted
    assert (message["topic"], message["value"], message["key"]) == ("t", b"v", b"k")
    assert message["headers"] == [("h", b"1")]
    assert reports == []  # reported later, by the delivery callback


def test_a_message_refused_at_once_is_reported_at_once() -> None:
    stub = StubProducer(refuse=KafkaError(KafkaError._FATAL))
    reports: list[PublishError | None] = []
    KafkaPublisher(stub).produce("t", b"v", None, (), reports.append)  # type: ignore[arg-type]
    assert [r.failure for r in reports if r is not None] == [PublishFailure.FATAL]


def test_a_failing_flush_raises_publish_failed() -> None:
    stub = StubProducer(flush_raises=KafkaError(KafkaError._FATAL))
    with pytest.raises(PublishFailed) as caught:
        KafkaPublisher(stub).flush(1.0)  # type: ignore[arg-type]
    assert caught.value.error.failure is PublishFailure.FATAL


def test_missing_topics_are_those_the_metadata_lacks() -> None:
    publisher = KafkaPublisher(StubProducer(topics={"a": object()}))  # type: ignore[arg-type]
    assert publisher.missing_topics({"a", "b"}) == {"b"}
    away = KafkaPublisher(StubProducer(topics=None))  # type: ignore[arg-type]
    assert away.missing_topics({"b"}) == set()  # the broker cannot say


def test_replace_builds_a_new_producer_only_with_a_factory() -> None:
    first, second = StubProducer(), StubProducer()
    publisher = KafkaPublisher(first, factory=lambda: second)  # type: ignore[arg-type, return-value]
    publisher.replace()
    assert publisher.producer is second
    alone = KafkaPublisher(first)  # type: ignore[arg-type]
    alone.replace()
    assert alone.producer is first


# -- Redis away -------------------------------------------------------------------------------


@pytest.fixture
def unreachable() -> Iterator[RedisState]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        yield RedisState(client, "test", lock_ttl_s=5.0, done_ttl_s=60)


def test_redis_being_away_is_a_transient_error(unreachable: RedisState) -> None:
    calls = {
        "acquire": lambda: unreachable.session_lock("s").acquire(),
        "set_wake": lambda: unreachable.set_wake("s"),
        "take_wake": lambda: unreachable.take_wake("s"),
        "has_wake": lambda: unreachable.has_wake("s"),
        "after_commit": lambda: unreachable.after_commit([("t", "m")], relay=True),
        "done_among": lambda: unreachable.done_among([("t", "m")]),
        "request_relay": unreachable.request_relay,
        "clear_dirty": unreachable.clear_dirty,
        "finish_relay_run": unreachable.finish_relay_run,
        "queue_length": lambda: unreachable.queue_length(["q"]),
    }
    for call in calls.values():
        with pytest.raises(TransientError, match="redis unavailable"):
            call()
    assert ping(unreachable.r) is False


# -- the consumer -----------------------------------------------------------------------------


@dataclass
class StubMessage:
    topic_: str = "t"
    partition_: int = 0
    offset_: int = 0
    err: KafkaError | None = None

    def error(self) -> KafkaError | None:
        return self.err

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def value(self) -> bytes:
        return b"{}"

    def key(self) -> bytes:
        return b"k"

    def headers(self) -> list[tuple[str, bytes]]:
        return [("type", b"X")]


@dataclass
class StubConsumer:
    batch: list[StubMessage]
    stored: list[TopicPartition] = field(default_factory=list)

    def poll(self, timeout: float) -> StubMessage | None:
        return self.batch.pop(0) if self.batch else None

    def consume(self, n: int, timeout: float) -> list[StubMessage]:
        taken, self.batch = self.batch[:n], self.batch[n:]
        return taken

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        self.stored.extend(offsets)


def test_a_batch_reads_past_errors_and_end_of_partition() -> None:
    consumer = StubConsumer(
        [
            StubMessage(offset_=4),
            StubMessage(err=KafkaError(KafkaError._PARTITION_EOF)),
            StubMessage(err=KafkaError(KafkaError._TRANSPORT)),
            StubMessage(offset_=5),
        ]
    )
    batch = KafkaSource(consumer).next_batch(10, 0.01)  # type: ignore[arg-type]
    assert batch == [
        RawMessage("t", b"{}", b"k", (("type", b"X"),), 0, 4),
        RawMessage("t", b"{}", b"k", (("type", b"X"),), 0, 5),
    ]


def test_a_fatal_consumer_error_ends_the_loop() -> None:
    consumer = StubConsumer([StubMessage(err=KafkaError(KafkaError._FATAL, fatal=True))])
    with pytest.raises(KafkaException):
        KafkaSource(consumer).next_batch(10, 0.01)  # type: ignore[arg-type]


def test_offsets_stored_are_each_partitions_next_one() -> None:
    raws = [
        RawMessage("a", b"", partition=0, offset=7),
        RawMessage("a", b"", partition=1, offset=3),
        RawMessage("a", b"", partition=0, offset=9),
    ]
    got = {(tp.topic, tp.partition, tp.offset) for tp in next_offsets(raws)}
    assert got == {("a", 0, 10), ("a", 1, 4)}
    with pytest.raises(ValueError, match="without its partition"):
        next_offsets([RawMessage("a", b"")])


# -- backlog gauges ---------------------------------------------------------------------------


def test_backlog_gauges_carry_the_values_read() -> None:
    values = (3.0, 1.5, 1.0, 7.0, 0.25)
    families = list(BacklogCollector(lambda: values).collect())
    assert all(isinstance(f, GaugeMetricFamily) for f in families)
    assert [(f.name, f.samples[0].value) for f in families] == [
        ("orchestrator_outbox_pending", 3.0),
        ("orchestrator_outbox_lag_seconds", 1.5),
        ("orchestrator_outbox_failed", 1.0),
        ("orchestrator_inbox_backlog", 7.0),
        ("orchestrator_inbox_oldest_seconds", 0.25),
    ]


def test_a_scrape_while_the_database_is_away_lacks_the_backlog() -> None:
    def away() -> tuple[float, ...]:
        raise TransientError("database unavailable: gone")

    assert list(BacklogCollector(away).collect()) == []
