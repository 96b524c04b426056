"""The ingester's `MessageSource` on a confluent-kafka consumer.

Offsets are stored by hand (`enable.auto.offset.store=false`, see `consumer_config`) only for
messages the inbox holds, and committed in the background, before a partition is revoked and on
close. A fatal consumer error ends the loop; any other one is logged (once per code and backoff
step) and read past.

Before subscribing, `wait_until_reachable` asks for the cluster's metadata until it answers or
the bound passes (`KafkaUnreachable`, one line naming the brokers). Once the group gave it its
partitions the source logs `orchestrator_ingester_ready` with the time since subscribing: the
moment input is read, which `orchestrator.adapters.kafka.readiness` lets a caller wait for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from orchestrator.adapters.kafka.connectivity import (
    ClientWatch,
    missing_topics,
    wait_for_metadata,
)
from orchestrator.core.inbound import RawMessage
from orchestrator.observability.logs import get_logger
from orchestrator.service.ports import Partition

log = get_logger("orchestrator.ingester")
ERROR_LINE_EVERY_S = 30.0


def raw_from_kafka(msg: Any) -> RawMessage:
    headers = tuple((str(k), v) for k, v in (msg.headers() or []))
    return RawMessage(msg.topic(), msg.value(), msg.key(), headers, msg.partition(), msg.offset())


def next_offsets(messages: Sequence[RawMessage]) -> list[TopicPartition]:
    """Per partition, the offset after the last message: what the group resumes from."""
    top: dict[tuple[str, int], int] = {}
    for m in messages:
        if m.partition is None or m.offset is None:
            raise ValueError(f"a message of {m.topic} without its partition and offset")
        k = (m.topic, m.partition)
        top[k] = max(top.get(k, -1), m.offset)
    return [TopicPartition(t, p, o + 1) for (t, p), o in top.items()]


READY_EVENT = "orchestrator_ingester_ready"


class KafkaSource:
    def __init__(self, consumer: Consumer, bootstrap: str = "") -> None:
        self.consumer = consumer
        self.watch: ClientWatch | None = getattr(consumer, "watch", None)
        self.bootstrap = bootstrap or (self.watch.bootstrap if self.watch else "?")
        self.subscribed_at: float | None = None
        self.ready_after_s: float | None = None  # subscribe -> first assignment
        self._errors: dict[int, float] = {}

    def wait_until_reachable(
        self, timeout_s: float, stop: threading.Event, topics: Sequence[str] = ()
    ) -> bool:
        """True once the cluster answered; False when `stop` was set first. Raises
        `KafkaUnreachable` after `timeout_s`. A topic of `topics` the cluster lacks gets a
        warning: the group waits for it (`orchestrator topics create` makes it)."""
        metadata = wait_for_metadata(self.consumer, self.watch, self.bootstrap, timeout_s, stop)
        if metadata is None:
            return False
        missing = missing_topics(metadata, list(topics))
        if missing:
            log.warning(
                "orchestrator_topics_missing",
                topics=missing,
                hint="run `orchestrator topics create`",
            )
        return True

    def subscribe(
        self, topics: Sequence[str], on_revoke: Callable[[list[Partition]], None]
    ) -> None:
        def revoked(c: Consumer, partitions: list[TopicPartition]) -> None:
            self._commit("revoke")
            on_revoke([(p.topic, p.partition) for p in partitions])

        def assigned(c: Consumer, partitions: list[TopicPartition]) -> None:
            if self.watch is not None:
                self.watch.reachable()
            if self.ready_after_s is None and self.subscribed_at is not None:
                self.ready_after_s = time.monotonic() - self.subscribed_at
                log.info(
                    READY_EVENT,
                    partitions=sorted(f"{p.topic}[{p.partition}]" for p in partitions),
                    after_s=round(self.ready_after_s, 3),
                )

        self.subscribed_at = time.monotonic()
        self.consumer.subscribe(list(topics), on_assign=assigned, on_revoke=revoked)

    def next_batch(self, max_messages: int, timeout_s: float) -> list[RawMessage]:
        """Block for the first message only, then take what is already fetched: `consume(n, t)`
        would wait for n messages or the whole timeout, adding its timeout to every quiet
        message."""
        first = self.consumer.poll(timeout_s)
        if first is None:
            return []
        msgs = [first, *self.consumer.consume(max_messages - 1, 0)] if max_messages > 1 else [first]
        good = []
        for m in msgs:
            err = m.error()
            if err is None:
                good.append(raw_from_kafka(m))
            elif err.code() != KafkaError._PARTITION_EOF:
                if err.fatal():
                    raise KafkaException(err)
                self._consumer_error(err)
        if good and self.watch is not None:
            self.watch.reachable()
        return good

    def _consumer_error(self, err: KafkaError) -> None:
        """One line per error code and `ERROR_LINE_EVERY_S` (a missing topic is reported on
        every metadata refresh)."""
        now = time.monotonic()
        if now - self._errors.get(err.code(), -ERROR_LINE_EVERY_S) >= ERROR_LINE_EVERY_S:
            self._errors[err.code()] = now
            log.warning("orchestrator_consumer_error", error=str(err))

    def idle(self, timeout_s: float) -> None:
        self.consumer.poll(timeout_s)

    def pause(self) -> None:
        self.consumer.pause(self.consumer.assignment())

    def resume(self) -> None:
        self.consumer.resume(self.consumer.assignment())

    def store_offsets(self, messages: Sequence[RawMessage]) -> None:
        self.consumer.store_offsets(offsets=next_offsets(messages))

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """The fetched messages after `offset` are dropped by the client. A partition revoked
        meanwhile is someone else's now."""
        try:
            self.consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            log.warning("orchestrator_consumer_gap_seek_failed", topic=topic, error=str(exc))

    def close(self) -> None:
        self._commit("shutdown")
        self.consumer.close()

    def _commit(self, why: str) -> None:
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("orchestrator_offset_commit_failed", reason=why, error=str(exc))
