"""Everything the orchestrator keeps in Redis: session locks, wake flags, done markers and the
relay request flags (the `SessionState` port). Redis is a fast path only; the database decides
whenever Redis forgot. Redis being unreachable is a `TransientError` for the callers.

Key names (all under the configured prefix):
  lock:session:<id>   redis-py Lock (random token, TTL, released only by its owner)
  wake:session:<id>   "a trigger arrived while the session was locked; look again"
  done:<topic>:<msg>  "this message's effects are committed" (written after the commit)
  relay:dirty         "outbox rows were committed since the relay last claimed"
  relay:queued        "a relay run is queued or running" (coalesces requests)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar, cast

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.lock import Lock

from orchestrator.core.errors import TransientError

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, redis.exceptions.BusyLoadingError)
# A queued drain task can be lost with a killed worker that had prefetched it (Redis hands it
# out again only after the visibility timeout); meanwhile its flag coalesces every new request
# away. A short flag bounds that stall, and a duplicate drain under load costs one empty claim.
DRAIN_REQUEST_TTL_S = 5


P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def translate_redis_errors() -> Iterator[None]:
    try:
        yield
    except REDIS_ERRORS as exc:
        raise TransientError(f"redis unavailable: {exc}") from exc


def _translated(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        with translate_redis_errors():
            return fn(*args, **kwargs)

    return call


class RedisSessionLock:
    """redis-py's `Lock` (random token, TTL, released only by its owner), never waiting."""

    def __init__(self, lock: Lock) -> None:
        self.lock = lock

    @_translated
    def acquire(self) -> bool:
        return bool(self.lock.acquire(blocking=False))

    @_translated
    def release(self) -> bool:
        """Release a lock we may have lost (TTL expiry, Redis restart); False if it was gone."""
        try:
            self.lock.release()
            return True
        except LockError:
            return False

    @_translated
    def extend(self) -> bool:
        try:
            return bool(self.lock.reacquire())
        except LockError:
            return False


def make_redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
    )


class RedisState:
    def __init__(
        self, client: redis.Redis, prefix: str, lock_ttl_s: float, done_ttl_s: int
    ) -> None:
        self.r = client
        self.prefix = prefix
        self.lock_ttl_s = lock_ttl_s
        self.done_ttl_s = done_ttl_s

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- session locks and wake-ups -----------------------------------------------------------

    def session_lock(self, session_id: str) -> RedisSessionLock:
        lock = self.r.lock(
            self._k("lock", "session", session_id),
            timeout=self.lock_ttl_s,
            blocking=False,
            thread_local=False,
        )
        return RedisSessionLock(cast(Lock, lock))

    @_translated
    def set_wake(self, session_id: str) -> None:
        self.r.set(self._k("wake", "session", session_id), 1, px=int(self.lock_ttl_s * 1000))

    @_translated
    def take_wake(self, session_id: str) -> bool:
        """Clear the wake flag; True if it was set."""
        return bool(self.r.delete(self._k("wake", "session", session_id)))

    @_translated
    def has_wake(self, session_id: str) -> bool:
        return bool(self.r.exists(self._k("wake", "session", session_id)))

    # -- done markers --------------------------------------------------------------------------

    def done_key(self, topic: str, message_id: str) -> str:
        return self._k("done", topic, message_id)

    @_translated
    def after_commit(self, done: Sequence[tuple[str, str]], relay: bool) -> bool:
        """Write done markers and, if outbox rows were written, raise the relay request.

        One round trip. Returns True when the caller must enqueue a relay run."""
        pipe = self.r.pipeline(transaction=False)
        for topic, message_id in done:
            pipe.set(self.done_key(topic, message_id), 1, ex=self.done_ttl_s)
        if relay:
            pipe.set(self._k("relay", "dirty"), 1)
            pipe.set(self._k("relay", "queued"), 1, nx=True, ex=30)
        results = pipe.execute()
        return bool(relay and results[-1])

    @_translated
    def done_among(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        if not keys:
            return set()
        values = cast(list[Any], self.r.mget([self.done_key(t, m) for t, m in keys]))
        return {k for k, v in zip(keys, values, strict=True) if v is not None}

    # -- drain request coalescing --------------------------------------------------------------

    @_translated
    def request_drain(self, queue: str) -> bool:
        """True if no drain task is queued on `queue` (the caller must queue one). The flag
        expires after `DRAIN_REQUEST_TTL_S`, so a request whose task was lost is asked for
        again."""
        key = self._k("drain", "queued", queue)
        return bool(self.r.set(key, 1, nx=True, ex=DRAIN_REQUEST_TTL_S))

    @_translated
    def start_drain(self, queue: str) -> None:
        self.r.delete(self._k("drain", "queued", queue))

    # -- relay request coalescing --------------------------------------------------------------

    @_translated
    def request_relay(self) -> bool:
        """Mark the outbox dirty; True if no run is queued (the caller must enqueue one)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.set(self._k("relay", "dirty"), 1)
        pipe.set(self._k("relay", "queued"), 1, nx=True, ex=30)
        return bool(pipe.execute()[-1])

    @_translated
    def clear_dirty(self) -> None:
        self.r.delete(self._k("relay", "dirty"))

    @_translated
    def is_dirty(self) -> bool:
        return bool(self.r.exists(self._k("relay", "dirty")))

    @_translated
    def finish_relay_run(self) -> bool:
        """Release the queued flag; True if a request arrived meanwhile and we took it over."""
        self.r.delete(self._k("relay", "queued"))
        return self.is_dirty() and bool(self.r.set(self._k("relay", "queued"), 1, nx=True, ex=30))

    @_translated
    def queue_length(self, queues: Sequence[str]) -> int:
        pipe = self.r.pipeline(transaction=False)
        for q in queues:
            pipe.llen(q)
        return int(sum(int(n) for n in pipe.execute()))


def ping(client: Any) -> bool:
    try:
        return bool(client.ping())
    except REDIS_ERRORS:
        return False
