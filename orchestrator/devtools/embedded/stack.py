"""Kafka, PostgreSQL and Redis started together, with the addresses the orchestrator reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from orchestrator.devtools.embedded.errors import EmbeddedServerError
from orchestrator.devtools.embedded.kafka import EmbeddedKafka
from orchestrator.devtools.embedded.postgres import EmbeddedPostgres
from orchestrator.devtools.embedded.redis import EmbeddedRedis
from orchestrator.devtools.embedded.server import (
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    EmbeddedServer,
)


@dataclass(frozen=True)
class EmbeddedEndpoints:
    """Where the embedded servers answer."""

    kafka_bootstrap_servers: str
    database_url: str
    redis_url: str

    def as_env(self) -> dict[str, str]:
        """The environment variables the orchestrator's processes read."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
        }


class EmbeddedStack:
    """Kafka, PostgreSQL and Redis together; stops every process it started on exit.

        with EmbeddedStack() as stack:
            env = stack.endpoints.as_env()

    The servers run in their own sessions, so a terminal's Ctrl-C reaches only the owner, whose
    `KeyboardInterrupt` then stops them through the context manager. A SIGTERM ends Python
    without running exit handlers: an owner that may receive one should turn it into
    `SystemExit` (`signal.signal(SIGTERM, ...)`) so the servers are stopped as well.
    """

    def __init__(
        self,
        *,
        database: str = "orchestrator",
        start_timeout: float = DEFAULT_START_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        self.kafka = EmbeddedKafka(start_timeout=start_timeout, stop_timeout=stop_timeout)
        self.postgres = EmbeddedPostgres(
            database=database, start_timeout=start_timeout, stop_timeout=stop_timeout
        )
        self.redis = EmbeddedRedis(start_timeout=start_timeout, stop_timeout=stop_timeout)
        self._endpoints: EmbeddedEndpoints | None = None

    @property
    def servers(self) -> Sequence[EmbeddedServer]:
        return (self.kafka, self.postgres, self.redis)

    @property
    def endpoints(self) -> EmbeddedEndpoints:
        if self._endpoints is None:
            raise EmbeddedServerError("embedded stack is not started")
        return self._endpoints

    @property
    def pids(self) -> list[int]:
        """PIDs of every running server process this stack started."""
        return [pid for server in self.servers for pid in server.pids]

    def start(self) -> EmbeddedEndpoints:
        """Start the three servers (idempotent); on any failure, stop those already started."""
        if self._endpoints is not None:
            return self._endpoints
        try:
            self._endpoints = EmbeddedEndpoints(
                kafka_bootstrap_servers=self.kafka.start(),
                database_url=self.postgres.start(),
                redis_url=self.redis.start(),
            )
        except BaseException:
            self.stop()
            raise
        return self._endpoints

    def stop(self) -> None:
        """Stop all three, in reverse order of start; each stop runs even if another fails."""
        self._endpoints = None
        errors: list[BaseException] = []
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise EmbeddedServerError(f"could not stop every embedded server: {errors}")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
