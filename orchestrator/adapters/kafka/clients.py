"""Kafka clients (confluent-kafka only), configured from settings; nothing Tansu-specific."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer

from orchestrator.adapters.kafka.connectivity import ClientWatch, watch_of, watched
from orchestrator.settings import Settings


def producer_config(settings: Settings, *, quiet: bool = False, **extra: Any) -> dict[str, Any]:
    """The relay's producer: every write acknowledged by all in-sync replicas, order per key kept.

    Without idempotence, one request in flight per connection keeps a key's order across
    retries; a retried request may write a record twice, with the same message id, which every
    consumer deduplicates on (the wire contract). Broker-side idempotence
    (`ORCHESTRATOR_RELAY_IDEMPOTENCE=true`) saves those duplicates and allows five requests in
    flight, but it makes delivery depend on the broker's producer-id bookkeeping: a broker that
    lost its state and hands out producer ids again from the start (Tansu's memory storage
    does) acknowledges the records of a producer whose id was reused as duplicates and drops
    them. Off by default, since a duplicate is harmless and a loss is not; turn it on for a
    broker that never reuses producer ids (Apache Kafka keeps them in its metadata log).

    The relay never creates a topic by producing to it (`allow.auto.create.topics=false`): a
    broker that does would make it with its own default partition count, which spreads a key's
    messages over other partitions than the ones `orchestrator topics create` lays out (a
    broker restarted empty, then written to before the topics were recreated). Its rows wait
    until the topic exists.

    Like every client's, its librdkafka lines go through the JSON logger and a broker that does
    not answer gives one line per backoff step (`connectivity.watched`; `quiet`: none, for a
    command that reports the outcome itself).

    Its largest message is explicit (`message.max.bytes` = `KAFKA_MESSAGE_MAX_BYTES`, librdkafka's
    1,000,000 by default): the input cap is checked against it at start-up and every outbox
    message is planned to fit it (`orchestrator.core.dlq`).
    """
    ordering: dict[str, Any] = (
        {"enable.idempotence": True}
        if settings.relay_idempotence
        else {"enable.idempotence": False, "max.in.flight.requests.per.connection": 1}
    )
    return {
        **settings.kafka_common(),
        **watched(settings.kafka_bootstrap_servers, quiet=quiet),
        **ordering,
        "acks": "all",
        "allow.auto.create.topics": False,
        "message.max.bytes": settings.kafka_message_max_bytes,
        "linger.ms": settings.relay_linger_ms,
        "message.timeout.ms": settings.relay_message_timeout_ms,
        "client.id": "genesis-orchestrator-relay",
        **extra,
    }


def consumer_config(
    settings: Settings, group: str | None = None, *, quiet: bool = False, **extra: Any
) -> dict[str, Any]:
    """The ingester's consumer: offsets stored by hand, committed in the background.

    Its first assignment waits for the broker to form the group: Apache Kafka holds a new
    group's first join for `group.initial.rebalance.delay.ms` (3 s by default), Tansu for
    half the session timeout (at least 1 s; 3 s at the default 6000 ms). A broker that allows
    it (Tansu does, Apache Kafka's `group.min.session.timeout.ms` is 6 s) joins sooner with a
    lower `KAFKA_SESSION_TIMEOUT_MS`; `KafkaSource` logs `orchestrator_ingester_ready` once
    the partitions are assigned, and `orchestrator.adapters.kafka.readiness` waits for it.
    """
    return {
        **settings.kafka_common(),
        **watched(settings.kafka_bootstrap_servers, quiet=quiet),
        "group.id": group or settings.consumer_group,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": settings.kafka_heartbeat_interval_ms,
        "fetch.wait.max.ms": settings.kafka_fetch_wait_max_ms,
        "client.id": "genesis-orchestrator-ingester",
        **extra,
    }


class WatchedConsumer(Consumer):
    """A consumer that keeps its `ClientWatch` (`watch`), for saying when it answers again."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.watch: ClientWatch | None = watch_of(conf)
        super().__init__(conf)


def make_producer(settings: Settings, *, quiet: bool = False, **extra: Any) -> Producer:
    return Producer(producer_config(settings, quiet=quiet, **extra))


def make_consumer(
    settings: Settings, group: str | None = None, *, quiet: bool = False, **extra: Any
) -> WatchedConsumer:
    return WatchedConsumer(consumer_config(settings, group, quiet=quiet, **extra))
