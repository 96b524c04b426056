"""The relay's producer across a restart of a broker that lost its state.

A broker restarted without its data (Tansu's memory storage here; an Apache Kafka cluster whose
disks were lost) forgets every producer id it handed out and starts numbering them again. A
producer created before the restart and one created after it may then share an id. With
broker-side idempotence the broker takes the older producer's records for duplicates of the
newer one's: it acknowledges them and drops them, and delivery reports say they were written
(the fault suite's `kafka_restart` found 385 such rows in one run); otherwise the older producer
is stuck until its messages time out.

The relay's default producer does not depend on producer ids (`producer_config`): every record
acknowledged after the restart must be on its topic, at the offset its report gave, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from orchestrator.adapters.kafka.clients import producer_config
from orchestrator.adapters.kafka.topics import create_topics
from orchestrator.settings import load_settings
from tests.faults.servers import RestartableKafka
from tests.support.helpers import unique_suffix, wait_for

TOPIC = "relay.restart"
PER_ROUND = 5


@dataclass
class Reports:
    """Delivery reports of every record a producer was asked to write after the restart."""

    acked: dict[str, int] = field(default_factory=dict)  # value -> offset the broker gave
    errors: list[str] = field(default_factory=list)

    def record(self, err: KafkaError | None, value: str, offset: int) -> None:
        if err is None:
            self.acked[value] = offset
        else:
            self.errors.append(f"{value}: {err.name()}")


def _produce(producer: Producer, tag: str, reports: Reports | None) -> None:
    """Write PER_ROUND records of one key and wait for their reports."""
    for i in range(PER_ROUND):
        value = f"{tag}-{i}"

        def on_delivery(err: KafkaError | None, msg: object, value: str = value) -> None:
            if reports is not None:
                reports.record(err, value, msg.offset() if err is None else -1)  # type: ignore[attr-defined]

        try:
            producer.produce(TOPIC, key=b"session-1", value=value.encode(), on_delivery=on_delivery)
        except KafkaException as exc:  # a producer already failed fatally refuses at once
            if reports is not None:
                reports.errors.append(f"{value}: {exc.args[0].name()}")
    producer.flush(30.0)


def _records(bootstrap: str, wanted: int) -> dict[int, str]:
    """Offset -> value of the topic's records, read until `wanted` of them arrived."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"restart-{unique_suffix()}", "log_level": 0}
    )
    seen: dict[int, str] = {}
    try:
        consumer.assign([TopicPartition(TOPIC, 0, 0)])

        def enough() -> bool:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                seen[msg.offset()] = (msg.value() or b"").decode()
            return len(seen) >= wanted

        wait_for(enough, timeout=15.0, message=lambda: f"{wanted} records, saw {seen}")
    finally:
        consumer.close()
    return seen


def _restart_with_producers(idempotence: bool) -> tuple[Reports, dict[int, str]]:
    """Two producers write, the broker restarts empty, a third producer is created, all three
    write again; the reports of the writes after the restart and what the topic holds."""
    with RestartableKafka() as kafka:
        create_topics(kafka.bootstrap, [TOPIC])
        settings = load_settings(
            kafka_bootstrap_servers=kafka.bootstrap,
            relay_message_timeout_ms=5_000,
            relay_idempotence=idempotence,
        )

        def producer() -> Producer:
            return Producer(producer_config(settings, log_level=0))

        before = [producer(), producer()]
        for n, p in enumerate(before):
            _produce(p, f"before{n}", None)
        kafka.kill()
        kafka.start_again()
        create_topics(kafka.bootstrap, [TOPIC])
        reports = Reports()
        _produce(producer(), "new", reports)
        for n, p in enumerate(before):
            _produce(p, f"after{n}", reports)
        stored = _records(kafka.bootstrap, len(reports.acked)) if reports.acked else {}
        return reports, stored


def _lost(reports: Reports, stored: dict[int, str]) -> list[str]:
    return [v for v, offset in reports.acked.items() if stored.get(offset) != v]


def test_default_producer_keeps_every_acknowledged_record_across_a_broker_restart() -> None:
    reports, stored = _restart_with_producers(idempotence=False)
    assert reports.errors == []
    assert len(reports.acked) == 3 * PER_ROUND
    assert _lost(reports, stored) == [], f"acknowledged but not on the topic; topic: {stored}"
    # One key, so one order: every producer's records in the order it wrote them.
    for tag in ("new", "after0", "after1"):
        offsets = [reports.acked[f"{tag}-{i}"] for i in range(PER_ROUND)]
        assert offsets == sorted(offsets), (tag, offsets)
