"""Shared fixtures for the whole suite: Kafka, PostgreSQL and Redis for tests.

Kafka
    `kafka_bootstrap` (session): one embedded Tansu broker per test session (or the broker named
    by `TEST_KAFKA_BOOTSTRAP`, then nothing is started). Tests never share topics or consumer
    groups: `kafka_topics` gives unique topic names, `kafka_group_id` a unique group id. Topics
    are not deleted (Tansu keeps them in memory until the session's broker stops).

PostgreSQL
    The machine's shared server (`pg_admin_url`, `TEST_PG_ADMIN_URL` to override); it is never
    stopped or reconfigured. `template_database_url` (session) is one database holding the
    schema (`orchestrator.adapters.postgres.engine.create_schema(url)` when that function exists,
    else empty); `database_url` (function) is a fresh clone of it (`CREATE DATABASE ... TEMPLATE`,
    fast), dropped after the test. `fresh_database_url` (session) is the factory behind it, for
    tests that need more than one database. Every database is named `orch_test_*`.

Redis
    The shared server on 127.0.0.1:6379 (`TEST_REDIS_URL` to override). Each pytest process
    reserves one whole database number (15 down to 9; `TEST_REDIS_DB` forces one, and the caller
    then guarantees nobody else uses it) through a lock in db 0 (`REDIS_LOCK_KEY`, held with
    `orchestrator.devtools.redis_claim` as the demo holds its own), so concurrent test runs and
    xdist workers never share a database; a run that died frees its database when the lock's
    TTL runs out. `redis_url` (function) points at that database and FLUSHDB-es it before and
    after the test: everything a test writes there (Celery queues, kombu bindings, results,
    locks, markers) disappears, whatever its key names. Use `redis_url` as the Celery broker and
    result backend; stop any worker a test starts before the test ends. `redis_prefix` is a
    unique key prefix per test for code that namespaces its keys.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator

import pytest
import redis
import structlog
from sqlalchemy.engine import make_url

from orchestrator.adapters.kafka.topics import create_topics
from orchestrator.devtools.embedded import EmbeddedKafka
from orchestrator.devtools.redis_claim import RedisDatabaseClaim, with_redis_db
from tests.support.helpers import DATABASE_PREFIX, REDIS_LOCK_KEY, DatabaseFactory, unique_suffix

DEFAULT_PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
REDIS_DB_POOL = tuple(range(15, 8, -1))


# -- Kafka -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of the session's broker (embedded Tansu unless TEST_KAFKA_BOOTSTRAP)."""
    external = os.environ.get("TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    with EmbeddedKafka() as kafka:
        yield kafka.bootstrap


@pytest.fixture
def kafka_topics(kafka_bootstrap: str) -> Callable[..., dict[str, str]]:
    """`make_topics(*bases, partitions=1) -> {base: unique_name}`; creates the topics.

    Names are `<base>.<suffix>` with one suffix per test, so asking again for a base returns
    the same topic.
    """
    suffix = unique_suffix()

    def make_topics(*bases: str, partitions: int = 1) -> dict[str, str]:
        names = {base: f"{base}.{suffix}" for base in bases}
        create_topics(kafka_bootstrap, names.values(), partitions=partitions)
        return names

    return make_topics


@pytest.fixture
def kafka_group_id() -> str:
    """A consumer group id no other test uses."""
    return f"test-group-{unique_suffix()}"


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The shared server's maintenance database (trust auth). Never stop or reconfigure it."""
    return os.environ.get("TEST_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)


def _schema_hook() -> Callable[[str], object] | None:
    """`orchestrator.adapters.postgres.engine.create_schema` when that module and function exist.

    A missing module means "no schema yet"; a module that exists but fails to import is a bug
    and its error propagates.
    """
    try:
        spec = importlib.util.find_spec("orchestrator.adapters.postgres.engine")
    except ModuleNotFoundError:
        return None
    if spec is None:
        return None
    module = importlib.import_module("orchestrator.adapters.postgres.engine")
    hook = getattr(module, "create_schema", None)
    return hook if callable(hook) else None


@pytest.fixture(scope="session")
def template_database_url(pg_admin_url: str) -> Iterator[str]:
    """One database per session holding the schema; the source of every `database_url`."""
    factory = DatabaseFactory(pg_admin_url, template=None)
    try:
        url = factory.create_named(f"{DATABASE_PREFIX}tmpl_{unique_suffix()}")
        hook = _schema_hook()
        if hook is not None:
            hook(url)
        yield url
    finally:
        factory.close()


@pytest.fixture(scope="session")
def fresh_database_url(pg_admin_url: str, template_database_url: str) -> Iterator[DatabaseFactory]:
    """Factory: `fresh_database_url()` -> URL of a new clone of the template (or `empty=True`).

    Databases not dropped with `fresh_database_url.drop(url)` are dropped at session end.
    """
    template = make_url(template_database_url).database
    factory = DatabaseFactory(pg_admin_url, template=template)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def database_url(fresh_database_url: DatabaseFactory) -> Iterator[str]:
    """A database of this test only, with the schema; dropped (sessions ended) afterwards."""
    url = fresh_database_url()
    try:
        yield url
    finally:
        fresh_database_url.drop(url)


# -- Redis -----------------------------------------------------------------------------------


def _redis_base_url() -> str:
    return os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL)


def _redis_url_for(db: int) -> str:
    return with_redis_db(_redis_base_url(), db)


@pytest.fixture(scope="session")
def redis_db() -> Iterator[int]:
    """The Redis database number reserved for this pytest process."""
    forced = os.environ.get("TEST_REDIS_DB")
    if forced:
        yield int(forced)
        return
    claim = RedisDatabaseClaim(_redis_base_url(), REDIS_LOCK_KEY)
    db = claim.acquire(REDIS_DB_POOL)
    if db is None:
        pytest.fail(
            f"every test Redis database {REDIS_DB_POOL} is reserved by a running test "
            "process; set TEST_REDIS_DB to a database nobody uses"
        )
    try:
        yield db
    finally:
        claim.release()


@pytest.fixture
def redis_url(redis_db: int) -> Iterator[str]:
    """URL of this process's reserved Redis database, emptied before and after the test."""
    url = _redis_url_for(redis_db)
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        try:
            yield url
        finally:
            client.flushdb()
    finally:
        client.close()


@pytest.fixture
def redis_prefix(redis_url: str) -> str:
    """A key prefix no other test uses (its keys go with the FLUSHDB of `redis_url`)."""
    return f"test:{unique_suffix()}:"


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A test that runs a command in-process configures logging onto its captured stream,
    which pytest closes afterwards: give every test the logging the one before it found."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
