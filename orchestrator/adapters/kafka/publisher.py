"""The relay's `Publisher` on a confluent-kafka producer: Kafka's errors in the project's terms.

The producer is configured by `orchestrator.adapters.kafka.clients.producer_config` (every
write acknowledged by all in-sync replicas, a key's order kept, no topic ever auto-created).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from orchestrator.core.inbound import Headers
from orchestrator.service.ports import PublishError, PublishFailed, PublishFailure

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
BUFFER_FULL_WAIT_S = 0.05
METADATA_TIMEOUT_S = 1.0


def is_fatal(err: KafkaError) -> bool:
    """The producer is unusable for good (the error itself, or `produce()` refusing with
    _FATAL once such an error happened): it must be replaced."""
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


def is_permanent(err: KafkaError) -> bool:
    """A fatal error is the producer's state, not the message's: never permanent for the row
    (the relay replaces the producer and the row is retried)."""
    return err.code() in PERMANENT_ERRORS and not is_fatal(err)


def publish_error(err: KafkaError) -> PublishError:
    if is_fatal(err):
        failure = PublishFailure.FATAL
    elif is_permanent(err):
        failure = PublishFailure.PERMANENT
    else:
        failure = PublishFailure.TRANSIENT
    return PublishError(str(err), failure, timed_out=err.code() == KafkaError._MSG_TIMED_OUT)


class KafkaPublisher:
    """One producer at a time; `replace` builds the next one with `factory`, when given."""

    def __init__(self, producer: Producer, factory: Callable[[], Producer] | None = None) -> None:
        self.producer = producer
        self.factory = factory

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        on_delivery: Callable[[PublishError | None], None],
    ) -> None:
        def report(err: KafkaError | None, _msg: Any) -> None:
            on_delivery(None if err is None else publish_error(err))

        while True:
            try:
                self.producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=list(headers),
                    on_delivery=report,
                )
                return
            except BufferError:
                # The local queue is full: let deliveries drain, then try again.
                self.producer.poll(BUFFER_FULL_WAIT_S)
            except KafkaException as exc:
                on_delivery(publish_error(exc.args[0]))
                return

    def flush(self, timeout_s: float) -> int:
        try:
            return int(self.producer.flush(timeout_s))
        except KafkaException as exc:  # a fatal error surfaces here too
            raise PublishFailed(publish_error(exc.args[0])) from exc

    def missing_topics(self, topics: Iterable[str]) -> set[str]:
        """The producer never creates a topic and holds a message for a missing one until it
        times out, so the delivery error alone would not say why: one metadata request does."""
        wanted = set(topics)
        if not wanted:
            return set()
        try:
            known: set[str] = set(self.producer.list_topics(timeout=METADATA_TIMEOUT_S).topics)
        except KafkaException:  # the broker is away: the retries say so already
            return set()
        return wanted - known

    def replace(self) -> None:
        if self.factory is not None:
            self.producer = self.factory()
