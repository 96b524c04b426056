"""Topic creation: the one place that lays topics out on a cluster.

Used by `orchestrator topics create`, the embedded broker's callers, the benchmarks and the
tests, so every topic is made with the same partition count and replication, and a caller never
races a topic that is created but not yet in the metadata it reads next. A cluster that does not
answer is asked again, quietly, in short tries (Ctrl-C ends the wait at once) until
`connect_timeout` passes: then `KafkaUnreachable` names the bootstrap servers, once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import admin as kafka_admin

from orchestrator.adapters.kafka.connectivity import (
    KafkaUnreachable,
    wait_for_metadata,
    watch_of,
    watched,
)
from orchestrator.core.errors import TransientError

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = ["KafkaUnreachable", "TopicsNotReady", "create_topics"]

_POLL_INTERVAL = 0.01


class TopicsNotReady(TransientError):
    """Topics were created but did not appear in the cluster's metadata in time."""


def _admin_config(cluster: Settings | str) -> dict[str, Any]:
    """The settings' client properties (security included), or a bare bootstrap address such
    as an embedded broker's, with librdkafka's own log kept to errors; quiet either way (the
    caller reports the outcome)."""
    if isinstance(cluster, str):
        return {"bootstrap.servers": cluster, "log_level": 3, **watched(cluster, quiet=True)}
    return {**cluster.kafka_common(), **watched(cluster.kafka_bootstrap_servers, quiet=True)}


def create_topics(
    cluster: Settings | str,
    names: Iterable[str],
    partitions: int = 1,
    *,
    timeout: float = 15.0,
    replication_factor: int = 1,
    connect_timeout: float | None = None,
) -> list[str]:
    """Create the topics that do not exist yet and wait until all are in the metadata; return
    the ones created here, sorted. Idempotent: an existing topic, or one another client creates
    at the same time, is fine and keeps its own partition count.

    `cluster` is the settings (their bootstrap servers and security) or a bootstrap address.
    `connect_timeout` (default `timeout`) bounds the wait for the cluster's first answer.
    """
    wanted = sorted(set(names))
    if not wanted:
        return []
    conf = _admin_config(cluster)
    bootstrap = str(conf["bootstrap.servers"])
    admin = kafka_admin.AdminClient(conf)
    first = connect_timeout if connect_timeout is not None else timeout
    metadata = wait_for_metadata(admin, watch_of(conf), bootstrap, first)
    deadline = time.monotonic() + timeout
    existing = set(metadata.topics)
    missing = [name for name in wanted if name not in existing]
    if missing:
        new_topics = [
            kafka_admin.NewTopic(  # type: ignore[attr-defined]
                name, num_partitions=partitions, replication_factor=replication_factor
            )
            for name in missing
        ]
        futures = admin.create_topics(
            new_topics, operation_timeout=timeout, request_timeout=timeout
        )
        for future in futures.values():
            # `exception()` rather than `result()`: a raised error's traceback would hold this
            # frame, and with it the client and its broker connection, until a GC cycle.
            error = future.exception(timeout=max(0.1, deadline - time.monotonic()))
            if error is None:
                continue
            if not (
                isinstance(error, KafkaException)
                and error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
            ):
                raise error
    _wait_until_visible(admin, wanted, set(missing), partitions, deadline, timeout)
    return missing


def _wait_until_visible(
    admin: Any,
    wanted: list[str],
    created: set[str],
    partitions: int,
    deadline: float,
    timeout: float,
) -> None:
    """Poll the metadata until every wanted topic is there, those created here with all their
    partitions; raise `TopicsNotReady` at the deadline."""
    not_seen: list[str] = wanted
    while True:
        try:
            metadata = admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        except KafkaException:
            pass
        else:
            not_seen = [
                name
                for name in wanted
                if name not in metadata.topics
                or metadata.topics[name].error is not None
                or (name in created and len(metadata.topics[name].partitions) < partitions)
            ]
            if not not_seen:
                return
        if time.monotonic() > deadline:
            raise TopicsNotReady(f"topics not visible in metadata after {timeout}s: {not_seen}")
        time.sleep(_POLL_INTERVAL)
