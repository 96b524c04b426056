"""The Celery broker transport's guard, on a real Redis: a channel of a connection that is gone
(what the worker meets when Redis vanishes) fails with redis-py's connection error, which kombu
and Celery handle as a lost connection, and says so in a log line; a channel whose connection
is alive is left to kombu; and the Celery app runs on this transport."""

from __future__ import annotations

import contextlib
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest
from kombu import Connection, Exchange, Queue
from kombu.message import Message
from redis.exceptions import ConnectionError as RedisConnectionError
from structlog.testing import capture_logs

from orchestrator.adapters.celery.app import make_celery
from orchestrator.adapters.celery.transport import TRANSPORT, Channel, Transport
from orchestrator.settings import load_settings
from tests.support.env import clean_env
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


def test_a_detached_channel_fails_with_the_guards_connection_error(redis_url: str) -> None:
    """Without the guard kombu reads the detached transport and raises an AttributeError,
    which Celery takes for an unrecoverable error and stops the worker."""
    conn, messages = delivered_unacked(redis_url, TRANSPORT)
    channel = lose_the_connection(conn, messages)
    assert isinstance(channel, Channel)
    # What lets kombu and Celery handle the guard's error as a lost connection.
    assert issubclass(RedisConnectionError, Transport.connection_errors)

    # Closing restores the unacknowledged messages: a connection error, which kombu's
    # connection close (Celery's path on a lost connection) ignores.
    with capture_logs() as logs, pytest.raises(RedisConnectionError, match="connection is closed"):
        channel.close()
    assert channel.closed
    assert {(e["event"], e["log_level"], e["channel"]) for e in logs} == {
        ("orchestrator_celery_channel_detached", "warning", channel.channel_id)
    }
    conn.maybe_close_channel(channel)

    # A task ending afterwards acknowledges or rejects on the closed channel.
    with pytest.raises(RedisConnectionError):
        messages[0].ack()
    with pytest.raises(RedisConnectionError):
        messages[1].reject(requeue=False)


def test_a_live_channel_gets_kombus_connection_parameters(redis_url: str) -> None:
    conn, messages = delivered_unacked(redis_url, TRANSPORT, count=1)
    try:
        channel = messages[0].channel
        assert isinstance(channel, Channel)
        url = urlsplit(redis_url)
        with capture_logs() as logs:
            params = channel._connparams()
        assert (params["host"], params["port"], params["db"]) == (
            url.hostname,
            url.port,
            int(url.path.lstrip("/")),
        )
        assert logs == []
        messages[0].ack()
    finally:
        conn.release()


def test_the_celery_app_runs_on_the_guarded_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch)
    conn = make_celery(load_settings()).connection_for_write()
    try:
        assert conn.get_transport_cls() is Transport
        assert Transport.Channel is Channel
    finally:
        conn.release()
