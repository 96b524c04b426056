"""The ingester's `MessageSource` on a confluent-kafka consumer.

Offsets are stored by hand (`enable.auto.offset.store=false`, see `consumer_config`) only for
messages the inbox holds, and committed in the background, before a partition is revoked and on
close. A fatal consumer error ends the loop; any other one is logged and read past.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from orchestrator.core.inbound import RawMessage
from orchestrator.observability.logs import get_logger
from orchestrator.service.ports import Partition

log = get_logger("orchestrator.ingester")


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


class KafkaSource:
    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def subscribe(
        self, topics: Sequence[str], on_revoke: Callable[[list[Partition]], None]
    ) -> None:
        def revoked(c: Consumer, partitions: list[TopicPartition]) -> None:
            self._commit("revoke")
            on_revoke([(p.topic, p.partition) for p in partitions])

        self.consumer.subscribe(list(topics), on_revoke=revoked)

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
                log.warning("orchestrator_consumer_error", error=str(err))
        return good

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
