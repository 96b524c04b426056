"""The Celery broker transport on a real Redis: a channel of a connection that is gone (what the
worker meets when Redis vanishes) fails with the transport's connection error, which kombu and
Celery handle as a lost connection; kombu's own transport raises an AttributeError there, which
Celery takes for an unrecoverable error and stops the worker."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue
from kombu.message import Message
from kombu.transport import redis as kombu_redis

from orchestrator.adapters.celery.transport import TRANSPORT, Transport
from tests.support.helpers import unique_suffix, wait_for


def delivered_unacked(redis_url: str, transport: Any, count: int = 2) -> tuple[Any, list[Message]]:
    """A connection and `count` messages delivered on its channel, none acknowledged."""
    name = f"transport-test-{unique_suffix()}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)
    conn = Connection(redis_url, transport=transport)
    channel = conn.channel()
    producer = conn.Producer(channel)
    for n in range(count):
        producer.publish({"n": n}, exchange=queue.exchange, routing_key=name, declare=[queue])
    got: list[Message] = []
    consumer = conn.Consumer(queue, channel=channel, callbacks=[lambda _b, m: got.append(m)])
    consumer.consume()

    def delivered() -> bool:
        with contextlib.suppress(socket.timeout):
            conn.drain_events(timeout=0.2)
        return len(got) == count

    wait_for(delivered, timeout=10, message="the messages delivered")
    return conn, got


def lose_the_connection(conn: Any, messages: list[Message]) -> Any:
    """What the consumer's reconnection leaves behind: the channel's pool dropped and its
    transport detached from its client."""
    channel = messages[0].channel
    channel._pool = None
    conn.transport.client = None
    return channel


def test_a_detached_channel_fails_with_a_connection_error(redis_url: str) -> None:
    conn, messages = delivered_unacked(redis_url, TRANSPORT)
    channel = lose_the_connection(conn, messages)
    assert isinstance(channel.connection, Transport)
    errors = Transport.connection_errors

    # Closing restores the unacknowledged messages: a connection error, which kombu's
    # connection close (Celery's path on a lost connection) ignores.
    with pytest.raises(errors):
        channel.close()
    assert channel.closed
    conn.maybe_close_channel(channel)

    # A task ending afterwards acknowledges or rejects on the closed channel.
    with pytest.raises(errors):
        messages[0].ack()
    with pytest.raises(errors):
        messages[1].reject(requeue=False)


def test_kombus_own_transport_raises_attribute_errors_there(redis_url: str) -> None:
    """What the guard is for: if kombu stops raising these, the guard can go."""
    conn, messages = delivered_unacked(redis_url, kombu_redis.Transport)
    channel = lose_the_connection(conn, messages)
    with pytest.raises(AttributeError, match="hostname"):
        channel.close()
    with pytest.raises(AttributeError):
        messages[1].reject(requeue=False)
