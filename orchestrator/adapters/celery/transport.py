"""kombu's Redis transport, with one guard: a channel whose connection is gone fails with a
connection error, never with an AttributeError.

When Redis vanishes, the worker's consumer closes its connection and reconnects. Two things can
then touch a channel of the old connection: closing it restores the messages it delivered but
did not acknowledge, and a task that ends afterwards acknowledges or rejects its message on it.
In kombu 5.7 both rebuild the channel's Redis client from a transport that is already detached
(`self.connection` or its `client` is None) and raise `AttributeError: 'NoneType' object has no
attribute 'hostname'` (or `'client'`). Celery takes that for an unrecoverable error: the worker's
main process shuts down, and sometimes hangs there, instead of carrying on as it does after any
connection error (seen in the `redis_restart_data_lost` fault scenario, one run in three).

Raising redis-py's `ConnectionError` there instead puts these paths on kombu's and Celery's own
handling of a lost connection. Nothing is lost by it: an unrestored or unacknowledged message
stays in Redis's unacked set and is restored after `visibility_timeout`, and a drain task that
never runs is re-driven from the inbox. Everything else is kombu's code, selected with Celery's
`broker_transport`.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

from orchestrator.observability.logs import get_logger

log = get_logger("orchestrator.celery")

TRANSPORT = f"{__name__}:Transport"


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is None or transport.client is None:
            log.warning("orchestrator_celery_channel_detached", channel=self.channel_id)
            raise RedisConnectionError("this channel's broker connection is closed")
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[no-untyped-call]
        return params


class Transport(kombu_redis.Transport):
    Channel = Channel
