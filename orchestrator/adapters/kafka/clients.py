"""Kafka clients (confluent-kafka only), configured from settings; nothing Tansu-specific."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import admin as kafka_admin

from orchestrator.settings import Settings

# Errors after which publishing the same message again cannot succeed: the row is FAILED and its
# key moves on. Everything else (timeouts, transport, leader changes) is retried with backoff.
# A missing topic is not among them: it is the cluster's state, not the message's (topics not
# created yet, or a broker that lost them), so its rows wait, in key order, until it exists.
PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_EXCEPTION,
    }
)


def is_fatal(err: KafkaError) -> bool:
    """The producer is unusable for good (the error itself, or `produce()` refusing with
    _FATAL once such an error happened): it must be replaced."""
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


def is_permanent(err: KafkaError) -> bool:
    """A fatal error is the producer's state, not the message's: never permanent for the row
    (the relay replaces the producer and the row is retried)."""
    return err.code() in PERMANENT_ERRORS and not is_fatal(err)


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


def create_topics(
    settings: Settings, names: Iterable[str], partitions: int = 1, timeout: float = 15.0
) -> list[str]:
    """Create the topics that do not exist yet; return the ones created. Idempotent."""
    admin = kafka_admin.AdminClient(settings.kafka_common())
    wanted = sorted(set(names))
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [n for n in wanted if n not in existing]
    if missing:
        futures = admin.create_topics(
            [
                kafka_admin.NewTopic(n, num_partitions=partitions, replication_factor=1)  # type: ignore[attr-defined]
                for n in missing
            ],
            operation_timeout=timeout,
        )
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            del name
    deadline = time.monotonic() + timeout
    while missing and time.monotonic() < deadline:
        if set(missing) <= set(admin.list_topics(timeout=timeout).topics):
            break
        time.sleep(0.05)
    return missing
