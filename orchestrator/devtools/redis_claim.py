"""Holding a whole database of a shared Redis server while a tool uses it.

Celery's queue names are fixed, so two users of one Redis database would take each other's
tasks: the demo on a shared server and each pytest process therefore hold a database number of
their own. The claim is a redis-py `Lock` in database 0 (the name formatted with the number),
its token naming this host and process; a thread extends its TTL while the holder lives, so the
database of a holder that died is free again once the TTL has run out.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.exceptions import LockError
from redis.lock import Lock

__all__ = ["CLAIM_TTL_S", "RedisDatabaseClaim", "redis_db_of", "with_redis_db"]

CLAIM_TTL_S = 60.0
_DELETE_BATCH = 500


def with_redis_db(url: str, db: int) -> str:
    """`url` pointing at database `db` (path for TCP URLs, `?db=` for unix sockets)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "db"]
    if parts.scheme == "unix":
        query.append(("db", str(db)))
        return f"unix://{parts.netloc}{parts.path}?{urlencode(query)}"
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", urlencode(query), ""))


def redis_db_of(url: str) -> int:
    """The database number a Redis URL names (0 when it names none)."""
    parts = urlsplit(url)
    for key, value in parse_qsl(parts.query):
        if key == "db" and value.isdigit():
            return int(value)
    path = parts.path.strip("/")
    return int(path) if parts.scheme != "unix" and path.isdigit() else 0


class RedisDatabaseClaim:
    """One database number of the server at `base_url`, held under the lock `name` (a format
    string with `{db}`) until `release`."""

    def __init__(
        self, base_url: str, name: str, *, ttl_s: float = CLAIM_TTL_S, timeout_s: float = 3.0
    ) -> None:
        self.base_url = base_url
        self.name = name
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.db: int | None = None
        self.url: str | None = None
        self.lost = False  # the lock expired or was taken while it was held
        self._admin: redis.Redis | None = None
        self._lock: Lock | None = None
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def _client(self, db: int) -> redis.Redis:
        return redis.Redis.from_url(
            with_redis_db(self.base_url, db),
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
        )

    def acquire(self, candidates: Iterable[int], *, empty: bool = False) -> int | None:
        """Claim the first free database among `candidates` (with `empty`, the first that is
        also empty and exists on the server); its number, or None when none is free."""
        if self._lock is not None:
            raise RuntimeError("this claim already holds a database")
        admin = self._admin = self._client(0)
        for db in candidates:
            lock = Lock(admin, self.name.format(db=db), timeout=self.ttl_s, thread_local=False)
            if not lock.acquire(blocking=False, token=self.token):
                continue
            if empty and not self._is_empty(db):
                with contextlib.suppress(LockError):
                    lock.release()
                continue
            self._lock, self.db, self.url = lock, db, with_redis_db(self.base_url, db)
            self._keeper = threading.Thread(target=self._keep, name="redis-claim", daemon=True)
            self._keeper.start()
            return db
        admin.close()
        self._admin = None
        return None

    def _is_empty(self, db: int) -> bool:
        client = self._client(db)
        try:
            size: int = client.dbsize()  # type: ignore[assignment]
            return size == 0
        except redis.RedisError:  # e.g. "DB index is out of range" on a smaller server
            return False
        finally:
            client.close()

    def _keep(self) -> None:
        lock = self._lock
        while lock is not None and not self._stop.wait(self.ttl_s / 3):
            try:
                lock.extend(self.ttl_s, replace_ttl=True)
            except LockError:
                self.lost = True
                return
            except redis.RedisError:
                continue  # tried again at the next beat, well before the TTL runs out

    def release(self, *, delete_keys: bool = False) -> None:
        """Give the database back; with `delete_keys`, first delete every key in it, but only
        while it is still ours."""
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join(self.timeout_s + 1)
        lock, self._lock = self._lock, None
        admin, self._admin = self._admin, None
        try:
            if lock is not None:
                if delete_keys and self.db is not None and lock.owned():
                    self._delete_all(self.db)
                with contextlib.suppress(LockError):
                    lock.release()
        finally:
            if admin is not None:
                admin.close()

    def _delete_all(self, db: int) -> None:
        """SCAN and DEL in batches (FLUSHDB is often disabled on shared servers)."""
        client = self._client(db)
        try:
            batch: list[bytes] = []
            for key in client.scan_iter(match="*", count=_DELETE_BATCH):
                batch.append(key)
                if len(batch) >= _DELETE_BATCH:
                    client.delete(*batch)
                    batch.clear()
            if batch:
                client.delete(*batch)
        finally:
            client.close()
