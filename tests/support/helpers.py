"""Helpers shared by the tests: waiting with deadlines (never fixed sleeps), test databases."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

T = TypeVar("T")

# Every database the tests create on the shared PostgreSQL server is named with this prefix.
DATABASE_PREFIX = "orch_test_"
# Lock keys (in Redis db 0) through which a pytest process reserves a whole Redis database.
REDIS_LOCK_KEY = "orchestrator-tests:redis-db-lock:{db}"
CLONE_TIMEOUT = 30.0


def unique_suffix(length: int = 12) -> str:
    """A random hex string for names no other test (or test run) uses."""
    return uuid.uuid4().hex[:length]


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `predicate` until it returns a truthy value, and return that value.

    Raises AssertionError naming `message` (a string, or a callable evaluated on timeout to
    describe the state at that moment) when `timeout` seconds pass first. Exceptions of the
    types in `ignore` count as "not yet" (the last one is reported on timeout); any other
    exception propagates at once. The predicate is always evaluated at least once, and once
    more after the deadline, so a slow final poll is not lost.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        expired = time.monotonic() >= deadline
        try:
            value = predicate()
        except ignore as exc:
            last_error = exc
        else:
            if value:
                return value
        if expired:
            description = message() if callable(message) else message
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {description}{detail}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def _quote(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"unexpected database name {name!r}")
    return f'"{name}"'


class DatabaseFactory:
    """Creates uniquely named databases on the shared server and drops them again."""

    def __init__(self, admin_url: str, template: str | None) -> None:
        self.admin_url = admin_url
        self.template = template
        self._engine: Engine = create_engine(
            admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )
        self._created: set[str] = set()
        self._lock = threading.Lock()

    def url_for(self, name: str) -> str:
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def __call__(self, *, empty: bool = False) -> str:
        """A new database: a clone of the template, or empty (`empty=True` or no template)."""
        name = f"{DATABASE_PREFIX}{unique_suffix()}"
        statement = f"CREATE DATABASE {_quote(name)}"
        if self.template is not None and not empty:
            statement += f" TEMPLATE {_quote(self.template)}"
        deadline = time.monotonic() + CLONE_TIMEOUT
        while True:
            if self.template is not None and not empty:
                # A template must have no sessions while it is copied; only ours can be there.
                self.terminate(self.template)
            try:
                with self._engine.connect() as conn:
                    conn.execute(text(statement))
                break
            except OperationalError as exc:
                # 55006 object_in_use: a session reached the template between the two steps.
                if getattr(exc.orig, "pgcode", None) != "55006" or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with self._lock:
            self._created.add(name)
        return self.url_for(name)

    def create_named(self, name: str) -> str:
        """An empty database with an explicit name (must start with the test prefix)."""
        if not name.startswith(DATABASE_PREFIX):
            raise ValueError(f"test databases are named {DATABASE_PREFIX}*")
        with self._engine.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {_quote(name)}"))
        with self._lock:
            self._created.add(name)
        return self.url_for(name)

    def terminate(self, name: str) -> None:
        """End the sessions connected to database `name` (and only those)."""
        with self._engine.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )

    def drop(self, url_or_name: str) -> None:
        name = make_url(url_or_name).database if "://" in url_or_name else url_or_name
        if not name or not name.startswith(DATABASE_PREFIX):
            raise ValueError(f"refusing to drop {name!r}: not a test database")
        self.terminate(name)
        with self._engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)"))
        with self._lock:
            self._created.discard(name)

    def exists(self, name: str) -> bool:
        with self._engine.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
        return found is not None

    def close(self) -> None:
        """Drop every database still registered, then release the connection pool."""
        try:
            for name in sorted(self._created):
                self.drop(name)
        finally:
            self._engine.dispose()
