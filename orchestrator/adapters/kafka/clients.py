"""Kafka clients (confluent-kafka only), configured from settings; nothing Tansu-specific."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer

from orchestrator.settings import Settings


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
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
    """
    ordering: dict[str, Any] = (
        {"enable.idempotence": True}
        if settings.relay_idempotence
        else {"enable.idempotence": False, "max.in.flight.requests.per.connection": 1}
    )
    return {
        **settings.kafka_common(),
        **ordering,
        "acks": "all",
        "allow.auto.create.topics": False,
        "linger.ms": settings.relay_linger_ms,
        "message.timeout.ms": settings.relay_message_timeout_ms,
        "client.id": "genesis-orchestrator-relay",
        **extra,
    }


def consumer_config(settings: Settings, group: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        **settings.kafka_common(),
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


def make_producer(settings: Settings, **extra: Any) -> Producer:
    return Producer(producer_config(settings, **extra))


def make_consumer(settings: Settings, group: str | None = None, **extra: Any) -> Consumer:
    return Consumer(consumer_config(settings, group, **extra))
